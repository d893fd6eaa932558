"""Whatever crashes, the index ends up as if every event had been applied once, in order."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterator

import pytest
import ray
from fault_settings import fault_settings
from index_oracle import event_stream
from scale import scaled, scaled_timeout

from deploy import ChromaServer, KafkaBroker, KafkaCluster, free_port
from schemas.fault_injection import CRASH_BEFORE_COMMIT_ENV

pytestmark = [pytest.mark.integration, scaled_timeout()]

DOCUMENTS = scaled(150, 600)
#: The most events a scenario may publish. Each publishes until its faults are done and the work
#: resumed after them, however long that takes on a loaded machine; each fault waits until the
#: first documents are indexed (after a fault, until the work resumed) while others still wait.
STREAM = scaled(20_000, 80_000)
#: The most events left waiting for the consumers while a scenario publishes: work is in flight
#: at every fault, and draining it afterwards takes seconds, even on a slow machine.
BACKLOG = 1_000
#: What to change when a fault found nothing in flight.
REMEDY = (
    "the stream ran out before the faults were done (make STREAM longer), or the consumers did not "
    "index anything for 3 minutes after a fault"
)
#: How many times the kill scenario kills a consumer.
KILLS = scaled(3, 12)


def kill_a_running_actor(group, rng: random.Random) -> int:
    """SIGKILL a consumer picked at random among those running now (one that Ray is restarting
    answers only once it is back); returns its pid."""
    while True:
        calls = [actor.pid.remote() for actor in group.actors]
        running, _ = ray.wait(calls, num_returns=len(calls), timeout=1)
        if not running:
            running, _ = ray.wait(calls, num_returns=1, timeout=180)
        pid = rng.choice(sorted(ray.get(running)))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # it died on its own since it answered (the injected crash): pick again
        return pid


@pytest.fixture
def consumers_crash_before_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Consumers started in the test die between their Chroma write and their commit in 3% of
    batches: ConsumerGroup hands the variable on to the actors it starts. (Not by restarting Ray
    with the variable: a driver that shuts Ray down and starts it again can crash on an object id
    of the earlier session, "Tried to create an owned object that already exists".)"""
    monkeypatch.setenv(CRASH_BEFORE_COMMIT_ENV, "0.03")
    yield


async def test_killed_consumers_leave_the_index_exactly_as_the_oracle(
    consumers_crash_before_commit, kafka_broker, chroma_server, module_namespace, scenario_factory
):
    settings = fault_settings(module_namespace, kafka_broker.bootstrap_servers, chroma_server.port)
    scenario = scenario_factory(settings)
    group = await scenario.start_consumers(2)
    rng = random.Random(7)
    done = asyncio.Event()
    publishing = asyncio.create_task(
        scenario.publish(event_stream(1, DOCUMENTS, STREAM, "kill"), until=done, backlog=BACKLOG)
    )
    killed = []
    for number in range(1, KILLS + 1):
        await asyncio.sleep(rng.uniform(0, 2))  # a random point of the stream
        await scenario.faults.before(f"consumer kill {number} of {KILLS}", publishing)
        killed.append(await asyncio.to_thread(kill_a_running_actor, group, rng))
    await scenario.faults.until_flowing(publishing)
    done.set()
    await publishing
    await scenario.assert_index_matches_oracle()
    assert len(set(killed)) == KILLS
    scenario.faults.assert_mid_stream(REMEDY)


async def test_a_rebalance_mid_stream_leaves_the_index_exactly_as_the_oracle(
    kafka_broker, chroma_server, module_namespace, scenario_factory
):
    scenario = scenario_factory(
        fault_settings(module_namespace, kafka_broker.bootstrap_servers, chroma_server.port)
    )
    group = await scenario.start_consumers(1)
    done = asyncio.Event()
    publishing = asyncio.create_task(
        scenario.publish(event_stream(2, DOCUMENTS, STREAM, "rebalance"), until=done, backlog=BACKLOG)
    )
    await scenario.faults.until_flowing(publishing)
    # A member joins the group as soon as it has loaded its model, and the group rebalances.
    await asyncio.to_thread(group.add)
    await asyncio.to_thread(group.wait_ready)
    await scenario.faults.before("a second member joins", publishing)
    await asyncio.to_thread(group.add)
    await asyncio.to_thread(group.wait_ready)  # the member to remove must have joined first
    await scenario.faults.before("a third member joins", publishing)
    await scenario.faults.before("the newest member leaves", publishing)
    await asyncio.to_thread(group.remove)
    await scenario.faults.until_flowing(publishing)
    done.set()
    await publishing
    await scenario.assert_index_matches_oracle()
    scenario.faults.assert_mid_stream(REMEDY, while_publishing=True)


async def test_a_chroma_restart_mid_stream_skips_nothing(
    kafka_broker, tmp_path, module_namespace, scenario_factory
):
    chroma = ChromaServer(tmp_path, free_port())
    chroma.start()
    scenario = scenario_factory(fault_settings(module_namespace, kafka_broker.bootstrap_servers, chroma.port))
    try:
        await scenario.start_consumers(1)
        done = asyncio.Event()
        publishing = asyncio.create_task(
            scenario.publish(
                event_stream(3, DOCUMENTS, STREAM, "chroma"), slice_size=25, until=done, backlog=BACKLOG
            )
        )
        await scenario.faults.before("Chroma killed", publishing)
        await asyncio.to_thread(chroma.kill)
        await asyncio.sleep(5)
        await asyncio.to_thread(chroma.start)
        await scenario.faults.until_flowing(publishing)
        done.set()
        await publishing
        await scenario.assert_index_matches_oracle()
    finally:
        await asyncio.to_thread(scenario.stop)  # consumers go before the service they talk to
        await asyncio.to_thread(chroma.stop)
    scenario.faults.assert_mid_stream(REMEDY)


async def test_a_broker_restart_mid_stream_skips_nothing(
    chroma_server, tmp_path, module_namespace, scenario_factory
):
    broker = KafkaBroker(tmp_path, free_port())
    broker.start()
    scenario = scenario_factory(
        fault_settings(module_namespace, broker.bootstrap_servers, chroma_server.port)
    )
    try:
        await scenario.start_consumers(1)
        done = asyncio.Event()
        publishing = asyncio.create_task(
            scenario.publish(
                event_stream(4, DOCUMENTS, STREAM, "broker"), slice_size=25, until=done, backlog=BACKLOG
            )
        )
        await scenario.faults.before("the broker killed", publishing)
        await asyncio.to_thread(broker.kill)
        await asyncio.sleep(3)
        await asyncio.to_thread(broker.start)
        await scenario.faults.until_flowing(publishing)
        done.set()
        await publishing
        await scenario.assert_index_matches_oracle()
    finally:
        await asyncio.to_thread(scenario.stop)  # consumers go before the service they talk to
        await asyncio.to_thread(broker.stop)
    # The publisher too was cut off mid-stream, and sent its slice again.
    scenario.faults.assert_mid_stream(REMEDY, while_publishing=True)


async def test_losing_one_of_three_brokers_for_good_loses_no_acknowledged_event(
    chroma_server, tmp_path, module_namespace, scenario_factory
):
    cluster = KafkaCluster(tmp_path, size=3)
    await asyncio.to_thread(cluster.start)
    settings = fault_settings(
        module_namespace,
        cluster.bootstrap_servers,
        chroma_server.port,
        replication_factor=3,
        min_insync_replicas=2,
    )
    scenario = scenario_factory(settings)
    try:
        await scenario.start_consumers(1)
        done = asyncio.Event()
        publishing = asyncio.create_task(
            scenario.publish(
                event_stream(5, DOCUMENTS, STREAM, "replicated"), slice_size=25, until=done, backlog=BACKLOG
            )
        )
        await scenario.faults.before("a broker lost for good", publishing)
        await asyncio.to_thread(cluster.brokers[1].kill)
        await scenario.faults.until_flowing(publishing)
        done.set()
        await publishing
        # Every event the brokers acknowledged (the oracle's input) is in the index.
        await scenario.assert_index_matches_oracle()
    finally:
        await asyncio.to_thread(scenario.stop)
        await asyncio.to_thread(cluster.stop)
    scenario.faults.assert_mid_stream(REMEDY, while_publishing=True)
