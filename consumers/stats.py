"""Cumulative counters of one consumer, published to the stats topic after every batch (the record
is schemas.stats.ConsumerStats).

The query API sums the latest message of every consumer id into its ``/metrics``; a restarted
consumer gets a new id, so totals never go backwards: the stats topic is compacted, keeping each
id's last message, and the dead consumer's counts stay in the sum beside its successor's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import orjson
from aiokafka import ConsumerRecord

from consumers.batch_timings import BatchTimings
from consumers.indexer import BatchResult
from schemas.dead_letter import DeadLetter
from schemas.stats import BATCH_SECONDS_BUCKETS, FRESHNESS_SECONDS_BUCKETS
from streams.publish_time import published_at

__all__ = ["ConsumerCounters", "freshness_of"]


def _empty_buckets(bounds: Sequence[float]) -> dict[str, int]:
    return {**{str(b): 0 for b in bounds}, "+Inf": 0}


def _observe(buckets: dict[str, int], bounds: Sequence[float], value: float) -> None:
    """Count ``value`` in every cumulative bucket whose upper bound it does not pass."""
    for bound in bounds:
        if value <= bound:
            buckets[str(bound)] += 1
    buckets["+Inf"] += 1


def freshness_of(records: Iterable[ConsumerRecord], dead: Iterable[DeadLetter], now: float) -> list[float]:
    """Seconds from publication to ``now`` of each event of a batch that reached the index: not its
    dead letters, nor the changes topic's tombstones (no event), nor a record without a time.

    A publisher's clock ahead of ours would give a negative age: it counts as 0.
    """
    refused = {(letter.topic, letter.partition, letter.offset) for letter in dead}
    ages = []
    for record in records:
        if record.value is None or (record.topic, record.partition, record.offset) in refused:
            continue
        published = published_at(record)
        if published is not None:
            ages.append(max(now - published, 0.0))
    return ages


@dataclass
class ConsumerCounters:
    consumer_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    consumer_group: str = ""
    events_consumed: int = 0
    events_dead_lettered: int = 0
    chunks_embedded: int = 0
    chunks_skipped: int = 0
    chunks_deleted: int = 0
    batches: int = 0
    batch_seconds_sum: float = 0.0
    batch_seconds_buckets: dict[str, int] = field(
        default_factory=lambda: _empty_buckets(BATCH_SECONDS_BUCKETS)
    )
    #: Publication to commit, per event indexed (``freshness_of``).
    freshness_seconds_sum: float = 0.0
    freshness_seconds_buckets: dict[str, int] = field(
        default_factory=lambda: _empty_buckets(FRESHNESS_SECONDS_BUCKETS)
    )
    #: Wall seconds per part of the work, summed over every batch; a JSON object in the message.
    #: Readers that do not know the field ignore it (the query API's model drops extra keys).
    part_seconds: BatchTimings = field(default_factory=BatchTimings)
    updated_at: float = 0.0

    def record_batch(
        self,
        events: int,
        dead_lettered: int,
        result: BatchResult,
        seconds: float,
        timings: BatchTimings | None = None,
        freshness: Iterable[float] = (),
    ) -> None:
        """Add one committed batch: its counts, its duration, and the age of each event it indexed."""
        self.events_consumed += events
        self.events_dead_lettered += dead_lettered
        self.chunks_embedded += result.chunks_embedded
        self.chunks_skipped += result.chunks_skipped
        self.chunks_deleted += result.chunks_deleted
        self.batches += 1
        self.batch_seconds_sum += seconds
        _observe(self.batch_seconds_buckets, BATCH_SECONDS_BUCKETS, seconds)
        for age in freshness:
            self.freshness_seconds_sum += age
            _observe(self.freshness_seconds_buckets, FRESHNESS_SECONDS_BUCKETS, age)
        if timings is not None:
            self.part_seconds.accumulate(timings)
        self.updated_at = time.time()

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))
