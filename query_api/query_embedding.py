"""Query embedding for concurrent searches: one thread of its own, every waiting query at once.

Each search needs its query's vector. Encoding them one per request on a shared thread pool
lets several run at the same time, each using every core, and on a small machine they slow
each other down. Here one thread encodes, and the queries that arrived while it was busy go
together into its next call (``micro_batching.OneThreadBatcher``).

A search that the replica's own vector index answers (``vector_index.py``) is searched there by
the same thread, straight after its query is embedded: the search comes back to the event loop
once instead of twice, and under load every return to the loop waits for the loop to be free
and for the GIL.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Protocol

import numpy as np

from query_api.lexical import RankedChunk
from query_api.micro_batching import OneThreadBatcher
from query_api.vector_index import VectorIndex, VectorSearchFailed

__all__ = ["QueryBatcher", "ReplicaNearest", "TextEncoder"]


class TextEncoder(Protocol):
    """What a query embedder offers: ``consumers.Embedder`` (torch) or ``OnnxEmbedder``."""

    dimension: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class ReplicaNearest(NamedTuple):
    """A query's vector and its nearest chunks in the replica's index (None: the index could not
    answer, see ``VectorSearchFailed``), and the milliseconds the search took on the thread."""

    vector: np.ndarray
    chunks: list[RankedChunk] | None
    search_ms: float


class _Ask(NamedTuple):
    query: str
    #: The replica's search to run after embedding, as (k, tenant); None = the vector only.
    search: tuple[int, str | None] | None = None


class QueryBatcher:
    """``await embed(query)`` → its L2-normalised vector, shape ``(1, dimension)``;
    ``await nearest(query, k, tenant)`` → that vector and its nearest chunks in ``index``."""

    def __init__(self, encoder: TextEncoder, max_batch: int = 32, index: VectorIndex | None = None) -> None:
        self.encoder = encoder
        self.index = index
        self._batcher: OneThreadBatcher[_Ask, ReplicaNearest] = OneThreadBatcher(
            self._run, max_batch, name="query embedding"
        )

    async def embed(self, query: str) -> np.ndarray:
        return (await self._batcher.submit(_Ask(query))).vector

    async def nearest(self, query: str, k: int, tenant: str | None = None) -> ReplicaNearest:
        """The query's vector and its ``k`` nearest chunks (of ``tenant`` only, if given) in the
        replica's index; ``chunks`` is None when that index could not answer."""
        if self.index is None:
            raise RuntimeError("this batcher has no vector index to search")
        return await self._batcher.submit(_Ask(query, (k, tenant)))

    async def close(self) -> None:
        """Stop encoding; queries still waiting fail. Safe to call twice."""
        await self._batcher.close()

    def _run(self, asks: list[_Ask]) -> list[ReplicaNearest]:
        # The same query asked twice at once (a page and the next, a retry) is encoded once.
        texts = list(dict.fromkeys(ask.query for ask in asks))
        vectors = self.encoder.encode(texts)
        row = {text: index for index, text in enumerate(texts)}
        found: dict[int, list[RankedChunk] | None] = {}
        search_ms: dict[tuple[int, str | None], float] = {}
        # One search call per depth and tenant: each is a graph of its own, or a k of its own.
        groups: dict[tuple[int, str | None], list[int]] = {}
        for position, ask in enumerate(asks):
            if ask.search is not None:
                groups.setdefault(ask.search, []).append(position)
        for (k, tenant), positions in groups.items():
            started = time.perf_counter()
            rows = vectors[[row[asks[position].query] for position in positions]]
            assert self.index is not None
            try:
                results: list[list[RankedChunk] | None] = list(self.index.nearest(rows, k, tenant))
            except VectorSearchFailed:
                results = [None] * len(positions)  # Chroma's graph answers these instead
            found.update(zip(positions, results, strict=True))
            search_ms[(k, tenant)] = (time.perf_counter() - started) * 1000
        return [
            ReplicaNearest(
                vectors[row[ask.query] : row[ask.query] + 1],
                found.get(position),
                search_ms.get(ask.search, 0.0) if ask.search is not None else 0.0,
            )
            for position, ask in enumerate(asks)
        ]
