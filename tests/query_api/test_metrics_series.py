"""The series the alerts and the dashboard read, as ``/metrics`` formats them."""

from __future__ import annotations

import time

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from consumers.controller import ScalingReport
from consumers.indexer import BatchResult
from consumers.stats import ConsumerCounters
from query_api.prometheus_metrics import KafkaReadings, PipelineCollector, PipelineMetrics, ServedIndex
from query_api.stats import StatsTail
from schemas import Settings
from schemas.kafka_connection import KafkaConnection
from streams.hops import Hop, HopLag
from streams.lag import LagReader, PartitionLag


def _lines(collector: PipelineCollector) -> list[str]:
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(collector)
    return generate_latest(registry).decode().splitlines()


def _tail(*reports: ScalingReport) -> StatsTail:
    tail = StatsTail(KafkaConnection("127.0.0.1:1"), "stats")
    for report in reports:
        tail.apply(report.key, report.to_json())
    return tail


def test_committed_offsets_dead_letters_and_the_oldest_wait_are_exported_with_the_lag() -> None:
    collector = PipelineCollector(_tail())
    stage = Hop("changes stage", "docs.events", "ragstream-changes")
    collector.kafka = KafkaReadings(
        lag=[
            HopLag(
                stage, [PartitionLag("docs.events", 0, 40, 45, 5), PartitionLag("docs.events", 1, None, 3, 3)]
            )
        ],
        dead_letters=7,
        oldest_unindexed_age_s=1.5,
    )

    lines = _lines(collector)

    assert 'ragstream_consumer_lag{hop="changes stage",partition="0"} 5.0' in lines
    assert 'ragstream_consumer_committed_offset{hop="changes stage",partition="0"} 40.0' in lines
    # Nothing committed yet is no offset, not offset 0.
    assert not [
        line
        for line in lines
        if line.startswith('ragstream_consumer_committed_offset{hop="changes stage",partition="1"')
    ]
    assert "ragstream_dead_letters_total 7.0" in lines
    assert "ragstream_oldest_unindexed_age_seconds 1.5" in lines


def test_what_kafka_did_not_answer_is_left_out_rather_than_shown_as_zero() -> None:
    lines = _lines(PipelineCollector(_tail()))

    assert not [
        line for line in lines if line.startswith(("ragstream_dead_letters", "ragstream_oldest_unindexed"))
    ]


def test_the_consumer_ceiling_is_the_controllers_or_else_the_settings_within_the_partitions() -> None:
    settings = Settings(consumers_max=10, partitions=6)
    reported = ScalingReport("v2", 1, 1, 1, "lag 0", time.time())
    tail = _tail(ScalingReport(settings.consumer_group, 1, 1, 1, "lag 0", time.time()), reported)
    tail.apply(b"scaling/v2", reported.to_json().replace(b'"kind"', b'"maximum":2,"kind"'))

    lines = _lines(PipelineCollector(tail, settings))

    assert f'ragstream_consumers_max{{consumer_group="{settings.consumer_group}"}} 6.0' in lines
    assert 'ragstream_consumers_max{consumer_group="v2"} 2.0' in lines
    assert f"ragstream_api_replicas_desired {float(settings.api_replicas)}" in lines


async def test_search_latency_is_counted_per_mode_under_the_replicas_name() -> None:
    settings = Settings()
    metrics = PipelineMetrics(_tail(), LagReader(KafkaConnection("127.0.0.1:1")), settings, replica="r1")
    metrics.observe_search("lexical", 0.004)
    metrics.observe_search("hybrid", 0.2)

    text = (await metrics.render(["ragstream_search_seconds_count"])).decode()

    assert 'ragstream_search_seconds_count{mode="lexical",replica="r1"} 1.0' in text
    assert 'ragstream_search_seconds_count{mode="hybrid",replica="r1"} 1.0' in text


def _counters(
    consumer_id: str, group: str, ages: list[float], updated_at: float = 1.0
) -> tuple[bytes, bytes]:
    counters = ConsumerCounters(consumer_id=consumer_id, consumer_group=group)
    counters.record_batch(len(ages), 0, BatchResult(), 0.5, freshness=ages)
    message = orjson.loads(counters.to_json()) | {"updated_at": updated_at}
    return consumer_id.encode(), orjson.dumps(message)


def _tail_of(*messages: tuple[bytes, bytes]) -> StatsTail:
    tail = _tail()
    for key, value in messages:
        tail.apply(key, value)
    return tail


def test_freshness_is_one_histogram_per_consumer_group_summed_over_its_consumers() -> None:
    tail = _tail_of(
        _counters("a", "indexer", [0.2, 0.4]),
        _counters("b", "indexer", [1.2]),
        # Generation 1 being built replays old events.
        _counters("c", "indexer-g1", [3600.0]),
    )

    lines = _lines(PipelineCollector(tail))

    assert "# TYPE ragstream_freshness_seconds histogram" in lines
    assert 'ragstream_freshness_seconds_bucket{consumer_group="indexer",le="0.3"} 1.0' in lines
    assert 'ragstream_freshness_seconds_bucket{consumer_group="indexer",le="1.0"} 2.0' in lines
    assert 'ragstream_freshness_seconds_bucket{consumer_group="indexer",le="+Inf"} 3.0' in lines
    assert 'ragstream_freshness_seconds_count{consumer_group="indexer"} 3.0' in lines
    assert 'ragstream_freshness_seconds_sum{consumer_group="indexer"} 1.8' in lines
    assert 'ragstream_freshness_seconds_bucket{consumer_group="indexer-g1",le="60.0"} 0.0' in lines
    assert 'ragstream_freshness_seconds_count{consumer_group="indexer-g1"} 1.0' in lines


def test_a_restarted_consumer_adds_to_the_freshness_counts_instead_of_resetting_them() -> None:
    tail = _tail_of(_counters("before", "indexer", [0.2, 0.2, 0.2], updated_at=1.0))
    before = _lines(PipelineCollector(tail))
    # The consumer died; its successor starts from zero under a new id.
    tail.apply(*_counters("after", "indexer", [0.4], updated_at=2.0))

    after = _lines(PipelineCollector(tail))

    assert 'ragstream_freshness_seconds_count{consumer_group="indexer"} 3.0' in before
    assert 'ragstream_freshness_seconds_count{consumer_group="indexer"} 4.0' in after
    assert 'ragstream_freshness_seconds_bucket{consumer_group="indexer",le="0.3"} 3.0' in after


def test_consumers_that_predate_the_histogram_add_no_freshness_series() -> None:
    tail = _tail_of((b"old", orjson.dumps({"consumer_id": "old", "events_consumed": 5})))

    lines = _lines(PipelineCollector(tail))

    assert "ragstream_events_consumed_total 5.0" in lines
    assert not [line for line in lines if line.startswith("ragstream_freshness_seconds_")]


async def test_a_scrape_names_the_generation_and_consumer_group_it_was_served_from() -> None:
    metrics = PipelineMetrics(_tail(), LagReader(KafkaConnection("127.0.0.1:1")), Settings())

    served = (
        await metrics.render(["ragstream_serving_generation_info"], ServedIndex(2, "indexer-g2"))
    ).decode()
    unnamed = (await metrics.render(["ragstream_serving_generation_info"])).decode()

    assert 'ragstream_serving_generation_info{consumer_group="indexer-g2",generation="2"} 1.0' in served
    assert "ragstream_serving_generation_info{" not in unnamed
