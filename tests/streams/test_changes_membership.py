"""Removing a stage worker's static membership from its group, on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from schemas import Settings
from schemas.kafka_connection import KafkaConnection
from streams.changes.membership import remove_static_member, remove_static_member_or_log
from streams.topics import ensure_topics

#: Far longer than the test waits for the rebalance: only the removal can have caused it.
SESSION_TIMEOUT_MS = 60_000


def static_member(bootstrap_servers: str, topic: str, group: str, instance: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        group_instance_id=instance,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        request_timeout_ms=SESSION_TIMEOUT_MS + 5_000,
        heartbeat_interval_ms=500,
        enable_auto_commit=False,
    )


async def until_holding(consumer: AIOKafkaConsumer, count: int, timeout: float) -> None:
    """Until the group has given ``consumer`` ``count`` partitions."""
    deadline = time.monotonic() + timeout
    while len(consumer.assignment()) != count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"holding {consumer.assignment()}, not {count} partitions, after {timeout} s")
        # Polling is what lets the consumer take part in its group's rebalances.
        await consumer.getmany(timeout_ms=200)


@pytest.mark.integration
async def test_a_removed_static_member_hands_its_partitions_to_the_other_before_its_session_expires(
    kafka_broker,
):
    servers = kafka_broker.bootstrap_servers
    topic, group = f"membership-{uuid.uuid4().hex[:8]}", f"membership-{uuid.uuid4().hex[:8]}"
    await ensure_topics(Settings(bootstrap_servers=servers, events_topic=topic, partitions=2))
    dead, survivor = (static_member(servers, topic, group, name) for name in ("dead", "survivor"))
    await dead.start()
    await survivor.start()
    try:
        await asyncio.gather(until_holding(dead, 1, 60), until_holding(survivor, 1, 60))
        # A static member sends no LeaveGroup when it stops: to the group it is a process that died.
        await dead.stop()

        assert await remove_static_member(KafkaConnection(servers), group, "dead") is True
        await until_holding(survivor, 2, timeout=SESSION_TIMEOUT_MS / 1000 / 2)
        assert (
            await remove_static_member(KafkaConnection(servers), group, "dead") is False
        )  # no longer a member
    finally:
        with contextlib.suppress(Exception):
            await dead.stop()
        await survivor.stop()


def test_a_removal_without_a_broker_is_logged_and_left_to_the_session_timeout(caplog):
    caplog.set_level(logging.WARNING)
    remove_static_member_or_log(KafkaConnection("127.0.0.1:1"), "a-group", "a-worker")
    assert "could not remove a-worker from a-group" in caplog.text
