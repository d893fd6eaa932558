"""Following the control topic on the real broker: absent, replayed, then followed."""

from __future__ import annotations

import asyncio

from schemas import Settings
from schemas.generations import ACTIVE_KEY, ActiveGeneration, Generation, IndexShape, generation_key
from streams.control import ControlFollower, publish_control, read_control_state
from streams.topics import ensure_topics


def _settings(kafka_broker, namespace: str) -> Settings:
    return Settings(bootstrap_servers=kafka_broker.bootstrap_servers).namespaced(namespace)


async def test_without_the_topic_generation_zero_is_active_at_once(kafka_broker, module_namespace) -> None:
    settings = _settings(kafka_broker, f"{module_namespace}-absent")
    follower = ControlFollower(settings, start_timeout_s=30)
    started = asyncio.get_running_loop().time()
    async with follower:
        assert asyncio.get_running_loop().time() - started < 10
        assert follower.state.roles() == {0: "active"}
    assert (await read_control_state(settings)).roles() == {0: "active"}


async def test_a_follower_replays_what_was_written_and_then_sees_each_new_record(
    kafka_broker, module_namespace
) -> None:
    settings = _settings(kafka_broker, f"{module_namespace}-follow")
    await ensure_topics(settings)
    one = Generation(1, IndexShape(settings.model, 400, 40, settings.precision), 5.0)
    await publish_control(
        settings,
        [(generation_key(0), Generation.base(settings).to_json()), (generation_key(1), one.to_json())],
    )
    async with ControlFollower(settings) as follower:
        assert follower.state.roles() == {0: "active", 1: "building"}
        assert follower.state.building() == one
        await publish_control(settings, [(ACTIVE_KEY, ActiveGeneration(1, 0, 6.0).to_json())])
        for _ in range(20):
            if follower.state.active.generation == 1:
                break
            await follower.wait_changed(timeout=1.0)
        assert follower.state.roles() == {0: "kept", 1: "active"}
        await publish_control(settings, [(generation_key(0), None)])
        for _ in range(20):
            if 0 not in follower.state.generations:
                break
            await follower.wait_changed(timeout=1.0)
        assert follower.state.roles() == {1: "active"}
    # A reader that comes later folds the same records into the same state.
    assert (await read_control_state(settings)).roles() == {1: "active"}
