"""Waiting until a consumer group has committed everything published to its topic."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.drain import DrainTimeout, wait_drained
from schemas import DocumentEvent, EventOp, Settings
from streams.hops import Hop
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def published_settings(bootstrap_servers: str, events: int) -> Settings:
    """Settings whose consumers read the events topic, a new one of two partitions holding ``events``
    events."""
    settings = Settings(bootstrap_servers=bootstrap_servers, partitions=2, consumer_input="events")
    settings = settings.namespaced(f"drain-{uuid.uuid4().hex[:8]}")
    await ensure_topics(settings)
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        await publisher.publish_many(
            DocumentEvent(doc_id=f"d{i}", op=EventOp.UPSERT, content=f"text {i}") for i in range(events)
        )
    return settings


async def commit_everything(settings: Settings) -> None:
    """Commit the end offset of every partition, as the group's consumers would once done."""
    servers, group = settings.bootstrap_servers, settings.consumer_group
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.events_topic, p) for p in (0, 1)]
        consumer.assign(partitions)
        await consumer.commit(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def test_the_wait_ends_once_the_group_has_committed_every_published_event(kafka_broker):
    settings = await published_settings(kafka_broker.bootstrap_servers, 5)
    readings = []
    waiting = asyncio.create_task(wait_drained(settings, timeout=60, poll_s=0.1, on_lag=readings.append))
    await asyncio.sleep(1)
    assert not waiting.done()

    await commit_everything(settings)
    last = await asyncio.wait_for(waiting, 30)

    assert [hop.hop.topic for hop in last] == [settings.events_topic]
    assert sum(p.committed or 0 for p in last[0].partitions) == 5
    assert readings[0][0].lag == 5 and readings[-1] == last


async def test_a_group_that_never_commits_times_out_saying_what_is_pending(kafka_broker):
    settings = await published_settings(kafka_broker.bootstrap_servers, 3)
    hop = Hop("indexer", settings.events_topic, settings.consumer_group)

    with pytest.raises(DrainTimeout) as raised:
        await wait_drained(settings, hops=[hop], timeout=1, poll_s=0.2)

    message = str(raised.value)
    assert settings.events_topic in message and settings.consumer_group in message
    assert "committed nothing of" in message
    assert isinstance(raised.value, TimeoutError)


async def test_a_topic_that_does_not_exist_is_not_drained(kafka_broker):
    settings = Settings(bootstrap_servers=kafka_broker.bootstrap_servers)
    hop = Hop("indexer", f"missing-{uuid.uuid4().hex[:8]}", "nobody")

    with pytest.raises(DrainTimeout, match="the topic does not exist"):
        await wait_drained(settings, hops=[hop], timeout=0.5, poll_s=0.1)


async def test_a_failing_check_ends_the_wait_with_its_error(kafka_broker):
    settings = await published_settings(kafka_broker.bootstrap_servers, 2)

    def check() -> None:
        raise RuntimeError("a consumer stopped without being asked to")

    with pytest.raises(RuntimeError, match="a consumer stopped"):
        await wait_drained(settings, timeout=60, check=check)
