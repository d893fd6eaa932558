"""Reading the feedback topic back, from its first record to the end offsets of the moment."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from schemas.feedback import FeedbackEvent, InvalidFeedback
from schemas.kafka_connection import KafkaConnection
from streams.topic_records import read_topic_records

__all__ = ["FeedbackLog", "read_feedback"]

log = logging.getLogger(__name__)


@dataclass
class FeedbackLog:
    """Every valid record, oldest first, and the reason for each record that was not."""

    events: list[FeedbackEvent] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


async def read_feedback(kafka: KafkaConnection, topic: str) -> FeedbackLog:
    """The whole topic as it is now; an absent topic reads as empty (and is not created)."""
    found = FeedbackLog()
    stamped: list[tuple[float, int, int, FeedbackEvent]] = []
    for record in await read_topic_records(kafka, topic):
        try:
            event = FeedbackEvent.from_json(record.value or b"")
        except InvalidFeedback as exc:
            # Counted and reported by the caller: a bad record must not pass unseen.
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            log.warning("skipped feedback %s: %s", where, exc.reason)
            found.unreadable.append(f"{where}: {exc.reason}")
            continue
        stamped.append((event.created_at, record.partition, record.offset, event))
    found.events = [event for *_, event in sorted(stamped, key=lambda s: s[:3])]
    return found
