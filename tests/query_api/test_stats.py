"""What the stats topic's messages become: counters summed over consumers, and each group's size."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from consumers.controller import ScalingReport
from query_api.prometheus_metrics import PipelineCollector
from query_api.stats import StatsTail
from schemas.kafka_connection import KafkaConnection


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
