"""When the replica's vector index may answer: only while it holds as many chunks as Chroma."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np

from query_api.vector_coverage import VectorCoverage
from query_api.vector_index import VectorChange, VectorIndex


class CountingCollection:
    """Chroma's ``count()``, answering the counts it is given, then the last one forever."""

    def __init__(self, *counts: int) -> None:
        self._counts = list(counts)

    async def count(self) -> int:
        return self._counts.pop(0) if len(self._counts) > 1 else self._counts[0]


def view_with(chunks: int) -> Any:
    index = VectorIndex()
    vectors = np.eye(chunks, 8, dtype=np.float32)
    index.apply([VectorChange(f"c{i}", False, vector) for i, vector in enumerate(vectors)])
    return SimpleNamespace(vectors=index, caught_up=True)


async def searchable_after(coverage: VectorCoverage, seconds: float) -> bool:
    async with coverage:
        await asyncio.sleep(seconds)
        return coverage.covers


async def test_the_replica_answers_once_it_holds_every_chunk_chroma_counts() -> None:
    coverage = VectorCoverage(view_with(3), CountingCollection(3), interval_s=0.05, retry_s=0.05)
    assert not coverage.covers  # before the first look
    assert await searchable_after(coverage, 0.2)


async def test_a_moment_when_chroma_holds_more_does_not_send_searches_to_it() -> None:
    # Deletes reach the chunk log before Chroma: for a moment Chroma counts one more.
    coverage = VectorCoverage(view_with(3), CountingCollection(3, 4, 3), interval_s=0.05, retry_s=0.2)
    async with coverage:
        await asyncio.sleep(0.01)  # the first look
        answered_here = []
        for _ in range(40):
            answered_here.append(coverage.covers)
            await asyncio.sleep(0.02)
    assert all(answered_here)


async def test_chroma_answers_while_it_holds_chunks_the_replica_lacks() -> None:
    assert not await searchable_after(
        VectorCoverage(view_with(3), CountingCollection(5), interval_s=0.05, retry_s=0.05), 0.2
    )
    assert not await searchable_after(
        VectorCoverage(view_with(3), CountingCollection(3, 5), interval_s=0.05, retry_s=0.05), 0.4
    )


async def test_without_a_replica_index_chroma_always_answers() -> None:
    view = SimpleNamespace(vectors=None, caught_up=True)
    assert not await searchable_after(VectorCoverage(view, CountingCollection(0)), 0.05)
