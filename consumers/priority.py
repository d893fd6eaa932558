"""Consumers yield the CPU to searches while there are searches, and take all of it otherwise.

Indexing is throughput work and searches are latency work. Where both share a machine, an
embedding batch must not make a search wait for the CPU; but with no search running, a consumer
at a low priority loses the CPU to everything else (the broker, Chroma, Ray's daemons) and
bulk ingestion slows down for nothing. So the priority follows the searches: low while the API
on this host served one in the last ``search_activity_window_s`` (``consumers/search_activity``),
full otherwise.

Going back to full priority is the hard part, because an unprivileged thread (RLIMIT_NICE 0)
can lower its nice value or enter SCHED_IDLE but never undo either. The ways considered:

- *The consumer's own session autogroup*, whose nice value can go both ways: under the kernel's
  session autogroups it is what weighs against the API's session. But it needs a session of the
  consumer's own, and a Ray worker is a process group leader, which cannot start one; embedding
  in a child process that can would copy every batch and its vectors across processes.
- *Fewer torch threads while searching*: the threads left still run at the searches' priority.
- *Two encoding lanes*, chosen here: one thread at full priority and one lowered for good (nice,
  and SCHED_IDLE under autogroups, where nice weighs only within a session), each encoding the
  batches that come while its state holds. torch's CPU kernels run on GNU OpenMP, whose worker
  pool belongs to the thread that starts the parallel region, and a new thread inherits its
  creator's nice value and policy: so each lane's OpenMP workers are born at the lane's
  priority (tests/consumers/test_priority.py checks it in /proc). A batch is sliced into pieces
  of ``batch_size`` so that the priority changes within a second of the searches starting or
  stopping, not after a whole fetch. The rest of the consumer (chunking, the diff, Kafka and
  Chroma calls) stays at full priority: a small share of its CPU next to embedding.

Measured on 2 cores (a process in a session of its own doing a 3 ms CPU burst 25 times a second,
beside continuous encodes switched between the lanes every 8 s, 3 rounds each): bursts took p50
4.2 ms either way and p99 20.7 ms (16–32) on the low lane against 20.2 ms (13–46) on the full
one, at 60 and 56 chunks/s. At that load the kernel already favours the sleeping searcher;
the low lane is insurance for loads that keep the API busy, and the full lane costs searches
nothing while it lets bulk ingestion take the CPU whenever no search runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from consumers.search_activity import SearchActivity

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchEncoder(Protocol):
    """What the consumer asks of its embedder (``engines.embedder.Embedder``)."""

    dimension: int
    batch_size: int
    precision: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def autogroups_enabled() -> bool:
    setting = Path("/proc/sys/kernel/sched_autogroup_enabled")
    try:
        return setting.read_text().strip() == "1"
    except OSError:
        return False


def lower_this_thread(niceness: int) -> None:
    """Run the calling thread, and every thread it starts from now on, at ``niceness``; where the
    kernel groups threads by session, SCHED_IDLE as well. Irreversible without privileges.

    Under session autogroups nice weighs a thread only against its own session's, and a Ray
    worker shares Ray's session, not the API's. SCHED_IDLE weighs across sessions: a waking
    search preempts such a thread at once, and the kernel places it on a CPU that runs only
    SCHED_IDLE threads as on an idle one.
    """
    if os.getpriority(os.PRIO_PROCESS, 0) < niceness:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    if autogroups_enabled():
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class EncodeLanes:
    """Two threads that run encodes: one at full priority, one at ``niceness`` for good."""

    def __init__(self, niceness: int) -> None:
        self._full = ThreadPoolExecutor(1, thread_name_prefix="embed-full")
        self._low = ThreadPoolExecutor(
            1, thread_name_prefix="embed-low", initializer=lower_this_thread, initargs=(niceness,)
        )

    def run(self, low: bool, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` on the low lane if ``low``, else on the full one; blocks until done."""
        return (self._low if low else self._full).submit(work, *args).result()

    def close(self) -> None:
        self._full.shutdown()
        self._low.shutdown()


class SearchYieldingEncoder:
    """An encoder that embeds at ``niceness`` while searches run on this host, at full priority
    otherwise; ``encode`` returns what the wrapped encoder's would."""

    def __init__(self, encoder: BatchEncoder, activity: SearchActivity, niceness: int) -> None:
        self._encoder = encoder
        self._activity = activity
        self._lanes = EncodeLanes(niceness)
        self._low = False
        self.dimension = encoder.dimension
        self.batch_size = encoder.batch_size
        self.precision = encoder.precision

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return self._encoder.encode(texts)
        # Longest first, as sentence-transformers orders a call's texts itself: each slice then
        # pads as it would have within one call, and the slices cost what the call did.
        order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            low = self._lane_is_low()
            vectors[rows] = self._lanes.run(low, self._encoder.encode, [texts[row] for row in rows])
        return vectors

    def _lane_is_low(self) -> bool:
        low = self._activity.searching()
        if low != self._low:
            self._low = low
            log.info(
                "embedding at %s priority: searches %s",
                "low" if low else "full",
                "running" if low else "stopped",
            )
        return low

    def close(self) -> None:
        self._lanes.close()
