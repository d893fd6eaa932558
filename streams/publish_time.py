"""When an event was published: the timestamp of its record on the events topic.

The changes stage writes a record of its own for every event it passes on, stamped when the
stage wrote it. So that the consumers can still tell how long an event took from publication to
the index, the stage copies the event's timestamp into a header of that record; a consumer reads
the header, or, on a record without it (the events topic itself, read directly with
``RAGSTREAM_CONSUMER_INPUT=events``, or a changes record written before the header existed), the
record's own timestamp.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PUBLISHED_AT_HEADER", "published_at", "published_at_header"]

#: Unix seconds with three decimals, as text (like the dead letters' ``ragstream.failed_at``).
PUBLISHED_AT_HEADER = "ragstream.published_at"


def published_at_header(seconds: float) -> tuple[str, bytes]:
    """The header that carries an event's publication time on to the changes topic."""
    return PUBLISHED_AT_HEADER, f"{seconds:.3f}".encode()


def published_at(record: Any) -> float | None:
    """Unix seconds at which the event of an aiokafka ``ConsumerRecord`` was published; None when
    the record has no timestamp (Kafka gives -1) and no readable header."""
    for name, value in record.headers or ():
        if name == PUBLISHED_AT_HEADER:
            try:
                return float(value)
            except ValueError:
                break  # not ours after all: the record's timestamp is the next best
    timestamp: int | None = record.timestamp
    return timestamp / 1000 if timestamp is not None and timestamp >= 0 else None
