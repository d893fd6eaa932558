"""The dead-letter topic: events that cannot be indexed, kept byte for byte with the reason.

The record value is the original bytes, untouched, so a fixed event can be replayed as is; why it
failed and where it came from travel in headers (as Kafka Connect does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.topic_records import read_topic_records


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    error_class: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("ragstream.reason", self.reason.encode()),
            ("ragstream.error_class", self.error_class.encode()),
            ("ragstream.topic", self.topic.encode()),
            ("ragstream.partition", str(self.partition).encode()),
            ("ragstream.offset", str(self.offset).encode()),
            ("ragstream.failed_at", f"{time.time():.3f}".encode()),
        ]

    @classmethod
    def for_record(cls, record: Any, reason: str, error_class: str) -> DeadLetter:
        """The dead letter of a consumed record (an aiokafka ``ConsumerRecord``)."""
        return cls(
            reason, error_class, record.topic, record.partition, record.offset, record.key, record.value
        )

    @classmethod
    def from_headers(
        cls, headers: list[tuple[str, bytes]], key: bytes | None, value: bytes | None
    ) -> DeadLetter:
        found = {name.removeprefix("ragstream."): raw.decode() for name, raw in headers}
        return cls(
            reason=found.get("reason", ""),
            error_class=found.get("error_class", ""),
            topic=found.get("topic", ""),
            partition=int(found.get("partition", "-1")),
            offset=int(found.get("offset", "-1")),
            key=key,
            value=value,
        )


async def send_dead_letters(producer: AIOKafkaProducer, topic: str, letters: list[DeadLetter]) -> None:
    """Send and wait for every acknowledgement: the source offsets are committed only afterwards."""
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


async def read_dead_letters(bootstrap_servers: str, topic: str) -> list[StoredDeadLetter]:
    """Every record of the dead-letter topic, oldest first (reads to the end offsets, then stops)."""
    found = [
        StoredDeadLetter(
            r.partition, r.offset, r.timestamp, DeadLetter.from_headers(list(r.headers), r.key, r.value)
        )
        for r in await read_topic_records(bootstrap_servers, topic)
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
