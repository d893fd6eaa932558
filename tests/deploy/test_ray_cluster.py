"""A two-node Ray cluster on one host: both raylets take actors, a lost node leaves nothing behind."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from deploy import RayCluster
from deploy._ray_ports import WORKER_PORTS_PER_NODE, choose_ports
from deploy._ray_processes import node_processes

REPOSITORY = Path(__file__).resolve().parents[2]


@ray.remote(num_cpus=0.1, max_restarts=-1, max_task_retries=-1)
class Probe:
    """An actor that says where it runs."""

    def where(self) -> tuple[str, int]:
        return ray.get_runtime_context().get_node_id(), os.getpid()


def start_probe(scheduling_strategy: Any) -> Any:
    """A Probe actor placed by `scheduling_strategy`."""
    return Probe.options(scheduling_strategy=scheduling_strategy).remote()  # type: ignore[attr-defined]


@contextmanager
def connected(cluster: RayCluster) -> Iterator[None]:
    """This process as a driver of `cluster`, as ``RAY_ADDRESS`` makes ``ragstream consume`` one."""
    ray.shutdown()  # a local Ray an earlier test left connected
    ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    # A short folder name: Ray's socket paths under it must stay within 107 bytes.
    cluster = RayCluster(tmp_path_factory.mktemp("ray"), nodes=2, num_cpus=2)
    cluster.start()
    yield cluster
    cluster.stop()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(predicate, what: str, timeout: float = 180.0) -> None:
    """Poll until `predicate()` holds; the limit only keeps a broken cluster from hanging the test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.5)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_spread_actors_land_on_both_nodes_of_the_cluster(cluster: RayCluster) -> None:
    node_ids = [cluster.node_id(0), cluster.node_id(1)]
    with connected(cluster):
        alive_nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        probes = [start_probe("SPREAD") for _ in range(4)]
        places = ray.get([probe.where.remote() for probe in probes], timeout=180)
        processes = [node.pids() for node in cluster.nodes]
        for probe in probes:
            ray.kill(probe)

    assert alive_nodes == set(node_ids)
    assert {node_id for node_id, _ in places} == set(node_ids)
    # The launcher counts each actor's process among its node's own.
    for node_id, pid in places:
        assert pid in processes[node_ids.index(node_id)]


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_killed_worker_node_leaves_no_process_and_its_actor_restarts_on_the_head(
    cluster: RayCluster,
) -> None:
    head, worker = cluster.node_id(0), cluster.node_id(1)
    try:
        with connected(cluster):
            on_worker = NodeAffinitySchedulingStrategy(worker, soft=True)
            probe = start_probe(on_worker)
            node_before, pid_before = ray.get(probe.where.remote(), timeout=180)
            worker_processes = cluster.nodes[1].pids()

            cluster.kill_node(1)

            left = cluster.nodes[1].pids()
            survivors = [pid for pid in worker_processes if alive(pid)]
            wait_for(
                lambda: any(node["NodeID"] == worker and not node["Alive"] for node in ray.nodes()),
                "the GCS reports the worker node dead",
            )
            node_after, pid_after = ray.get(probe.where.remote(), timeout=300)
            ray.kill(probe)
    finally:
        cluster.start()  # the worker node rejoins, for the other tests of this module

    assert node_before == worker
    assert pid_before in worker_processes
    assert len(worker_processes) >= 4  # ray start, raylet, its agents, the actor's worker
    assert left == set()
    assert survivors == []
    assert node_after == head
    assert pid_after != pid_before


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_stop_from_another_process_leaves_no_process_of_the_cluster_and_spares_another_cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster: RayCluster
) -> None:
    other = cluster
    cluster = RayCluster(tmp_path_factory.mktemp("ray"), nodes=2, num_cpus=2)
    cluster.start()
    try:
        with connected(cluster):
            probes = [start_probe("SPREAD") for _ in range(2)]
            ray.get([probe.where.remote() for probe in probes], timeout=180)
        processes = {index: node.pids() for index, node in enumerate(cluster.nodes)}
        sessions = [node.pid for node in cluster.nodes]

        # As `ragstream down` in another shell: only the state dir is shared.
        state_dir = str(cluster.home.parent)
        stop = (
            f"from pathlib import Path; from deploy import RayCluster; RayCluster(Path({state_dir!r})).stop()"
        )
        subprocess.run([sys.executable, "-c", stop], cwd=REPOSITORY, check=True, timeout=300)
    finally:
        cluster.stop()

    assert all(len(pids) >= 4 for pids in processes.values()), processes
    assert [pid for pids in processes.values() for pid in pids if alive(pid)] == []
    for node, session in zip(cluster.nodes, sessions, strict=True):
        assert node_processes(node.home, session) == set()
    # Both ran at once on their own ports; the other one still has both its nodes.
    assert other.alive_nodes() == {0, 1}


def test_each_node_gets_ports_of_its_own_away_from_rays_and_the_apis_defaults() -> None:
    layout = choose_ports(3)
    worker_ports = [range(ports.min_worker, ports.max_worker + 1) for ports in layout]
    other_ports = [
        port
        for ports in layout
        for name, port in asdict(ports).items()
        if name not in ("min_worker", "max_worker") and port is not None
    ]
    every_port = [port for ports in worker_ports for port in ports] + other_ports

    assert [len(ports) for ports in worker_ports] == [WORKER_PORTS_PER_NODE] * 3
    assert len(other_ports) == 3 * 6 + 3  # six per node, and the head's GCS, client and dashboard
    assert len(set(every_port)) == len(every_port)
    assert not {6379, 8080, 8265, 10001} & set(every_port)
    assert [ports.gcs is not None for ports in layout] == [True, False, False]


def test_a_state_dir_too_long_for_rays_sockets_gets_short_temp_dirs_of_its_own(tmp_path: Path) -> None:
    long_state = tmp_path / ("state" * 20)
    nodes = RayCluster(long_state, nodes=2).nodes
    again = RayCluster(long_state, nodes=2).nodes
    other = RayCluster(tmp_path / ("other" * 20), nodes=2).nodes

    temp_dirs = [node.temp_dir for node in nodes]
    assert all(len(str(temp_dir)) <= 43 for temp_dir in temp_dirs)
    assert len({*temp_dirs, *(node.temp_dir for node in other)}) == 4
    assert [node.temp_dir for node in again] == temp_dirs
    assert all(node.pid_file.is_relative_to(long_state) for node in nodes)
    short = RayCluster(Path("/tmp/rs")).nodes[0]
    assert short.temp_dir == short.home
