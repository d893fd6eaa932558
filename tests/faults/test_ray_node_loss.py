"""Losing Serve's proxy on one node, then a whole Ray node mid-stream: searches go on through the
proxy left, the lost node's consumers and API replicas start again on the other, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from fault_settings import fault_settings
from index_oracle import event_stream
from ray import serve
from ray.serve.schema import ProxyStatus
from retrying_client import RetryingClient, steady_searches
from scale import scaled, scaled_timeout

from consumers.actors import ConsumerGroup
from deploy import RayCluster, free_port
from query_api.lexical import LexicalIndex
from query_api.snapshot import SnapshotStore, ViewShape
from query_api.vector_index import VectorIndex
from ragstream.api_replicas import deploy_api_replicas, running_replicas
from schemas import Settings

pytestmark = [pytest.mark.integration, scaled_timeout()]

DOCUMENTS, EVENTS = scaled(100, 600), scaled(600, 6_000)
HEAD, WORKER = 0, 1


def consumer_nodes(cluster: RayCluster, group: ConsumerGroup) -> list[int]:
    """The node each consumer actor runs on (its index), found by the actor's process among the
    node's own; waits for actors that are restarting."""
    pids = ray.get([actor.pid.remote() for actor in group.actors], timeout=600)
    processes = [node.pids() for node in cluster.nodes]
    return [next(index for index, own in enumerate(processes) if pid in own) for pid in pids]


def events_consumed(actor: Any) -> int:
    stats: dict[str, Any] = ray.get(actor.stats.remote(), timeout=60)
    return int(stats["events_consumed"])


async def until_consuming(actor: Any, timeout: float = 300) -> None:
    """Wait until `actor` has consumed events: it owns partitions and works through batches."""
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(events_consumed, actor) == 0:
        if time.monotonic() > deadline:
            pytest.fail(f"the consumer on the worker node consumed nothing in {timeout:.0f} s")
        await asyncio.sleep(0.2)


def processes_named(cluster: RayCluster, prefix: bytes) -> list[tuple[int, int]]:
    """(node, pid) of every process of the cluster whose command line starts with ``prefix``."""
    found = []
    for index, node in enumerate(cluster.nodes):
        for pid in node.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(prefix):
                    found.append((index, pid))
    return found


def replica_nodes(cluster: RayCluster) -> list[int]:
    """The node of each Serve replica process alive now, sorted."""
    return sorted(node for node, _ in processes_named(cluster, b"ray::ServeReplica:"))


async def kill_the_heads_proxy(cluster: RayCluster, searches: RetryingClient) -> float:
    """SIGKILL Serve's proxy on the head once searches flow through both; returns when."""
    deadline = time.monotonic() + 120
    while True:
        proxies = processes_named(cluster, b"ray::ProxyActor")
        flowing = len(searches.answered_by) >= 20
        if flowing and sorted(node for node, _ in proxies) == [HEAD, WORKER]:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"after 120 s: proxies (node, pid) {proxies}, {len(searches.answered_by)} answers")
        await asyncio.sleep(0.2)
    killed_at = time.monotonic()
    os.kill(next(pid for node, pid in proxies if node == HEAD), signal.SIGKILL)
    return killed_at


def both_proxies_healthy() -> bool:
    proxies = serve.status().proxies
    return len(proxies) == 2 and all(status == ProxyStatus.HEALTHY for status in proxies.values())


async def until_the_heads_proxy_is_replaced(
    cluster: RayCluster, searches: RetryingClient, since: float
) -> None:
    """Until Serve runs a new proxy on the head and reports both healthy, and searches sent after
    the kill were answered meanwhile (by the worker node's proxy, or the new one)."""
    deadline = time.monotonic() + 120
    while not (
        await asyncio.to_thread(both_proxies_healthy)
        and any(node == HEAD for node, _ in processes_named(cluster, b"ray::ProxyActor"))
        and sum(1 for sent, _ in searches.answered_by if sent >= since) >= 20
    ):
        if time.monotonic() > deadline:
            proxies = serve.status().proxies
            pytest.fail(f"the head's proxy not replaced and healthy 120 s after its kill: {proxies}")
        await asyncio.sleep(0.5)


async def until_replicas_run_on(cluster: RayCluster, nodes: list[int], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not (await asyncio.to_thread(running_replicas) == len(nodes) and replica_nodes(cluster) == nodes):
        if time.monotonic() > deadline:
            pytest.fail(
                f"Serve replicas on nodes {replica_nodes(cluster)}, not {nodes}, after {timeout:.0f} s"
            )
        await asyncio.sleep(1)


def a_valid_snapshot(settings: Settings) -> Path | None:
    """The newest snapshot of the replicas' views that loads (checksums and all)."""
    assert settings.snapshot_dir is not None
    topic = settings.chunks_topic
    shape = ViewShape(topic, vectors=True)
    store = SnapshotStore(settings.snapshot_dir / topic, settings.snapshot_keep, shape)
    index, vectors = LexicalIndex(), VectorIndex()
    try:
        found = store.restore(index, vectors, dict.fromkeys(range(settings.partitions), (0, 2**62)))
    finally:
        index.close()
    return found[0] if found is not None else None


async def test_losing_the_worker_node_mid_stream_restarts_its_consumer_and_replica_on_the_head(
    kafka_broker, chroma_server, module_namespace, two_node_ray, scenario_factory, tmp_path
):
    cluster = two_node_ray
    # The replicas write snapshots of their views while searches run (the vectors from a child
    # forked by the replica's process), and one lost with its node may be writing one.
    settings = fault_settings(
        module_namespace,
        kafka_broker.bootstrap_servers,
        chroma_server.port,
        api_port=free_port(),
        # Serve's proxies, one per node: the first fault is the head's proxy.
        api_ingress="proxy",
        snapshot_dir=tmp_path / "snapshots",
        snapshot_interval_s=5.0,
    )
    scenario = scenario_factory(settings)
    searches, stop_searching = None, asyncio.Event()
    try:
        group = await scenario.start_consumers(2)
        nodes_before = await asyncio.to_thread(consumer_nodes, cluster, group)
        assert sorted(nodes_before) == [HEAD, WORKER], "the consumers are not spread over both nodes"
        await asyncio.to_thread(deploy_api_replicas, settings, 2)
        assert replica_nodes(cluster) == [HEAD, WORKER], "the API replicas are not spread over both nodes"
        proxy = httpx.AsyncClient(base_url=f"http://{settings.api_host}:{settings.api_port}")
        searches = RetryingClient(proxy)
        searching = asyncio.create_task(steady_searches(searches, stop_searching, per_second=5))
        proxy_killed_at = await kill_the_heads_proxy(cluster, searches)
        await until_the_heads_proxy_is_replaced(cluster, searches, proxy_killed_at)
        publishing = asyncio.create_task(
            scenario.publish(event_stream(11, DOCUMENTS, EVENTS, "node-loss"), slice_size=20, pause=0.3)
        )
        await until_consuming(group.actors[nodes_before.index(WORKER)])
        await scenario.faults.before("the worker node lost", publishing)

        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill_node, WORKER)

        await until_replicas_run_on(cluster, [HEAD, HEAD])
        replicas_back_s = time.monotonic() - killed_at
        await publishing
        nodes_after = await asyncio.to_thread(consumer_nodes, cluster, group)
        await scenario.assert_index_matches_oracle()
        await asyncio.to_thread(group.check)  # both consumers still run: none gave up
    finally:
        stop_searching.set()
        if searches is not None:
            await searching
            await searches.proxy.aclose()
        await asyncio.to_thread(serve.shutdown)
        await asyncio.to_thread(scenario.stop)

    after_loss = sum(1 for sent, _ in searches.answered_by if sent >= killed_at)
    after_proxy = sum(1 for sent, _ in searches.answered_by if proxy_killed_at <= sent < killed_at)
    first_failures_after_proxy = [f for f in searches.first_failures if proxy_killed_at <= f[0] < killed_at]
    print(
        f"head's proxy killed: {after_proxy} searches answered before the node loss, "
        f"{len(first_failures_after_proxy)} failed at the first try; "
        f"worker node lost: both replicas on the head after {replicas_back_s:.0f} s; "
        f"{len(searches.answered_by)} searches answered, {after_loss} after the loss; failed at the "
        f"first try: {len(searches.first_failures)}, after one retry: {len(searches.failures)} "
        f"{sorted({status for _, status in searches.failures})}"
    )
    # Mid-stream: the consumers had work in hand and events were waiting for them.
    scenario.faults.assert_mid_stream("publish more events (EVENTS), or faster")
    assert nodes_after == [HEAD, HEAD]
    assert after_proxy > 0, "no search was answered between the proxy's death and the node's"
    assert after_loss > 0, "no search was answered after the loss"
    # A proxy's death costs a client that retries once nothing: the other node's proxy listens on
    # the same port, and the retry's new connection reaches it.
    assert searches.failures == []
    assert a_valid_snapshot(settings) is not None, "the replicas left no snapshot that loads"
