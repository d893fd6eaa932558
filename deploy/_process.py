"""Detached service processes: start, find again from a pid file, wait until ready, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from deploy.ports import free_port

__all__ = ["DeployError", "ManagedProcess", "ServiceStartError", "free_port", "tail"]

#: What a service that is not listening yet makes a readiness check raise: a refused or reset
#: connection, a timeout, an HTTP request that fails.
NOT_LISTENING_YET: tuple[type[Exception], ...] = (OSError, httpx.HTTPError)


class DeployError(Exception):
    """Root of the errors raised while running the local stack."""


class ServiceStartError(DeployError):
    """A service did not come up; carries what was awaited and the end of its logs."""

    def __init__(self, what: str, reason: str, log_tail: str = "") -> None:
        self.what = what
        self.reason = reason
        self.log_tail = log_tail
        message = f"{what}: {reason}"
        if log_tail:
            message += f"\n--- log tail ---\n{log_tail}"
        super().__init__(message)


def tail(path: Path, lines: int = 40) -> str:
    """Return the last lines of a text file, or "" when it does not exist."""
    try:
        with path.open("rb") as f:
            # Logs can grow large; the end is all an error message needs.
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0) until its parent reaps it. Its main thread turns zombie
    # before the other threads finish exiting (and release its ports), so wait for those too.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] == "Z":
            return len(os.listdir(f"/proc/{pid}/task")) > 1
    return True


class ManagedProcess:
    """A command run detached in its own session, with its output in a log file and its pid on disk.

    The pid file lets another process (``make down`` in a second shell) find and stop it.
    Signals go to the whole process group, so children the command spawns stop with it.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_file: Path,
        pid_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        extra_logs: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_file = log_file
        self.pid_file = pid_file
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.extra_logs = list(extra_logs)
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running process (ours or one found in the pid file), else None."""
        if self._popen is not None:
            return self._popen.pid if self._popen.poll() is None else None
        pid = self._pid_from_file()
        return pid if pid is not None and _alive(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self) -> None:
        """Start the command, unless it already runs (here or per the pid file)."""
        if self.is_running():
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.env is not None else None
        with self.log_file.open("ab") as log:
            try:
                self._popen = subprocess.Popen(
                    self.args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=env,
                    # Own session: Ctrl-C in the caller's terminal does not reach it, and its
                    # process group can be signalled as a whole.
                    start_new_session=True,
                )
            except OSError as exc:
                raise ServiceStartError(self.name, f"cannot run {self.args[0]}: {exc}") from exc
        self.pid_file.write_text(f"{self._popen.pid}\n")

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the process to exit (SIGTERM), then SIGKILL it after `timeout` seconds."""
        self._signal_and_wait(signal.SIGTERM, timeout)
        self._signal_and_wait(signal.SIGKILL, 10.0)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the process at once, as a crash would."""
        self._signal_and_wait(signal.SIGKILL, 10.0)
        self._forget()

    def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        what: str,
        not_yet: tuple[type[Exception], ...] = NOT_LISTENING_YET,
    ) -> None:
        """Poll `predicate` until it returns True; raise ServiceStartError on timeout or early exit.

        An exception of the `not_yet` kinds from the predicate counts as "not yet" and is reported
        if time runs out; any other is raised.
        """
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                if predicate():
                    return
            except not_yet as exc:
                last_error = f" (last attempt: {type(exc).__name__}: {exc})"
            if not self.is_running():
                code = self._popen.returncode if self._popen is not None else None
                raise ServiceStartError(what, f"{self.name} exited with code {code}", self.log_tail())
            if time.monotonic() >= deadline:
                reason = f"not ready after {timeout:.0f} s{last_error}"
                raise ServiceStartError(what, reason, self.log_tail())
            time.sleep(0.5)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the output log and of any extra logs, for error messages."""
        parts = []
        for path in [self.log_file, *self.extra_logs]:
            text = tail(path, lines)
            if text:
                parts.append(f"[{path}]\n{text}")
        return "\n".join(parts)

    def _pid_from_file(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # We start every process as a session leader; anything else is a recycled pid.
        try:
            return pid if os.getsid(pid) == pid else None
        except ProcessLookupError:
            return None

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)
            return
        # Not our child: it can only be polled.
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _forget(self) -> None:
        if self.is_running():
            raise DeployError(f"{self.name} (pid {self.pid}) did not exit")
        self.pid_file.unlink(missing_ok=True)
