"""Query embedding for concurrent searches: one thread of its own, every waiting query at once.

Each search needs its query's vector. Encoding them one per request on a shared thread pool
lets several run at the same time, each using every core, and on a small machine they slow
each other down. Here one thread encodes, and the queries that arrived while it was busy go
together into its next call: one model call for many queries costs less than one each, and
latency under load is a batch's time, not a queue of single calls.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["QueryBatcher", "TextEncoder"]


class TextEncoder(Protocol):
    """What a query embedder offers: ``consumers.Embedder`` (torch) or ``OnnxEmbedder``."""

    dimension: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class QueryBatcher:
    """``await embed(query)`` → its L2-normalised vector, shape ``(1, dimension)``."""

    def __init__(self, encoder: TextEncoder, max_batch: int = 32) -> None:
        self.encoder = encoder
        self._max_batch = max_batch
        self._waiting: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-embed")
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def embed(self, query: str) -> np.ndarray:
        if self._closed:
            raise RuntimeError("the query batcher is closed")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.append((query, future))
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._encode_waiting(), name="query-embed")
        return await future

    async def close(self) -> None:
        """Stop encoding; queries still waiting fail. Safe to call twice."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for _, future in self._waiting:
            if not future.done():
                future.set_exception(RuntimeError("the query batcher closed"))
        self._waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _encode_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
                # A request that gave up (client gone, timeout) costs nothing more.
                batch = [(query, future) for query, future in batch if not future.done()]
                # The same query asked twice at once (a page and the next, a retry) is encoded once.
                texts = list(dict.fromkeys(query for query, _ in batch))
                if not texts:
                    continue
                try:
                    vectors = await loop.run_in_executor(self._executor, self.encoder.encode, texts)
                except Exception as exc:
                    log.exception("encoding %d queries failed", len(texts))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                row = {text: index for index, text in enumerate(texts)}
                for query, future in batch:
                    if not future.done():
                        index = row[query]
                        future.set_result(vectors[index : index + 1])
