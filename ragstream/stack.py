"""The whole system on one machine: broker, Chroma, consumers and API as background processes.

``ragstream up`` starts what is not running yet; ``ragstream down`` stops all of it, also from
another shell, through the pid files under the state folder.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from deploy import ChromaServer, KafkaBroker, ensure_kafka_jars
from deploy._process import ManagedProcess
from schemas import Settings


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@dataclass
class LocalStack:
    settings: Settings
    consumers: int = 1

    @property
    def state(self) -> Path:
        return self.settings.state_dir.resolve()

    def broker(self) -> KafkaBroker:
        return KafkaBroker(self.state, _port_of(self.settings.bootstrap_servers.split(",")[0]))

    def chroma(self) -> ChromaServer:
        return ChromaServer(self.state, self.settings.chroma_port)

    def _ragstream(self, name: str, *args: str) -> ManagedProcess:
        return ManagedProcess(
            name,
            [sys.executable, "-m", "ragstream", *args],
            log_file=self.state / "logs" / f"{name}.log",
            pid_file=self.state / "pids" / f"{name}.pid",
        )

    def consumer_process(self) -> ManagedProcess:
        return self._ragstream("consumers", "consume", "--consumers", str(self.consumers))

    def api_process(self) -> ManagedProcess:
        return self._ragstream("api", "serve")

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def start_services(self) -> None:
        """Kafka and Chroma: the parts everything else talks to."""
        ensure_kafka_jars()
        self.broker().start()
        self.chroma().start()

    def start_workers(self, timeout: float = 300) -> None:
        """Consumers and the API; returns once the API says it is ready."""
        consumers, api = self.consumer_process(), self.api_process()
        consumers.start()
        api.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not api.is_running():
                raise RuntimeError(f"the API exited; its log ends with:\n{api.log_tail()}")
            if not consumers.is_running():
                raise RuntimeError(f"the consumers exited; their log ends with:\n{consumers.log_tail()}")
            try:
                if httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"the API at {self.api_url} was not ready after {timeout:.0f}s; see {api.log_file}"
        )

    def stop_all(self) -> list[str]:
        """Stop in reverse order of start; returns what was running."""
        stopped = []
        parts: list[tuple[str, ManagedProcess | KafkaBroker | ChromaServer]] = [
            ("API", self.api_process()),
            ("consumers", self.consumer_process()),
            ("Chroma", self.chroma()),
            ("Kafka", self.broker()),
        ]
        for name, part in parts:
            if part.pid is not None:
                part.stop()
                stopped.append(name)
        return stopped
