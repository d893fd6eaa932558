"""What the stats topic's messages become: counters summed over consumers, and each group's size."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, generate_latest

from consumers.controller import ScalingReport
from deploy import KafkaBroker
from query_api.prometheus_metrics import PipelineCollector
from query_api.stats import StatsTail
from schemas import Settings
from schemas.kafka_connection import KafkaConnection
from streams.topics import ensure_topics


def _tail_with(*messages: tuple[bytes, bytes]) -> StatsTail:
    tail = StatsTail(KafkaConnection("127.0.0.1:1"), "stats")
    for key, value in messages:
        tail.apply(key, value)
    return tail


def _report(group: str, desired: int, actual: int) -> tuple[bytes, bytes]:
    report = ScalingReport(group, desired, actual, members=desired, reason="lag 900", updated_at=1.0)
    return report.key, report.to_json()


def test_a_scaling_report_is_kept_per_group_and_counts_as_no_consumer() -> None:
    counters = orjson.dumps({"consumer_id": "a", "events_consumed": 7})

    tail = _tail_with(
        (b"a", counters), _report("indexer", 2, 1), _report("indexer", 2, 2), _report("v2", 1, 1)
    )

    assert {group: (s.desired, s.actual) for group, s in tail.scaling.items()} == {
        "indexer": (2, 2),
        "v2": (1, 1),
    }
    assert list(tail.consumers) == ["a"]
    assert tail.totals().events_consumed == 7


def test_a_malformed_scaling_report_is_skipped() -> None:
    bad = orjson.dumps({"kind": "consumer_scaling", "consumer_group": "indexer", "desired": -1, "actual": 0})

    tail = _tail_with(_report("indexer", 2, 1), (b"scaling/indexer", bad))

    assert tail.scaling["indexer"].desired == 2


def test_metrics_show_each_groups_desired_and_actual_consumer_actors() -> None:
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(PipelineCollector(_tail_with(_report("indexer", 2, 1))))

    lines = generate_latest(registry).decode().splitlines()

    assert "# TYPE ragstream_consumers_desired gauge" in lines
    assert 'ragstream_consumers_desired{consumer_group="indexer"} 2.0' in lines
    assert 'ragstream_consumers_actual{consumer_group="indexer"} 1.0' in lines


def _counters(consumer_id: str, events: int, updated_at: float) -> tuple[bytes, bytes]:
    message = {"consumer_id": consumer_id, "events_consumed": events, "updated_at": updated_at}
    return consumer_id.encode(), orjson.dumps(message)


def test_counters_read_again_after_a_reconnect_never_replace_newer_ones() -> None:
    # Reconnected, the tail reads the topic from its start again: "a" at 10 events, then at 30.
    tail = _tail_with(_counters("a", 10, 1.0), _counters("a", 30, 2.0), _counters("a", 10, 1.0))

    assert tail.totals().events_consumed == 30


def _consumed_total(tail: StatsTail) -> float | None:
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(PipelineCollector(tail))
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("ragstream_events_consumed_total "):
            return float(line.split()[1])
    return None


@pytest.mark.integration
async def test_metrics_show_no_counters_until_a_starting_replica_has_read_the_whole_stats_topic(
    kafka_broker: KafkaBroker,
) -> None:
    settings = Settings(bootstrap_servers=kafka_broker.bootstrap_servers).namespaced(
        f"stats-replay-{uuid.uuid4().hex[:6]}"
    )
    await ensure_topics(settings)
    # Many messages of a few consumers, each padded (readers ignore unknown fields): several
    # fetches to read, so a replica that reported while reading would show a partial sum.
    padding = "x" * 500
    async with AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20) as producer:
        for n in range(1, 2001):
            for consumer_id in ("a", "b", "c", "d", "e"):
                message = {"consumer_id": consumer_id, "events_consumed": n, "updated_at": n, "pad": padding}
                await producer.send(settings.stats_topic, orjson.dumps(message), key=consumer_id.encode())
        await producer.flush()

    # What scrapes every millisecond see, from the replica's start until the sum is complete.
    seen: list[float | None] = []
    async with StatsTail(settings.kafka, settings.stats_topic) as tail:
        deadline = time.monotonic() + 60
        while seen[-1:] != [5 * 2000] and time.monotonic() < deadline:
            seen.append(_consumed_total(tail))
            await asyncio.sleep(0.001)

    partial = sorted({total for total in seen if total is not None and total != 5 * 2000})
    assert not partial, f"scrapes saw sums short of the counters: {partial[:5]}"
    assert seen[0] is None, "the first scrape came after the whole replay: nothing was tested"
    assert seen[-1] == 5 * 2000
