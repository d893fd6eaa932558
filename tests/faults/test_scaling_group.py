"""A consumer group scaled by its lag grows under a backlog, shrinks once drained, and loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import ray
from fault_settings import fault_settings
from index_oracle import event_stream
from scale import scaled, scaled_timeout

from consumers.actors import ConsumerGroup
from consumers.controller import ScalingController
from query_api.stats import StatsTail
from schemas import Settings
from streams.lag import LagReader
from streams.topics import ensure_topics

pytestmark = [pytest.mark.integration, scaled_timeout()]

#: One actor takes about a minute over the burst (about 300 events/s on 2 cores: most of a
#: batch's events supersede others of the same document), more than a second actor takes to be
#: added, load its model and join (10-75 s): the two must serve while events wait.
DOCUMENTS, BURST = scaled(150, 600), scaled(16_000, 60_000)
#: Published to the shrunk group, under one actor's share of lag: its rebalance must not have
#: cost an event either.
AFTERWARDS = 60


@dataclass(frozen=True)
class Reading:
    """The group's size as the API reads it from the stats topic, and the lag read just after."""

    actual: int
    desired: int
    lag: int


class GroupWatch:
    """Reads what an operator sees: the controller's published counts, then the broker's lag."""

    def __init__(self, settings: Settings, stats: StatsTail, lag: LagReader) -> None:
        self._settings = settings
        self._stats = stats
        self._lag = lag
        self.readings: list[Reading] = []

    async def read(self) -> Reading | None:
        report = self._stats.scaling.get(self._settings.consumer_group)
        if report is None:
            return None
        partitions = await self._lag.read(self._settings.events_topic, self._settings.consumer_group)
        self.readings.append(Reading(report.actual, report.desired, sum(p.lag for p in partitions)))
        return self.readings[-1]

    async def until(self, wanted, what: str, timeout: float) -> Reading:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reading = await self.read()
            if reading is not None and wanted(reading):
                return reading
            await asyncio.sleep(0.5)
        raise AssertionError(f"{what}: not seen in {timeout:.0f}s; last readings {self.readings[-5:]}")


def scaling_settings(namespace: str, kafka_broker, chroma_server, **overrides) -> Settings:
    """A fault scenario's settings for a group scaled between 1 and 2 actors."""
    return fault_settings(
        namespace,
        kafka_broker.bootstrap_servers,
        chroma_server.port,
        consumers_min=1,
        consumers_max=2,
        **overrides,
    )


@contextlib.asynccontextmanager
async def scaled_group(scenario, **controller_options) -> AsyncIterator[tuple[ConsumerGroup, GroupWatch]]:
    """The scenario's consumers started at their minimum, with a controller scaling them."""
    settings = scenario.settings
    await ensure_topics(settings)
    most = settings.consumers_max
    group = scenario.group = ConsumerGroup(settings, settings.consumers_min, most=most)  # stopped with it
    await asyncio.to_thread(group.start)
    await asyncio.to_thread(group.wait_ready)
    stop = threading.Event()
    controller = asyncio.create_task(ScalingController(settings, group, **controller_options).run(stop))
    try:
        async with (
            StatsTail(settings.kafka, settings.stats_topic) as stats,
            LagReader(settings.kafka) as lag,
        ):
            yield group, GroupWatch(settings, stats, lag)
    finally:
        stop.set()
        await controller


async def until_threads(group: ConsumerGroup, wanted: list[int], timeout: float = 30) -> None:
    """Wait until the members embed with ``wanted`` torch threads each (the controller shares a
    node's cores among its serving members every round)."""
    deadline = time.monotonic() + timeout
    while True:
        threads = await asyncio.to_thread(
            lambda: ray.get([actor.threads.remote() for actor in group.actors], timeout=60)
        )
        if threads == wanted:
            return
        assert time.monotonic() < deadline, f"members embed with {threads} threads, not {wanted}"
        await asyncio.sleep(0.5)


async def test_a_backlog_grows_the_group_to_its_max_and_the_drained_group_shrinks_back(
    kafka_broker, chroma_server, module_namespace, scenario_factory
):
    # Short timers: a step needs 2 s of lag, a shrink 4 s of quiet, and steps are 6 s apart.
    settings = scaling_settings(
        module_namespace,
        kafka_broker,
        chroma_server,
        consumer_lag_per_actor=100,
        consumer_activation_lag=20,
        consumer_scale_up_after_s=2,
        consumer_scale_down_after_s=4,
        consumer_scale_cooldown_s=6,
        # The default: the members share the cores (the fault scenarios fix one thread each).
        torch_threads=0,
    )
    scenario = scenario_factory(settings)
    cores = os.cpu_count() or 1
    async with scaled_group(scenario, interval_s=1) as (group, watch):
        await watch.until(lambda r: r.actual == 1, "one actor serving before the burst", timeout=60)
        # Alone, the member embeds with every core, not with its share at the group's most.
        await until_threads(group, [cores])

        await scenario.publish(event_stream(11, DOCUMENTS, BURST, "scaling"), slice_size=500, pause=0)
        grown = await watch.until(lambda r: r.actual == 2, "the group grown to 2 actors", timeout=180)
        # Read after the report of 2 serving actors: they served while events were waiting.
        assert grown.lag > 0, "the group grew only after the backlog had drained"
        assert grown.desired == 2
        await until_threads(group, [max(1, cores // 2)] * 2)

        await scenario.drain()
        await watch.until(lambda r: r.actual == 1 and r.lag == 0, "the drained group at 1", timeout=120)
        assert len(group.actors) == 1
        await until_threads(group, [cores])

        await scenario.publish(event_stream(12, DOCUMENTS, AFTERWARDS, "after-scaling"), slice_size=100)
        await scenario.assert_index_matches_oracle()
        assert max(r.actual for r in watch.readings) == 2


async def test_a_killed_actor_is_not_serving_until_ray_restarts_it_and_is_not_replaced_meanwhile(
    kafka_broker, chroma_server, module_namespace, scenario_factory
):
    # Any step the controller wrongly wanted would be taken at once.
    settings = scaling_settings(
        module_namespace,
        kafka_broker,
        chroma_server,
        consumer_scale_up_after_s=0,
        consumer_scale_cooldown_s=0,
    )
    scenario = scenario_factory(settings)
    async with scaled_group(scenario, interval_s=1, answer_timeout_s=3) as (group, watch):
        await watch.until(lambda r: r.actual == 1, "one actor serving", timeout=60)
        pid: int = await asyncio.to_thread(lambda: ray.get(group.actors[0].pid.remote(), timeout=60))

        os.kill(pid, signal.SIGKILL)
        # Published at once, while no actor serves: under one actor's share, no second one is
        # called for, though the events wait until Ray has restarted the killed one.
        await scenario.publish(event_stream(13, DOCUMENTS, AFTERWARDS, "restart"), slice_size=100)
        counted_out = await watch.until(lambda r: r.actual == 0, "the killed actor counted out", timeout=60)
        await watch.until(lambda r: r.actual == 1 and r.desired == 1, "the actor restarted", timeout=180)

        assert len(group.actors) == 1
        await scenario.assert_index_matches_oracle()
    assert counted_out.lag > 0, (
        f"no event was waiting while the killed actor was counted out ({counted_out}): the scenario "
        "never had the controller see lag with no actor serving; publish more events (AFTERWARDS, "
        "kept under consumer_lag_per_actor)"
    )
