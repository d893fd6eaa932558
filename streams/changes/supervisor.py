"""Keeps one stage worker running: ``ragstream streams`` starts it and starts it again when it exits.

The worker (``ragstream streams --worker``, the faust app) exits on its own when its watchdog finds
a partition without progress, and may crash like any process. Replaying from the committed offsets
is always safe for this stage (at-least-once, idempotent output), so the supervisor simply starts
it again, with a capped backoff so that a worker that cannot start (broker away) does not spin.
SIGTERM or SIGINT stop the worker and then the supervisor.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from types import FrameType

from streams.changes.stage import FAILED_EXIT_CODE, STALLED_EXIT_CODE

log = logging.getLogger(__name__)

__all__ = ["supervise"]

#: A worker that ran this long before exiting starts again after the shortest backoff.
HEALTHY_RUN_S = 60.0
BACKOFF_S = 1.0
BACKOFF_MAX_S = 30.0
#: How long a worker asked to stop may take before it is killed.
STOP_TIMEOUT_S = 30.0


_EXIT_REASONS = {
    STALLED_EXIT_CODE: "it found a partition without progress",
    FAILED_EXIT_CODE: "an event could not be handled",
}


def supervise(worker_command: Sequence[str]) -> int:
    """Run ``worker_command`` until SIGTERM or SIGINT, restarting it whenever it exits; returns 0."""
    stopping = False
    worker: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = BACKOFF_S
    while not stopping:
        started = time.monotonic()
        worker = subprocess.Popen(list(worker_command))
        log.info("stage worker started (pid %d)", worker.pid)
        code = _wait(worker, lambda: stopping)
        if code is None:
            break
        if time.monotonic() - started >= HEALTHY_RUN_S:
            backoff = BACKOFF_S
        reason = _EXIT_REASONS.get(code, "it exited")
        log.warning(
            "stage worker (pid %d) stopped with status %d: %s; starting it again in %.0f s",
            worker.pid,
            code,
            reason,
            backoff,
        )
        _sleep_unless(lambda: stopping, backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)
    if worker is not None and worker.poll() is None:
        try:
            worker.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # faust's graceful shutdown can wait forever on a broker that is gone.
            log.warning("stage worker did not stop in %.0f s; killing it", STOP_TIMEOUT_S)
            worker.kill()
            worker.wait()
    return 0


def _wait(worker: subprocess.Popen[bytes], stopping: Callable[[], bool]) -> int | None:
    """The worker's exit status, or None as soon as a stop is requested."""
    while not stopping():
        try:
            return worker.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
    return None


def _sleep_unless(stopped: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopped():
        time.sleep(0.1)
