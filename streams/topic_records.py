"""Reading a topic back: whole, as it is at the moment, or a range of offsets of one partition."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.kafka_connection import KafkaConnection
from streams.kafka_clients import client_options
from streams.lag import topic_partitions

__all__ = ["read_partition_range", "read_topic_records"]


async def read_topic_records(kafka: KafkaConnection, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` as it is now, in partition then offset order, without a consumer
    group; an absent topic reads as empty (and is not created)."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        partitions = await topic_partitions(admin, topic)
    finally:
        await admin.close()
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found = await _read_until(consumer, await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()
    return sorted(found, key=lambda r: (r.partition, r.offset))


async def read_partition_range(
    kafka: KafkaConnection, topic: str, partition: int, start: int, stop: int
) -> list[ConsumerRecord]:
    """The records at offsets ``start`` ≤ offset < ``stop`` of one partition, in offset order.

    Offsets that hold no record (transaction markers, compacted away, past retention) are not
    there; an offset before the log's start reads from its start.
    """
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        **client_options(kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        # Never wait for offsets that do not exist yet.
        found = await _read_until(consumer, {tp: min(stop, (await consumer.end_offsets([tp]))[tp])})
    finally:
        await consumer.stop()
    return [r for r in found if start <= r.offset < stop]


async def _read_until(consumer: AIOKafkaConsumer, stops: dict[TopicPartition, int]) -> list[ConsumerRecord]:
    """What the assigned consumer reads from where it stands until each partition's position
    reaches its stop offset (the last fetch may bring records past it)."""
    found: list[ConsumerRecord] = []
    while [tp for tp, stop in stops.items() if await consumer.position(tp) < stop]:
        for records in (await consumer.getmany(*stops, timeout_ms=1000)).values():
            found.extend(records)
    return found
