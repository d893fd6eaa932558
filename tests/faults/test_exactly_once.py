"""Whatever crashes, the index ends up as if every event had been applied once, in order."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterator

import pytest
import ray
from fault_oracle import event_stream
from fault_settings import fault_settings
from scale import scaled, scaled_timeout

from deploy import ChromaServer, KafkaBroker, KafkaCluster, free_port
from schemas.fault_injection import CRASH_BEFORE_COMMIT_ENV

pytestmark = [pytest.mark.integration, scaled_timeout()]

DOCUMENTS, EVENTS = scaled(150, 600), scaled(1500, 12_000)
#: Events published around a restart of Chroma or a broker.
RESTART_EVENTS = scaled(800, 6_000)
#: How many times the kill scenario kills a consumer.
KILLS = scaled(3, 12)


async def kill_an_actor(group, rng: random.Random) -> int:
    actor = rng.choice(group.actors)
    pid = await asyncio.to_thread(ray.get, actor.pid.remote(), timeout=180)
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.fixture
def consumers_crash_before_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Consumers started in the test die between their Chroma write and their commit in 3% of
    batches. The variable reaches them through a local Ray cluster started with it (Ray's workers
    inherit its environment), and goes with that cluster: ask for this before scenario_factory,
    so the consumers stop first."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.shutdown()  # a local Ray an earlier test started without the variable
    monkeypatch.setenv(CRASH_BEFORE_COMMIT_ENV, "0.03")
    yield
    ray.shutdown()


async def test_killed_consumers_leave_the_index_exactly_as_the_oracle(
    consumers_crash_before_commit, kafka_broker, chroma_server, scenario_factory
):
    settings = fault_settings(kafka_broker.bootstrap_servers, chroma_server.port)
    scenario = scenario_factory(settings)
    group = await scenario.start_consumers(2)
    rng = random.Random(7)
    publishing = asyncio.create_task(scenario.publish(event_stream(1, DOCUMENTS, EVENTS, "kill")))
    killed = []
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(2, 6))
        killed.append(await kill_an_actor(group, rng))
    await publishing
    await scenario.assert_index_matches_oracle()
    assert len(set(killed)) == KILLS


async def test_a_rebalance_mid_stream_leaves_the_index_exactly_as_the_oracle(
    kafka_broker, chroma_server, scenario_factory
):
    scenario = scenario_factory(fault_settings(kafka_broker.bootstrap_servers, chroma_server.port))
    group = await scenario.start_consumers(1)
    publishing = asyncio.create_task(scenario.publish(event_stream(2, DOCUMENTS, EVENTS, "rebalance")))
    await asyncio.sleep(3)
    await asyncio.to_thread(group.add)
    await asyncio.sleep(6)
    await asyncio.to_thread(group.add)
    await asyncio.to_thread(group.wait_ready)  # the member to remove must have joined first
    await asyncio.sleep(3)
    await asyncio.to_thread(group.remove)
    await publishing
    await scenario.assert_index_matches_oracle()


async def test_a_chroma_restart_mid_stream_skips_nothing(kafka_broker, tmp_path, scenario_factory):
    chroma = ChromaServer(tmp_path, free_port())
    chroma.start()
    scenario = scenario_factory(fault_settings(kafka_broker.bootstrap_servers, chroma.port))
    try:
        await scenario.start_consumers(1)
        publishing = asyncio.create_task(
            scenario.publish(event_stream(3, DOCUMENTS, RESTART_EVENTS, "chroma"))
        )
        await asyncio.sleep(4)
        await asyncio.to_thread(chroma.kill)
        await asyncio.sleep(5)
        await asyncio.to_thread(chroma.start)
        await publishing
        await scenario.assert_index_matches_oracle()
    finally:
        await asyncio.to_thread(scenario.stop)  # consumers go before the service they talk to
        await asyncio.to_thread(chroma.stop)


async def test_a_broker_restart_mid_stream_skips_nothing(chroma_server, tmp_path, scenario_factory):
    broker = KafkaBroker(tmp_path, free_port())
    broker.start()
    scenario = scenario_factory(fault_settings(broker.bootstrap_servers, chroma_server.port))
    try:
        await scenario.start_consumers(1)
        publishing = asyncio.create_task(
            scenario.publish(event_stream(4, DOCUMENTS, RESTART_EVENTS, "broker"))
        )
        await asyncio.sleep(4)
        await asyncio.to_thread(broker.kill)
        await asyncio.sleep(3)
        await asyncio.to_thread(broker.start)
        await publishing
        await scenario.assert_index_matches_oracle()
    finally:
        await asyncio.to_thread(scenario.stop)  # consumers go before the service they talk to
        await asyncio.to_thread(broker.stop)


async def test_losing_one_of_three_brokers_for_good_loses_no_acknowledged_event(
    chroma_server, tmp_path, scenario_factory
):
    cluster = KafkaCluster(tmp_path, size=3)
    await asyncio.to_thread(cluster.start)
    settings = fault_settings(
        cluster.bootstrap_servers, chroma_server.port, replication_factor=3, min_insync_replicas=2
    )
    scenario = scenario_factory(settings)
    try:
        await scenario.start_consumers(1)
        publishing = asyncio.create_task(
            scenario.publish(event_stream(5, DOCUMENTS, RESTART_EVENTS, "replicated"))
        )
        await asyncio.sleep(5)
        await asyncio.to_thread(cluster.brokers[1].kill)
        await publishing
        # Every event the brokers acknowledged (the oracle's input) is in the index.
        await scenario.assert_index_matches_oracle()
    finally:
        await asyncio.to_thread(scenario.stop)
        await asyncio.to_thread(cluster.stop)
