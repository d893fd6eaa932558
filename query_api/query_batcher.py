"""Query embedding for concurrent searches: one thread of its own, every waiting query at once.

Each search needs its query's vector. Encoding them one per request on a shared thread pool
lets several run at the same time, each using every core, and on a small machine they slow
each other down. Here one thread encodes, and the queries that arrived while it was busy go
together into its next call (``batching.OneThreadBatcher``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from query_api.batching import OneThreadBatcher

__all__ = ["QueryBatcher", "TextEncoder"]


class TextEncoder(Protocol):
    """What a query embedder offers: ``consumers.Embedder`` (torch) or ``OnnxEmbedder``."""

    dimension: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class QueryBatcher:
    """``await embed(query)`` → its L2-normalised vector, shape ``(1, dimension)``."""

    def __init__(self, encoder: TextEncoder, max_batch: int = 32) -> None:
        self.encoder = encoder
        self._batcher: OneThreadBatcher[str, np.ndarray] = OneThreadBatcher(
            self._encode, max_batch, name="query embedding"
        )

    async def embed(self, query: str) -> np.ndarray:
        return await self._batcher.submit(query)

    async def close(self) -> None:
        """Stop encoding; queries still waiting fail. Safe to call twice."""
        await self._batcher.close()

    def _encode(self, queries: list[str]) -> list[np.ndarray]:
        # The same query asked twice at once (a page and the next, a retry) is encoded once.
        texts = list(dict.fromkeys(queries))
        vectors = self.encoder.encode(texts)
        row = {text: index for index, text in enumerate(texts)}
        return [vectors[row[query] : row[query] + 1] for query in queries]
