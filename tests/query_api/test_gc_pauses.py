"""The API's garbage collection pauses, timed per generation, as /metrics reports them."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from query_api.gc_pauses import BUCKETS, GcPauses, gc_pauses
from query_api.metrics import GcPauseCollector


@pytest.fixture(autouse=True)
def only_the_collections_asked_for() -> Iterator[None]:
    # An automatic collection between two readings would be counted too.
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _cycles(count: int) -> None:
    for _ in range(count):
        node: dict[str, object] = {}
        node["self"] = node  # freed only by the cycle collector


def test_a_full_collection_is_counted_under_generation_2_with_its_time() -> None:
    pauses = GcPauses()
    pauses.install()
    try:
        before = pauses.histograms()[2]
        _cycles(50_000)
        gc.collect()
        after = pauses.histograms()[2]
    finally:
        gc.callbacks.remove(pauses._observe)

    assert after.count == before.count + 1
    assert after.sum_seconds > before.sum_seconds
    # Cumulative buckets: never decreasing, and the last bound holds all but pauses over 1 s.
    assert list(after.cumulative) == sorted(after.cumulative)
    assert after.cumulative[-1] <= after.count
    assert len(after.cumulative) == len(BUCKETS)


def test_the_recorder_is_installed_once_per_process() -> None:
    first, second = gc_pauses(), gc_pauses()

    assert first is second
    assert gc.callbacks.count(first._observe) == 1


def test_metrics_show_each_generation_as_a_prometheus_histogram() -> None:
    pauses = gc_pauses()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GcPauseCollector(pauses))
    gc.collect()

    lines = generate_latest(registry).decode().splitlines()

    assert "# TYPE ragstream_api_gc_pause_seconds histogram" in lines
    full = pauses.histograms()[2].count
    assert full >= 1
    assert f'ragstream_api_gc_pause_seconds_count{{generation="2"}} {float(full)}' in lines
    assert f'ragstream_api_gc_pause_seconds_bucket{{generation="2",le="+Inf"}} {float(full)}' in lines
    assert any(
        line.startswith('ragstream_api_gc_pause_seconds_bucket{generation="0",le="0.001"}') for line in lines
    )
