"""Chroma's HTTP server (``chroma run``), the only process that touches its persist directory."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from deploy._process import ManagedProcess

__all__ = ["ChromaServer"]


class ChromaServer:
    """A ``chroma run`` server on 127.0.0.1 with its data in ``state_dir/chroma-<port>/``."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.port = port
        self.home = Path(state_dir) / f"chroma-{port}"
        self.data_dir = self.home / "data"
        # The CLI installed with the chromadb package, in the same environment as this interpreter.
        chroma = Path(sys.executable).parent / "chroma"
        self._process = ManagedProcess(
            f"chroma server on port {port}",
            [str(chroma), "run", "--path", str(self.data_dir), "--host", "127.0.0.1", "--port", str(port)],
            log_file=self.home / "chroma.log",
            pid_file=self.home / "chroma.pid",
            env={"ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (unless it runs already) and wait until its heartbeat answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process.start()
        self._process.wait_until(self._heartbeat, timeout, f"Chroma server at {self.url}")

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down (SIGTERM), killing it if it takes longer than `timeout`."""
        self._process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        self._process.kill()

    def _heartbeat(self) -> bool:
        # Chroma 1.x serves /api/v2 and answers 410 on /api/v1; older servers only know v1.
        for path in ("/api/v2/heartbeat", "/api/v1/heartbeat"):
            response = httpx.get(self.url + path, timeout=2.0, trust_env=False)
            if response.status_code == 200:
                return True
        return False
