"""Reading the feedback topic back, from its first record to the end offsets of the moment."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from schemas.feedback import FeedbackEvent, InvalidFeedback
from streams.lag import topic_partitions

__all__ = ["FeedbackLog", "read_feedback"]

log = logging.getLogger(__name__)


@dataclass
class FeedbackLog:
    """Every valid record, oldest first, and the reason for each record that was not."""

    events: list[FeedbackEvent] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


async def read_feedback(bootstrap_servers: str, topic: str) -> FeedbackLog:
    """The whole topic as it is now; an absent topic reads as empty (and is not created)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        partitions = await topic_partitions(admin, topic)
    finally:
        await admin.close()
    found = FeedbackLog()
    if not partitions:
        return found
    stamped: list[tuple[float, int, int, FeedbackEvent]] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    try:
                        event = FeedbackEvent.from_json(record.value or b"")
                    except InvalidFeedback as exc:
                        # Counted and reported by the caller: a bad record must not pass unseen.
                        where = f"{record.topic}[{record.partition}]@{record.offset}"
                        log.warning("skipped feedback %s: %s", where, exc.reason)
                        found.unreadable.append(f"{where}: {exc.reason}")
                        continue
                    stamped.append((event.created_at, record.partition, record.offset, event))
    finally:
        await consumer.stop()
    found.events = [event for *_, event in sorted(stamped, key=lambda s: s[:3])]
    return found
