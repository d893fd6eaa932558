"""The changes stage as the system runs it: `python -m ragstream streams` in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from schemas import Settings

REPO = Path(__file__).resolve().parents[1]


class StageProcess:
    """`python -m ragstream streams` with the test's settings in its environment."""

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
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def assert_running(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log_file.read_text()[-4000:]
