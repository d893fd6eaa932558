"""Reading records back from the real broker: a partition's range of offsets, and where a group resumes."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas import Settings
from schemas.kafka_connection import KafkaConnection
from streams.lag import LagReader
from streams.topic_records import read_partition_range
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def one_partition_topic(bootstrap_servers: str) -> str:
    name = f"records-{uuid.uuid4().hex[:8]}"
    settings = Settings(bootstrap_servers=bootstrap_servers, events_topic=name, partitions=1)
    await ensure_topics(settings)
    return name


async def test_a_range_holds_exactly_its_records_in_order(kafka_broker):
    topic = await one_partition_topic(kafka_broker.bootstrap_servers)
    async with AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all") as producer:
        for i in range(20):
            await producer.send_and_wait(topic, value=f"event {i}".encode(), partition=0)

    records = await read_partition_range(KafkaConnection(kafka_broker.bootstrap_servers), topic, 0, 5, 12)
    assert [r.offset for r in records] == list(range(5, 12))
    assert [r.value for r in records] == [f"event {i}".encode() for i in range(5, 12)]
    # A range past the end stops at the end instead of waiting for records to come.
    tail = await read_partition_range(KafkaConnection(kafka_broker.bootstrap_servers), topic, 0, 18, 30)
    assert [r.offset for r in tail] == [18, 19]


async def test_offsets_that_hold_transaction_markers_read_as_nothing(kafka_broker):
    topic = await one_partition_topic(kafka_broker.bootstrap_servers)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers, transactional_id=f"tx-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        for batch in range(2):
            async with producer.transaction():
                for i in range(3):
                    await producer.send_and_wait(topic, value=f"{batch}.{i}".encode(), partition=0)
    finally:
        await producer.stop()

    records = await read_partition_range(KafkaConnection(kafka_broker.bootstrap_servers), topic, 0, 0, 8)
    # Each commit marker takes an offset of its own: 3 and 7.
    assert [(r.offset, r.value) for r in records] == [
        (0, b"0.0"), (1, b"0.1"), (2, b"0.2"), (4, b"1.0"), (5, b"1.1"), (6, b"1.2"),
    ]  # fmt: skip


async def test_a_group_resumes_at_its_committed_offset_else_at_the_first_record(kafka_broker):
    servers = kafka_broker.bootstrap_servers
    topic = await one_partition_topic(servers)
    group = f"group-{uuid.uuid4().hex[:8]}"
    async with AIOKafkaProducer(bootstrap_servers=servers, acks="all") as producer:
        for _ in range(6):
            await producer.send_and_wait(topic, value=b"x", partition=0)
    async with LagReader(KafkaConnection(servers)) as reader:
        assert await reader.resume_offset(topic, group, 0) == 0

        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=servers, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )  # fmt: skip
        await consumer.start()
        try:
            for _ in range(4):
                await consumer.getone()
            await consumer.commit()
        finally:
            await consumer.stop()
        assert await reader.resume_offset(topic, group, 0) == 4


class _StaleLagReader(LagReader):
    """Sees the topic's partitions as they were before it was deleted, once: the race between
    reading a topic's metadata and asking for its end offsets."""

    def __init__(self, *args, stale: list[TopicPartition], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stale: list[TopicPartition] | None = stale

    async def _partitions(self, admin, topic):
        stale, self._stale = self._stale, None
        return stale if stale is not None else await super()._partitions(admin, topic)


async def test_a_topic_deleted_while_its_end_offsets_are_read_reads_as_no_topic(kafka_broker):
    servers = kafka_broker.bootstrap_servers
    topic = await one_partition_topic(servers)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    stale = [TopicPartition(topic, 0)]
    kafka = KafkaConnection(servers)
    # Without the fix each call waited out the consumer's request timeout and raised KafkaTimeoutError.
    async with _StaleLagReader(kafka, stale=stale, request_timeout_ms=3000) as reader:
        assert await reader.end_offsets(topic) == {}
    async with _StaleLagReader(kafka, stale=stale, request_timeout_ms=3000) as reader:
        assert await reader.read(topic, "any-group") == []
