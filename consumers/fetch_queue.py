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

    async def get(self) -> FetchedBatch:
        """Every queued batch of the oldest one's generation, merged into one; waits for one if
        none is queued (bound the wait with ``asyncio.timeout``).

        A burst of edits reaches the fetcher over a second or two and is queued as several small
        batches; planned one by one, each would pay a batch's fixed costs (the index read, a
        Chroma write, a commit). Merged, they are planned and written once. The first batch is
        never held back waiting for more: only what is already queued is merged.
        """
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        # Nothing awaited from here on: a timeout that ends the wait never loses a batch.
        merged = self._pop()
        while self._items and self._items[0].generation == merged.generation:
            merged = _merge(merged, self._pop())
        return merged

    def _pop(self) -> FetchedBatch:
        item = self._items.popleft()
        self._bytes -= item.size_bytes
        return item

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes


def _merge(first: FetchedBatch, second: FetchedBatch) -> FetchedBatch:
    """``second`` was fetched after ``first``: each partition's records stay in offset order."""
    batch = {tp: list(records) for tp, records in first.batch.items()}
    for tp, records in second.batch.items():
        batch.setdefault(tp, []).extend(records)
    return FetchedBatch(first.generation, batch, first.size_bytes + second.size_bytes)
