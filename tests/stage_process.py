"""The changes stage as the system runs it: `python -m ragstream streams` in its own process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from schemas import Settings

REPO = Path(__file__).resolve().parents[1]


class StageProcess:
    """`python -m ragstream streams` with the test's settings in its environment: a supervisor and
    the faust workers it runs, in a process group of their own."""

    def __init__(self, settings: Settings, log_file: Path) -> None:
        self.settings = settings
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")}
        return env | self.settings.to_env()

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ragstream", "streams"],
                cwd=REPO,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the supervisor and its workers at once, as a crash of the machine's stage would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def worker_pids(self) -> dict[int, int]:
        """The faust workers the supervisor runs now: worker index → pid."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = {}
        for pid in map(int, children.read_text().split()):
            with contextlib.suppress(OSError):
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"--worker" in args:
                    pids[int(args[args.index(b"--worker") + 1])] = pid
        return pids

    def worker_pid(self, index: int = 0, other_than: int | None = None, timeout: float = 60) -> int:
        """The pid of worker ``index`` the supervisor runs now (once it is not ``other_than``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.worker_pids().get(index)
            if pid is not None and pid != other_than:
                return pid
            time.sleep(0.05)
        raise TimeoutError(f"the stage supervisor has started no (new) worker {index} in {timeout} s")

    def kill_worker(self, index: int = 0) -> int:
        """SIGKILL only faust worker ``index``, as a crash of it would; returns its pid."""
        pid = self.worker_pid(index)
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """SIGTERM, as `ragstream down` sends it; whatever of the group is left after 45 s is killed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=45)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def assert_running(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log_file.read_text()[-4000:]
