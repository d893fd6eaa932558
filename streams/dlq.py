"""The dead-letter topic: sending dead letters, reading them back, and filtering them.

The record format (the original bytes, the reason in headers) is schemas.dead_letter's.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from schemas.dead_letter import DeadLetter
from schemas.kafka_connection import KafkaConnection
from streams.errors import broker_calls
from streams.topic_records import read_topic_records

__all__ = ["StoredDeadLetter", "matches", "read_dead_letters", "send_dead_letters"]


async def send_dead_letters(producer: AIOKafkaProducer, topic: str, letters: list[DeadLetter]) -> None:
    """Send and wait for every acknowledgement: the source offsets are committed only afterwards.

    A Kafka failure is raised as a ``StreamsError`` (``RecordRejected`` for a letter the topic refuses).
    """
    with broker_calls(f"sending {len(letters)} dead letter(s) to {topic}"):
        pending = [
            await producer.send(topic, value=letter.value, key=letter.key, headers=letter.headers())
            for letter in letters
        ]
        for delivery in pending:
            await delivery


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    letter: DeadLetter


async def read_dead_letters(kafka: KafkaConnection, topic: str) -> list[StoredDeadLetter]:
    """Every record of the dead-letter topic, oldest first (reads to the end offsets, then stops)."""
    found = [
        StoredDeadLetter(
            r.partition, r.offset, r.timestamp, DeadLetter.from_headers(list(r.headers), r.key, r.value)
        )
        for r in await read_topic_records(kafka, topic)
    ]
    return sorted(found, key=lambda s: (s.timestamp_ms, s.partition, s.offset))


def matches(letter: DeadLetter, conditions: list[str]) -> bool:
    """``field=value`` (exact) or ``field~text`` (contains) on reason, error_class, key, topic,
    partition or offset; every condition must hold."""
    for condition in conditions:
        field_name, op, wanted = _parse_condition(condition)
        value = getattr(letter, field_name)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        actual = "" if value is None else str(value)
        if (op == "=" and actual != wanted) or (op == "~" and wanted not in actual):
            return False
    return True


_FIELDS = ("reason", "error_class", "key", "topic", "partition", "offset")


def _parse_condition(condition: str) -> tuple[str, str, str]:
    for op in ("~", "="):
        name, sep, wanted = condition.partition(op)
        if sep and name.strip() in _FIELDS:
            return name.strip(), op, wanted
    raise ValueError(
        f"cannot read condition {condition!r}: use FIELD=VALUE or FIELD~TEXT with FIELD in {_FIELDS}"
    )
