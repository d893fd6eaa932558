"""Ports for the Ray nodes of one host: every port each node binds, chosen free, none of Ray's
defaults and none of the API's, so that two clusters run side by side."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from deploy._process import DeployError
from deploy.ports import RAY_WORKER_PORTS, free_port_block

__all__ = ["WORKER_PORTS_PER_NODE", "RayNodePorts", "choose_ports"]

#: Ports each node's workers may bind, one per worker process (tasks, actors, Serve replicas).
WORKER_PORTS_PER_NODE = 100


@dataclass(frozen=True)
class RayNodePorts:
    """Every port one node binds that can be chosen; the head's alone are the GCS, client and dashboard."""

    node_manager: int
    object_manager: int
    min_worker: int
    max_worker: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    metrics_export: int
    gcs: int | None = None
    client_server: int | None = None
    dashboard: int | None = None

    def arguments(self) -> list[str]:
        """The ``ray start`` options that set these ports."""
        options = {
            "--port": self.gcs,
            "--ray-client-server-port": self.client_server,
            "--dashboard-port": self.dashboard,
            "--node-manager-port": self.node_manager,
            "--object-manager-port": self.object_manager,
            "--min-worker-port": self.min_worker,
            "--max-worker-port": self.max_worker,
            "--dashboard-agent-listen-port": self.dashboard_agent_listen,
            "--dashboard-agent-grpc-port": self.dashboard_agent_grpc,
            "--runtime-env-agent-port": self.runtime_env_agent,
            "--metrics-export-port": self.metrics_export,
        }
        return [part for option, port in options.items() if port is not None for part in (option, str(port))]


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free on every interface (Ray binds most of them on all of them)."""
    sockets = []
    try:
        # All held open at once, so the kernel cannot hand out the same port twice.
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _free_port_range(size: int, taken: set[int]) -> int:
    """The first port of ``size`` consecutive free ports, none of them in ``taken``."""
    first = free_port_block(size, taken)
    if first is None:
        low, high = RAY_WORKER_PORTS
        raise DeployError(f"no {size} consecutive free ports between {low} and {high}")
    return first


def choose_ports(nodes: int) -> list[RayNodePorts]:
    """Free ports for a head (index 0) and ``nodes - 1`` workers, none shared between them."""
    singles = iter(_free_ports(11 * nodes))
    layout: list[RayNodePorts] = []
    taken: set[int] = set()
    for index in range(nodes):
        head = index == 0
        first_worker_port = _free_port_range(WORKER_PORTS_PER_NODE, taken)
        taken.update(range(first_worker_port, first_worker_port + WORKER_PORTS_PER_NODE))
        layout.append(
            RayNodePorts(
                node_manager=next(singles),
                object_manager=next(singles),
                min_worker=first_worker_port,
                max_worker=first_worker_port + WORKER_PORTS_PER_NODE - 1,
                dashboard_agent_listen=next(singles),
                dashboard_agent_grpc=next(singles),
                runtime_env_agent=next(singles),
                metrics_export=next(singles),
                gcs=next(singles) if head else None,
                client_server=next(singles) if head else None,
                dashboard=next(singles) if head else None,
            )
        )
    return layout
