"""Reading a topic back whole: every record from the first to the end offsets of the moment."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient

from streams.lag import topic_partitions

__all__ = ["read_topic_records"]


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
