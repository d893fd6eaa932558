"""The API's garbage collection pauses, timed per generation, as /metrics reports them."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from query_api.gc_pauses import BUCKETS, GcPauses, gc_pauses


@pytest.fixture(autouse=True)
def only_the_collections_asked_for() -> Iterator[None]:
    # An automatic collection between two readings would be counted too.
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class Scraped:
    """One generation's series as scraped: cumulative counts per bound (without +Inf), count, sum."""

    cumulative: list[float]
    count: float
    sum: float


def _full_collections(pauses: GcPauses) -> Scraped:
    """Generation 2's series."""
    samples = [
        sample
        for family in pauses.histogram.collect()
        for sample in family.samples
        if sample.labels.get("generation") == "2"
    ]
    return Scraped(
        cumulative=[s.value for s in samples if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"],
        count=next(s.value for s in samples if s.name.endswith("_count")),
        sum=next(s.value for s in samples if s.name.endswith("_sum")),
    )


def _cycles(count: int) -> None:
    for _ in range(count):
        node: dict[str, object] = {}
        node["self"] = node  # freed only by the cycle collector


def test_a_full_collection_is_counted_under_generation_2_with_its_time() -> None:
    pauses = GcPauses()
    pauses.install()
    try:
        before = _full_collections(pauses)
        _cycles(50_000)
        gc.collect()
        after = _full_collections(pauses)
    finally:
        gc.callbacks.remove(pauses._observe)

    assert after.count == before.count + 1
    assert after.sum > before.sum
    # Cumulative buckets: never decreasing, and the last bound holds all but pauses over 1 s.
    assert after.cumulative == sorted(after.cumulative)
    assert after.cumulative[-1] <= after.count
    assert len(after.cumulative) == len(BUCKETS)


def test_the_recorder_is_installed_once_per_process() -> None:
    first, second = gc_pauses(), gc_pauses()

    assert first is second
    assert gc.callbacks.count(first._observe) == 1


def test_metrics_show_each_generation_as_a_prometheus_histogram() -> None:
    pauses = gc_pauses()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(pauses.histogram)
    gc.collect()

    lines = generate_latest(registry).decode().splitlines()

    assert "# TYPE ragstream_api_gc_pause_seconds histogram" in lines
    full = _full_collections(pauses).count
    assert full >= 1
    assert f'ragstream_api_gc_pause_seconds_count{{generation="2"}} {full}' in lines
    assert f'ragstream_api_gc_pause_seconds_bucket{{generation="2",le="+Inf"}} {full}' in lines
    assert any(
        line.startswith('ragstream_api_gc_pause_seconds_bucket{generation="0",le="0.001"}') for line in lines
    )


def test_the_series_shown_before_any_collection_are_zero() -> None:
    pauses = GcPauses()  # not installed: it sees no collection

    lines = _text(pauses).splitlines()

    for generation in ("0", "1", "2"):
        assert f'ragstream_api_gc_pause_seconds_count{{generation="{generation}"}} 0.0' in lines


def _text(pauses: GcPauses) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(pauses.histogram)
    return generate_latest(registry).decode()
