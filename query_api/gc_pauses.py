"""How long Python's cycle collector stops the API, by generation, for ``/metrics``.

A collection holds the GIL for as long as it walks the objects of its generations, and every
search in flight waits meanwhile. With 100k chunks indexed a full collection over what start-up
made took 200–650 ms, which is why the app freezes those objects once it has started (``app.py``);
this histogram shows whether pauses of that size come back.
"""

from __future__ import annotations

import bisect
import gc
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["BUCKETS", "GcPauses", "PauseHistogram", "gc_pauses"]

#: Upper bounds (seconds) of the histogram's buckets; the last, +Inf, is implied.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class PauseHistogram:
    """Cumulative counts per bound of ``BUCKETS``, then the count of all, and their sum."""

    cumulative: tuple[int, ...]
    count: int
    sum_seconds: float


class GcPauses:
    """Times every collection through ``gc.callbacks``; one per process (see ``gc_pauses``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {generation: [0] * (len(BUCKETS) + 1) for generation in range(3)}
        self._sums = dict.fromkeys(range(3), 0.0)
        self._started: float | None = None

    def install(self) -> None:
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        # Collections never overlap (the collector runs holding the GIL and does not re-enter),
        # so one start time is enough.
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:  # installed in the middle of a collection
            return
        seconds, self._started = time.perf_counter() - self._started, None
        generation = int(info["generation"])
        with self._lock:
            self._counts[generation][bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sums[generation] += seconds

    def histograms(self) -> dict[int, PauseHistogram]:
        with self._lock:
            result = {}
            for generation, counts in self._counts.items():
                running, cumulative = 0, []
                for count in counts[:-1]:
                    running += count
                    cumulative.append(running)
                result[generation] = PauseHistogram(tuple(cumulative), sum(counts), self._sums[generation])
            return result


_installed: GcPauses | None = None
_install_lock = threading.Lock()


def gc_pauses() -> GcPauses:
    """The process's recorder, installed on first use: the collector is the process's, not an app's."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = GcPauses()
            _installed.install()
        return _installed
