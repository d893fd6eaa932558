"""The bounded hand-off between the fetch task and the indexing worker."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition


@dataclass(frozen=True, slots=True)
class FetchedBatch:
    generation: int
    batch: dict[TopicPartition, list[ConsumerRecord]]
    size_bytes: int


class FetchQueue:
    """Full at ``max_batches`` batches or ``max_bytes`` of record values, whichever comes first.

    The fetcher checks ``full()`` before polling and pauses its partitions instead of blocking,
    so Kafka keeps being polled (no ``max.poll.interval`` expiry) while memory stays bounded.
    """

    def __init__(self, max_batches: int, max_bytes: int) -> None:
        self._max_batches = max_batches
        self._max_bytes = max_bytes
        self._items: deque[FetchedBatch] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()

    def full(self) -> bool:
        return len(self._items) >= self._max_batches or self._bytes >= self._max_bytes

    def put(self, generation: int, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        size = sum(len(r.value or b"") for records in batch.values() for r in records)
        self._items.append(FetchedBatch(generation, batch, size))
        self._bytes += size
        self._ready.set()

    async def get(self, timeout: float) -> FetchedBatch | None:
        """The oldest batch, or None if none arrives within ``timeout`` seconds."""
        if not self._items:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        item = self._items.popleft()
        self._bytes -= item.size_bytes
        return item

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes
