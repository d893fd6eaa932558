"""Searches of the replica's vector index from the event loop: one thread, waiting ones together.

A search takes ~1 ms of CPU and the index's lock. Sent one per request to a thread pool, 32
concurrent searches are 32 threads queueing on that lock, each woken in turn; here one thread
searches, and the searches that arrived while it was busy go into its next call
(``batching.OneThreadBatcher``), as the query embedding does.
"""

from __future__ import annotations

import numpy as np

from query_api.batching import OneThreadBatcher
from query_api.lexical import RankedChunk
from query_api.vector_index import VectorIndex

__all__ = ["LocalNearest"]


_Query = tuple[np.ndarray, int, str | None]


class LocalNearest:
    """``await nearest(vector, k, tenant)`` → ``index.nearest`` for that one row; raises what it raises."""

    def __init__(self, index: VectorIndex, max_batch: int = 32) -> None:
        self.index = index
        # A batch shares its depth and its index (the whole one, or one tenant's).
        self._batcher: OneThreadBatcher[_Query, list[RankedChunk]] = OneThreadBatcher(
            self._search, max_batch, key=lambda query: query[1:], name="vector search"
        )

    async def nearest(self, vector: np.ndarray, k: int, tenant: str | None = None) -> list[RankedChunk]:
        return await self._batcher.submit((np.asarray(vector, dtype=np.float32).reshape(-1), k, tenant))

    async def close(self) -> None:
        """Stop searching; searches still waiting fail. Safe to call twice."""
        await self._batcher.close()

    def _search(self, queries: list[_Query]) -> list[list[RankedChunk]]:
        rows = np.stack([vector for vector, _, _ in queries])
        _, k, tenant = queries[0]
        return self.index.nearest(rows, k, tenant)
