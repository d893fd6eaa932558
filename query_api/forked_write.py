"""Writing a large in-memory structure from a forked child, as Redis saves its data set.

hnswlib writes a graph holding the GIL from the first byte to the last: at a million chunks,
seconds (longer while the page cache is full) during which no search of the replica runs. A
child forked at the right moment sees the parent's memory exactly as it was then, copy-on-write,
and writes it while the parent goes on serving and applying changes; the parent only waits for
its exit status, which releases the GIL.

The child runs nothing but the write: no logging, no imports, no threads (a lock another thread
of the parent held at the fork stays held in the child forever), and it ends with ``os._exit``,
so that none of the parent's exit handlers runs twice. It dies with the thread that forked it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import threading
import time
from collections.abc import Callable

__all__ = ["ForkedWrite", "write_in_child"]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
#: How often a wait looks at its stop event.
_POLL_S = 0.1


class ForkedWrite:
    """A write running in child process ``pid``."""

    def __init__(self, pid: int, what: str) -> None:
        self.pid = pid
        self.what = what
        self._status: int | None = None

    def wait(self, stop: threading.Event | None = None) -> None:
        """Until the child has ended; raises OSError if it failed, InterruptedError (after
        killing it) if ``stop`` is set first."""
        while self._status is None:
            if stop is not None and stop.is_set():
                self.kill()
                raise InterruptedError(f"stopped while writing {self.what}")
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(_POLL_S)
        if self._status != 0:
            how = f"signal {-self._status}" if self._status < 0 else f"status {self._status}"
            raise OSError(f"the process writing {self.what} ended with {how}")

    def kill(self) -> None:
        """End the child if it still runs, and reap it."""
        if self._status is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        self._status = os.waitstatus_to_exitcode(status)


def write_in_child(write: Callable[[], None], what: str) -> ForkedWrite:
    """Fork; the child calls ``write`` on the memory as it is now and exits (status 0 when
    ``write`` returned, 1 when it raised: the reason goes to the child's stderr). The caller
    holds whatever keeps that memory consistent for the instant of the fork only."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        _run_child(write, what, parent)
    return ForkedWrite(pid, what)


def _run_child(write: Callable[[], None], what: str, parent: int) -> None:
    code = 1
    try:
        # A collection would touch every object's header and copy the parent's whole heap.
        gc.disable()
        # Not left writing when the replica is gone (Linux: when the forking thread ends).
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == parent:
            write()
            code = 0
    except BaseException as exc:  # noqa: BLE001 - whatever it was, the child must not go on
        os.write(2, f"ragstream: could not write {what}: {exc!r}\n".encode(errors="replace"))
    finally:
        os._exit(code)
