"""The query bench reads the API's garbage collection pauses from the text /metrics serves."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from bench._query_gc import gc_delta, gc_totals
from query_api.gc_pauses import GcPauses


def _pause(pauses: GcPauses, generation: int, seconds: float) -> None:
    pauses._observe("start", {"generation": generation})
    pauses._started = time.perf_counter() - seconds  # as if it had started that long ago
    pauses._observe("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


def _metrics_text(pauses: GcPauses) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(pauses.histogram)
    return generate_latest(registry).decode()


def test_full_collections_long_pauses_and_the_time_paused_over_a_phase() -> None:
    pauses = GcPauses()
    _pause(pauses, 0, 0.0005)
    before = gc_totals(_metrics_text(pauses))
    _pause(pauses, 2, 0.3)  # a full collection a search notices
    _pause(pauses, 1, 0.12)
    _pause(pauses, 2, 0.004)
    _pause(pauses, 0, 0.0004)

    phase = gc_delta(before, gc_totals(_metrics_text(pauses)))

    assert phase["full"] == 2
    assert phase["long"] == 2
    assert 0.424 <= phase["seconds"] < 0.45


def test_text_without_the_family_reads_as_no_pauses() -> None:
    assert gc_totals("# HELP other x\n# TYPE other counter\nother_total 3.0\n") == {
        "full": 0.0,
        "seconds": 0.0,
        "long": 0.0,
    }
