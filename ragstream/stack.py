"""The whole system on one machine: broker, Chroma, a Ray cluster, changes stage, consumers and API
as processes.

The consumers (``ragstream consume``) and the API's Serve replicas (``ragstream serve``) join one
Ray cluster, started here with ``ray start`` (``settings.ray_nodes`` raylets), through
``RAY_ADDRESS``. ``ragstream up`` starts what is not running yet; ``ragstream down`` stops all of
it, also from another shell, through the pid files under the state folder.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from deploy import ChromaServer, KafkaBroker, ensure_kafka_jars
from deploy._process import ManagedProcess
from deploy.ray_cluster import RayCluster
from schemas import Settings


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@dataclass
class LocalStack:
    settings: Settings
    consumers: int | None = None

    @property
    def state(self) -> Path:
        return self.settings.state_dir.resolve()

    def broker(self) -> KafkaBroker:
        return KafkaBroker(self.state, _port_of(self.settings.bootstrap_servers.split(",")[0]))

    def chroma(self) -> ChromaServer:
        return ChromaServer(self.state, self.settings.chroma_port)

    def ray(self) -> RayCluster:
        return RayCluster(self.state, self.settings.ray_nodes)

    def _ragstream(self, name: str, *args: str) -> ManagedProcess:
        env = self.settings.to_env()
        if self.settings.snapshot_dir is None:
            # API replicas (re)started by the stack start from their views' snapshots.
            env["RAGSTREAM_SNAPSHOT_DIR"] = str(self.state / "snapshots")
        ray = self.ray()
        if ray.is_running():
            env["RAY_ADDRESS"] = ray.address
        return ManagedProcess(
            name,
            [sys.executable, "-m", "ragstream", *args],
            log_file=self.state / "logs" / f"{name}.log",
            pid_file=self.state / "pids" / f"{name}.pid",
            env=env,
        )

    def stage_process(self) -> ManagedProcess:
        return self._ragstream("streams", "streams")

    def consumer_process(self) -> ManagedProcess:
        """A fixed group of ``consumers`` actors, or with None a group scaled by lag."""
        fixed = () if self.consumers is None else ("--consumers", str(self.consumers))
        return self._ragstream("consumers", "consume", *fixed)

    def api_process(self) -> ManagedProcess:
        return self._ragstream("api", "serve")

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def start_services(self) -> None:
        """Kafka, Chroma and the Ray cluster: the parts everything else talks to or runs on."""
        ensure_kafka_jars()
        self.broker().start()
        self.chroma().start()
        self.ray().start()

    def worker_processes(self) -> dict[str, ManagedProcess]:
        """What reads the topics and serves queries, by name; the stage only when consumers read it."""
        workers = {"consumers": self.consumer_process(), "API": self.api_process()}
        if self.settings.consumer_input == "changes":
            workers = {"changes stage": self.stage_process(), **workers}
        return workers

    def start_workers(self, timeout: float = 300) -> None:
        """The stage, the consumers and the API; returns once the API says it is ready."""
        workers = self.worker_processes()
        for process in workers.values():
            process.start()
        api = workers["API"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in workers.items():
                if not process.is_running():
                    raise RuntimeError(
                        f"the {name} exited; the end of {process.log_file}:\n{process.log_tail()}"
                    )
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
            ("changes stage", self.stage_process()),
        ]
        for name, part in parts:
            if part.pid is not None:
                part.stop()
                stopped.append(name)
        ray = self.ray()
        if ray.is_running():
            stopped.append("Ray")
        # Also when the head is gone: a worker node it left behind must not outlive `down`.
        ray.stop()
        for name, service in (("Chroma", self.chroma()), ("Kafka", self.broker())):
            if service.pid is not None:
                service.stop()
                stopped.append(name)
        return stopped
