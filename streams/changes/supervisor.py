"""Keeps the stage workers running: ``ragstream streams`` starts them and starts each again when it exits.

A worker (``ragstream streams --worker``, the faust app) exits on its own when its watchdog finds
a partition without progress, and may crash like any process. Replaying from the committed offsets
is always safe for this stage (at-least-once, idempotent output), so the supervisor simply starts
it again, with a capped backoff per worker so that one that cannot start (broker away) does not
spin. Before that it calls ``on_exit`` with the worker's index (the stage removes it from its
consumer group there, so that the other workers take its partitions over at once).
SIGTERM or SIGINT stop every worker and then the supervisor.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from schemas import Settings
from streams.changes.membership import instance_id, remove_static_member_or_log
from streams.changes.stage import FAILED_EXIT_CODE, STALLED_EXIT_CODE

log = logging.getLogger(__name__)

__all__ = ["supervise", "supervise_stage"]

#: A worker that ran this long before exiting starts again after the shortest backoff.
HEALTHY_RUN_S = 60.0
BACKOFF_S = 1.0
BACKOFF_MAX_S = 30.0
#: How long the workers asked to stop may take before they are killed.
STOP_TIMEOUT_S = 30.0
#: How often the workers are checked: a worker's exit is acted on within this.
POLL_S = 0.1
#: While another worker runs, a dead one is started again no sooner than this: its join is a
#: second rebalance, and one that lands while the others still recover its partitions' table from
#: the changelog crashes faust's recovery (it seeks standby partitions to an offset of None).
TAKEOVER_S = 5.0


_EXIT_REASONS = {
    STALLED_EXIT_CODE: "it found a partition without progress",
    FAILED_EXIT_CODE: "an event could not be handled",
}


@dataclass
class _Worker:
    """One supervised worker: its command, its process while it runs, and when to start it next."""

    index: int
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    start_at: float = 0.0
    backoff: float = field(default=BACKOFF_S)

    def start(self) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.command)
        log.info("stage worker %d started (pid %d)", self.index, self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self, others_run: bool) -> int | None:
        """Its exit status once it has exited (then it is no longer running), else None."""
        if self.process is None or (code := self.process.poll()) is None:
            return None
        pid, self.process = self.process.pid, None
        now = time.monotonic()
        if now - self.started >= HEALTHY_RUN_S:
            self.backoff = BACKOFF_S
        delay = max(self.backoff, TAKEOVER_S) if others_run else self.backoff
        self.start_at = now + delay
        log.warning(
            "stage worker %d (pid %d) stopped with status %d: %s; starting it again in %.0f s",
            self.index, pid, code, _EXIT_REASONS.get(code, "it exited"), delay,
        )  # fmt: skip
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
        return code


def supervise_stage(settings: Settings) -> int:
    """Run ``settings.stage_workers`` stage workers (``ragstream streams --worker I``) until SIGTERM
    or SIGINT; a worker that exits leaves the group at once and is started again. Returns 0."""
    group = settings.streams_app_id

    def leave_group(index: int) -> None:
        remove_static_member_or_log(settings.kafka, group, instance_id(group, index))

    commands = [
        [sys.executable, "-m", "ragstream", "streams", "--worker", str(index)]
        for index in range(settings.stage_workers)
    ]
    return supervise(commands, on_exit=leave_group)


def supervise(worker_commands: Sequence[Sequence[str]], on_exit: Callable[[int], None] | None = None) -> int:
    """Run each of ``worker_commands`` until SIGTERM or SIGINT, restarting each whenever it exits,
    after ``on_exit(its index)``; returns 0."""
    stopping = False
    workers = [_Worker(index, list(command)) for index, command in enumerate(worker_commands)]

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for worker in workers:
            if stopping:
                break
            if worker.process is None and time.monotonic() >= worker.start_at:
                worker.start()
            elif worker.exited(any(other.running for other in workers)) is not None and on_exit:
                on_exit(worker.index)
        time.sleep(POLL_S)
    _stop_all(workers, on_exit)
    return 0


def _stop_all(workers: list[_Worker], on_exit: Callable[[int], None] | None) -> None:
    """SIGTERM the workers, and kill those still running after STOP_TIMEOUT_S."""
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for worker in workers:
        if worker.process is None:
            continue
        try:
            worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # faust's graceful shutdown can wait forever on a broker that is gone.
            log.warning("stage worker %d did not stop in %.0f s; killing it", worker.index, STOP_TIMEOUT_S)
            worker.process.kill()
            worker.process.wait()
        if on_exit is not None:
            on_exit(worker.index)
