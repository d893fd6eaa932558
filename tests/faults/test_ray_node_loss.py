"""Losing a whole Ray node mid-stream: its consumers start again on the node left, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import ray
from fault_oracle import event_stream
from fault_settings import fault_settings
from scale import scaled, scaled_timeout

from consumers.actors import ConsumerGroup
from deploy import RayCluster
from schemas import Settings
from streams.lag import LagReader

pytestmark = [pytest.mark.integration, scaled_timeout()]

DOCUMENTS, EVENTS = scaled(100, 600), scaled(600, 6_000)
HEAD, WORKER = 0, 1


def consumer_nodes(cluster: RayCluster, group: ConsumerGroup) -> list[int]:
    """The node each consumer actor runs on (its index), found by the actor's process among the
    node's own; waits for actors that are restarting."""
    pids = ray.get([actor.pid.remote() for actor in group.actors], timeout=600)
    processes = [node.pids() for node in cluster.nodes]
    return [next(index for index, own in enumerate(processes) if pid in own) for pid in pids]


async def events_waiting(settings: Settings) -> int:
    """Events published and not yet committed by the consumer group."""
    async with LagReader(settings.bootstrap_servers) as reader:
        partitions = await reader.read(settings.events_topic, settings.consumer_group)
    return sum(p.end_offset - (p.committed or 0) for p in partitions)


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


async def test_losing_the_worker_node_mid_stream_restarts_its_consumer_on_the_head_and_loses_nothing(
    kafka_broker, chroma_server, two_node_ray, scenario_factory
):
    cluster = two_node_ray
    settings = fault_settings(kafka_broker.bootstrap_servers, chroma_server.port)
    scenario = scenario_factory(settings)
    try:
        group = await scenario.start_consumers(2)
        nodes_before = await asyncio.to_thread(consumer_nodes, cluster, group)
        assert sorted(nodes_before) == [HEAD, WORKER], "the consumers are not spread over both nodes"
        publishing = asyncio.create_task(
            scenario.publish(event_stream(11, DOCUMENTS, EVENTS, "node-loss"), slice_size=20, pause=0.3)
        )
        await until_consuming(group.actors[nodes_before.index(WORKER)])
        waiting = await events_waiting(settings)

        await asyncio.to_thread(cluster.kill_node, WORKER)

        await publishing
        nodes_after = await asyncio.to_thread(consumer_nodes, cluster, group)
        await scenario.assert_index_matches_oracle()
        await asyncio.to_thread(group.check)  # both consumers still run: none gave up
    finally:
        await asyncio.to_thread(scenario.stop)

    # Mid-stream: the worker node's consumer had work in hand and events were waiting for it.
    assert waiting > 0
    assert nodes_after == [HEAD, HEAD]
