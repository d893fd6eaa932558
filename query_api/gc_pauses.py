"""How long Python's cycle collector stops the API, by generation, for ``/metrics``.

A collection holds the GIL for as long as it walks the objects of its generations, and every
search in flight waits meanwhile. With 100k chunks indexed a full collection over what start-up
made took 200–650 ms, which is why the app freezes those objects once it has started (``app.py``);
this histogram shows whether pauses of that size come back.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

from prometheus_client import Histogram

__all__ = ["BUCKETS", "GC_PAUSE_METRIC", "GcPauses", "gc_pauses"]

GC_PAUSE_METRIC = "ragstream_api_gc_pause_seconds"
#: Upper bounds (seconds) of the histogram's buckets; the last, +Inf, is implied.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """Times every collection through ``gc.callbacks``; one per process (see ``gc_pauses``).

    ``histogram`` belongs to no registry: each app registers it in its own.
    """

    def __init__(self) -> None:
        self.histogram = Histogram(
            GC_PAUSE_METRIC,
            "Seconds the API's Python stopped for a garbage collection, by generation (2 = full)",
            ["generation"],
            buckets=BUCKETS,
            registry=None,
        )
        # Every generation is shown from the start, at 0, not from its first collection on.
        self._generations = [self.histogram.labels(str(generation)) for generation in range(3)]
        self._started: float | None = None

    def install(self) -> None:
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        # Collections never overlap (the collector runs holding the GIL and does not re-enter),
        # so one start time is enough. Observing takes the histogram's locks, which is safe here:
        # nothing the collector tracks is allocated while they are held, so no collection can
        # start inside them and call back in.
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:  # installed in the middle of a collection
            return
        seconds, self._started = time.perf_counter() - self._started, None
        self._generations[int(info["generation"])].observe(seconds)


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
