"""Reading a topic back: whole, as it is at the moment, or a range of offsets of one partition."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.lag import topic_partitions

__all__ = ["read_partition_range", "read_topic_records"]


async def read_topic_records(bootstrap_servers: str, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` as it is now, in partition then offset order, without a consumer
    group; an absent topic reads as empty (and is not created)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        partitions = await topic_partitions(admin, topic)
    finally:
        await admin.close()
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[ConsumerRecord] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found.extend(records)
    finally:
        await consumer.stop()
    return sorted(found, key=lambda r: (r.partition, r.offset))


async def read_partition_range(
    bootstrap_servers: str, topic: str, partition: int, start: int, stop: int
) -> list[ConsumerRecord]:
    """The records at offsets ``start`` ≤ offset < ``stop`` of one partition, in offset order.

    Offsets that hold no record (transaction markers, compacted away, past retention) are not
    there; an offset before the log's start reads from its start.
    """
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        # Never wait for offsets that do not exist yet.
        stop = min(stop, (await consumer.end_offsets([tp]))[tp])
        found: list[ConsumerRecord] = []
        while await consumer.position(tp) < stop:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                found.extend(r for r in records if r.offset < stop)
    finally:
        await consumer.stop()
    return [r for r in found if r.offset >= start]
