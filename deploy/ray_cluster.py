"""A Ray cluster on one host: a head node and worker nodes, each a ``ray start --block`` of its own.

Every node has its own ports, ``--temp-dir`` and pid file under ``state_dir/ray/<index>/``, so two
clusters run side by side (tests beside ``make up``) and ``ragstream down`` in another shell finds
and stops one. Ray's port 6379, dashboard port 8265 and client port 10001 are never taken, and
nothing binds 8080: Serve's HTTP proxy will.

One host, several nodes: Serve runs a proxy on every node, all on the API's port (they bind with
SO_REUSEPORT, and the kernel spreads connections over the live ones). Each node offers the memory
Ray detects, the host's, so a surviving node can take over the actors of a lost one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deploy._process import DeployError, ManagedProcess, ServiceStartError
from deploy._ray_ports import RayNodePorts, choose_ports
from deploy._ray_processes import node_processes

__all__ = ["RayCluster", "RayNode", "RayNodePorts"]

log = logging.getLogger(__name__)

#: A start fails now and then on a loaded machine: the raylet gives its dashboard agent a fixed
#: time to come up, and a port chosen as free may be taken before Ray binds it.
START_ATTEMPTS = 4

#: How the GCS checks that each raylet lives. Ray's defaults (a check every 3 s, 10 s to answer,
#: dead after 5 failures) declare a killed node dead ~15 s after its death, and until then the
#: searches that Serve's proxies had sent to its replica wait, holding the clients that sent them
#: (docs/production.md: the longest wait fell from 13.7 s to 0.5-6.5 s). A killed raylet refuses
#: the check at once, so these find it in ~5 s; a live raylet too busy to answer must miss 5
#: checks of 3 s each (~20 s with the pauses) before it is declared dead. (3 checks of 2 s gave
#: no clearer gain in one run, with less margin for a busy raylet.)
NODE_HEALTH_CHECKS = {
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 3000,
    "health_check_failure_threshold": 5,
}

#: AF_UNIX paths are at most 107 bytes; Ray puts its sockets under the temp dir, here.
_SOCKET_SUFFIX = "/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store"
_MAX_SOCKET_PATH = 107


def use_token_auth(*, create_token: bool) -> None:
    """Ray's token authentication for this process and the nodes it starts, as ``ray.init()`` sets
    it up for a local cluster: the user's token (``~/.ray/auth_token``), made if `create_token`.

    Ray turns it on by itself wherever that file exists, so a cluster's mode would otherwise
    depend on whether some earlier ``ray.init()`` left one; every node binds all interfaces, so
    the mode is token unless the user set ``RAY_AUTH_MODE`` otherwise. Drivers of the cluster
    (``RAY_ADDRESS``) find the same token file.
    """
    from ray._private.authentication import authentication_token_setup as auth

    if create_token:
        auth.enable_token_auth_by_default()  # keeps an explicit RAY_AUTH_MODE
        auth.ensure_token_if_auth_enabled(create_token_if_missing=True)
    else:
        auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _ray_cli() -> str:
    # The CLI installed with the ray package, in the same environment as this interpreter.
    return str(Path(sys.executable).parent / "ray")


def ray_temp_dir(home: Path) -> Path:
    """Ray's temp dir for the node whose state is in `home`: `home` itself where Ray's socket
    paths under it fit in AF_UNIX's 107 bytes, else a short folder under the system's temp dir
    named by a digest of `home` (the same one for the same node, from any process)."""
    if len(str(home)) + len(_SOCKET_SUFFIX) <= _MAX_SOCKET_PATH:
        return home
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ragstream-ray-{digest}"


class RayNode:
    """One ``ray start --block``: the head when `head` is true, else a worker joining `head_address`."""

    def __init__(
        self,
        home: Path,
        *,
        head: bool,
        num_cpus: float,
        object_store_bytes: int,
        resources: Mapping[str, float],
        memory_bytes: int | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.head = head
        self.num_cpus = num_cpus
        self.object_store_bytes = object_store_bytes
        self.resources = dict(resources)
        self.memory_bytes = memory_bytes
        self.ports: RayNodePorts | None = None
        self._process: ManagedProcess | None = None
        # The session of this node's `ray start` (its pid), remembered past its death: the
        # workers it leaves behind still carry it.
        self._session: int | None = None
        #: Ray's temp dir: its sessions, logs and sockets.
        self.temp_dir = ray_temp_dir(self.home)

    @property
    def pid_file(self) -> Path:
        return self.home / "ray.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "ray-start.log"

    @property
    def pid(self) -> int | None:
        """The pid of this node's ``ray start``, if it runs."""
        return self._managed().pid

    def pids(self) -> set[int]:
        """Every live process of this node: ``ray start``, raylet, agents and workers."""
        leader = self.pid
        if leader is not None:
            self._session = leader
        return node_processes(self.temp_dir, self._session)

    def start(self, ports: RayNodePorts, head_address: str | None) -> None:
        """Launch ``ray start --block`` with `ports`; returns at once (see RayCluster.start)."""
        self.ports = ports
        self.home.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._managed(self._command(head_address)).start()

    def kill(self, timeout: float = 15.0) -> None:
        """SIGKILL every process of this node, as a lost machine would be; raise if one survives."""
        # The whole process group first (ray start, GCS, raylet, agents) in one signal, then the
        # workers, which sit in groups of their own.
        self.pids()  # notes the session while its leader lives
        self._managed().kill()
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise DeployError(f"Ray node {self.home}: processes {sorted(pids)} survived SIGKILL")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """Ask ``ray start`` to end its node (SIGTERM), then kill whatever is left after `timeout`."""
        process = self._managed()
        pid = process.pid
        self.pids()  # notes the session while its leader lives
        if pid is not None:
            # The leader alone: it shuts the raylet and agents down itself, the raylet its workers.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while process.is_running() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.kill()

    def log_tail(self) -> str:
        return self._managed().log_tail()

    def _managed(self, command: list[str] | None = None) -> ManagedProcess:
        """The node's ``ray start``: to be started with `command`, else as found by its pid file."""
        if self._process is None or command is not None:
            self._process = ManagedProcess(
                f"Ray {'head' if self.head else 'worker'} node in {self.home}",
                command or [_ray_cli(), "start"],
                log_file=self.log_file,
                pid_file=self.pid_file,
                env={
                    "RAY_USAGE_STATS_ENABLED": "0",
                    # A stop ends the whole cluster: draining a node for Serve's sake (up to 30 s
                    # each) would move replicas to nodes about to stop too.
                    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
                },
                extra_logs=[self.temp_dir / "session_latest" / "logs" / "raylet.out"],
            )
        return self._process

    def _command(self, head_address: str | None) -> list[str]:
        if self.ports is None:
            raise DeployError(f"no ports chosen for the Ray node in {self.home}")
        command = [_ray_cli(), "start", "--block", "--disable-usage-stats"]
        if self.head:
            # Ray nices its workers (15) to keep its daemons responsive; here the workers are the
            # consumers and API replicas, which the broker and Chroma beside them must not outrank
            # (as engines.local_ray does for a one-node cluster).
            command += ["--head", "--include-dashboard", "false"]
            command += ["--system-config", json.dumps({"worker_niceness": 0, **NODE_HEALTH_CHECKS})]
        else:
            if head_address is None:
                raise DeployError("a worker node needs the head's address")
            command += ["--address", head_address]
        command += self.ports.arguments()
        command += ["--num-cpus", str(self.num_cpus), "--object-store-memory", str(self.object_store_bytes)]
        if self.memory_bytes is not None:
            command += ["--memory", str(self.memory_bytes)]
        if self.resources:
            command += ["--resources", json.dumps(self.resources)]
        command += ["--temp-dir", str(self.temp_dir)]
        return command


class RayCluster:
    """A head (node 0) and ``nodes - 1`` worker nodes on this host, in ``state_dir/ray/``.

    ``start()`` returns once the GCS reports every node alive; ``address`` is what ``RAY_ADDRESS``
    and ``ray.init(address=...)`` take. A cluster built again on the same state dir (another
    shell) finds the running nodes through their pid files and their ports in ``cluster.json``.
    """

    def __init__(
        self,
        state_dir: Path,
        nodes: int = 2,
        *,
        num_cpus: float = 4,
        object_store_bytes: int = 256 * 1024 * 1024,
        memory_bytes: int | None = None,
        resources: Sequence[Mapping[str, float]] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a Ray cluster needs at least its head node")
        if resources is not None and len(resources) != nodes:
            raise ValueError(f"resources name {len(resources)} nodes, the cluster has {nodes}")
        self.home = Path(state_dir).resolve() / "ray"
        self.layout_file = self.home / "cluster.json"
        saved = self._saved_ports()
        # A running cluster keeps its own size, whatever this one was asked for.
        count = len(saved) if saved is not None else nodes
        self.nodes = [
            RayNode(
                self.home / str(index),
                head=index == 0,
                num_cpus=num_cpus,
                object_store_bytes=object_store_bytes,
                memory_bytes=memory_bytes,
                resources=resources[index] if resources is not None and index < nodes else {},
            )
            for index in range(count)
        ]
        if saved is not None:
            for node, ports in zip(self.nodes, saved, strict=True):
                node.ports = ports

    @property
    def address(self) -> str:
        """The head's GCS address, ``127.0.0.1:<port>``."""
        ports = self.nodes[0].ports
        if ports is None or ports.gcs is None:
            raise DeployError(f"the Ray cluster in {self.home} has not been started")
        return f"127.0.0.1:{ports.gcs}"

    def is_running(self) -> bool:
        return self.nodes[0].pid is not None

    def start(self, timeout: float = 180.0) -> None:
        """Start the head, then the workers; return once the GCS reports all of them alive.

        Where the head runs already (``ragstream up`` again), only lost worker nodes start again.
        """
        use_token_auth(create_token=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                if self.is_running():
                    self._rejoin(timeout)
                else:
                    self._launch(timeout)
            except ServiceStartError as exc:
                if attempt == START_ATTEMPTS:
                    raise
                log.warning("the Ray cluster in %s did not start (try %d): %s", self.home, attempt, exc)
            else:
                return

    def _launch(self, timeout: float) -> None:
        """Start every node on fresh ports and wait until the GCS reports them alive."""
        self.stop()  # what a cluster whose head died left behind, or a failed try
        layout = choose_ports(len(self.nodes))
        self.home.mkdir(parents=True, exist_ok=True)
        self.layout_file.write_text(json.dumps([asdict(ports) for ports in layout], indent=1))
        try:
            self.nodes[0].start(layout[0], None)
            self._wait_alive([0], timeout)
            for node, ports in zip(self.nodes[1:], layout[1:], strict=True):
                node.start(ports, self.address)
            self._wait_alive(range(len(self.nodes)), timeout)
        except BaseException:
            self.stop()
            raise

    def _rejoin(self, timeout: float) -> None:
        """Start the worker nodes that are not running again, on their ports, beside the live head."""
        for node in self.nodes[1:]:
            if node.pid is None:
                node.kill()  # what the lost node left behind
                if node.ports is None:
                    raise DeployError(f"the ports of the Ray node in {node.home} are unknown")
                node.start(node.ports, self.address)
        self._wait_alive(range(len(self.nodes)), timeout)

    def alive_nodes(self) -> set[int]:
        """Indexes of the nodes the GCS reports alive."""
        return {index for index, info in self._node_infos().items() if info["alive"]}

    def node_id(self, index: int) -> str:
        """Ray's id (hex) of node `index`, as ``ray.get_runtime_context().get_node_id()`` gives it."""
        info = self._node_infos().get(index)
        if info is None:
            raise DeployError(f"the GCS knows no node {index} of {self.home}")
        return str(info["node_id"])

    def kill_node(self, index: int) -> None:
        """SIGKILL node `index`'s raylet and every process of that node, as a lost machine."""
        self.nodes[index].kill()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the workers, then the head; no process of the cluster is left (else DeployError)."""
        for node in reversed(self.nodes):
            node.stop(timeout)

    def _wait_alive(self, indexes: Sequence[int] | range, timeout: float) -> None:
        """Poll the GCS until it reports `indexes` alive; fail early when one's ``ray start`` exits."""
        from ray.exceptions import RayError  # imported with Ray, by the users of a cluster only

        wanted = set(indexes)
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                if wanted <= self.alive_nodes():
                    return
            except (RayError, OSError) as exc:  # the GCS is not answering yet (RpcError, a timeout)
                last_error = f" (last attempt: {type(exc).__name__}: {exc})"
            for index in sorted(wanted):
                node = self.nodes[index]
                if node.pid is None:
                    raise ServiceStartError(
                        f"Ray node {index} in {node.home}", "ray start exited", node.log_tail()
                    )
            if time.monotonic() >= deadline:
                reason = f"not alive after {timeout:.0f} s{last_error}"
                tails = "\n".join(self.nodes[index].log_tail() for index in sorted(wanted))
                raise ServiceStartError(f"Ray cluster at {self.address}", reason, tails)
            time.sleep(0.5)

    def _node_infos(self) -> dict[int, dict[str, Any]]:
        """Our nodes as the GCS sees them, by index: the latest registration of each temp dir."""
        # Ray's import costs seconds; only the users of a cluster pay it.
        from ray._raylet import GcsClient  # type: ignore[attr-defined]

        use_token_auth(create_token=False)
        client = GcsClient(address=self.address)
        by_home = {str(node.temp_dir): index for index, node in enumerate(self.nodes)}
        infos: dict[int, dict[str, Any]] = {}
        for info in client.get_all_node_info(timeout=5).values():
            index = by_home.get(info.temp_dir)
            if index is None:
                continue
            alive = info.state == 0  # GcsNodeInfo.ALIVE
            # A node restarted on its temp dir has a dead entry too; the live one counts.
            if index not in infos or alive:
                infos[index] = {"alive": alive, "node_id": info.node_id.hex()}
        return infos

    def _saved_ports(self) -> list[RayNodePorts] | None:
        """The ports of the running cluster, or None when its head is not running."""
        head_pid_file = self.home / "0" / "ray.pid"
        try:
            layout = json.loads(self.layout_file.read_text())
            pid = int(head_pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            running = os.getsid(pid) == pid
        except ProcessLookupError:
            running = False
        return [RayNodePorts(**ports) for ports in layout] if running else None
