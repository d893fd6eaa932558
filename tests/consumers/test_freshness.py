"""Each indexed event's age, publication to commit, counted into the consumer's stats message."""

from __future__ import annotations

import orjson
from aiokafka import ConsumerRecord

from consumers.indexer import BatchResult
from consumers.stats import ConsumerCounters, freshness_of
from schemas.dead_letter import DeadLetter
from schemas.stats import ConsumerStats
from streams.publish_time import published_at_header

NOW = 1_700_000_100.0


def _record(
    offset: int,
    *,
    stamped: float,
    value: bytes | None = b"{}",
    headers: tuple[tuple[str, bytes], ...] = (),
    topic: str = "docs.changes",
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, round(stamped * 1000), 0, b"doc", value, None, 3, 2, headers)


def test_a_change_is_aged_from_the_events_publication_that_the_stage_passed_on() -> None:
    # The stage wrote the change 0.1 s ago, for an event published 3 s ago.
    change = _record(0, stamped=NOW - 0.1, headers=(published_at_header(NOW - 3.0),))

    assert freshness_of([change], [], NOW) == [3.0]


def test_an_event_read_straight_from_the_events_topic_is_aged_from_its_own_time() -> None:
    event = _record(0, stamped=NOW - 0.25, topic="docs.events")

    assert freshness_of([event], [], NOW) == [0.25]


def test_dead_letters_and_tombstones_are_not_counted_as_indexed() -> None:
    indexed = _record(0, stamped=NOW - 1)
    refused = _record(1, stamped=NOW - 1)
    tombstone = _record(2, stamped=NOW - 1, value=None)
    letter = DeadLetter.for_record(refused, "too big", "EventRejected")

    assert freshness_of([indexed, refused, tombstone], [letter], NOW) == [1.0]


def test_a_publisher_clock_ahead_of_the_consumers_counts_as_no_wait() -> None:
    assert freshness_of([_record(0, stamped=NOW + 2)], [], NOW) == [0.0]


def test_every_indexed_event_lands_in_the_cumulative_buckets_of_the_stats_message() -> None:
    stats = ConsumerCounters(consumer_group="ragstream-indexer-g1")
    stats.record_batch(3, 0, BatchResult(), 1.0, freshness=[0.04, 0.8, 1.2])
    stats.record_batch(1, 0, BatchResult(), 1.0, freshness=[75.0])

    read = ConsumerStats.model_validate(orjson.loads(stats.to_json()))

    assert read.consumer_group == "ragstream-indexer-g1"
    buckets = read.freshness_seconds_buckets
    assert (buckets["0.05"], buckets["0.75"], buckets["1.0"], buckets["1.5"]) == (1, 1, 2, 3)
    assert (buckets["60.0"], buckets["+Inf"]) == (3, 4)
    assert abs(read.freshness_seconds_sum - 77.04) < 1e-9
