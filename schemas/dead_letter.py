"""The dead letter: an event that cannot be indexed, kept byte for byte with the reason.

The record value is the original bytes, untouched, so a fixed event can be replayed as is; why it
failed and where it came from travel in headers (as Kafka Connect does). Written by the changes
stage and the consumers, read by ``ragstream dlq`` and the API's status.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


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
