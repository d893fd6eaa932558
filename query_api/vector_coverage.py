"""Whether this replica's vector index may answer: it must hold every chunk Chroma holds.

The consumers log each chunk before writing it to Chroma, so in a running pipeline the chunk
log holds all of Chroma and more. A collection filled some other way (or a log whose older
records were never written) would leave the replica's index short of chunks that Chroma
would find, silently. Comparing the two counts catches that; while Chroma holds more (also
for a moment while a batch's deletes reach the log before Chroma), Chroma answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from query_api.background import BackgroundLoop
from query_api.chunk_log_view import ChunkLogView
from query_api.vector_index import VectorIndex

log = logging.getLogger(__name__)

__all__ = ["VectorCoverage"]


class VectorCoverage(BackgroundLoop):
    """``searchable`` is the replica's vector index when it may answer, else None (ask Chroma)."""

    def __init__(
        self,
        view: ChunkLogView,
        collection: Any,
        *,
        interval_s: float = 30.0,
        retry_s: float = 2.0,
    ) -> None:
        self._view = view
        self._collection = collection
        self._interval_s = interval_s
        self._retry_s = retry_s
        self._covers = False

    @property
    def searchable(self) -> VectorIndex | None:
        vectors = self._view.vectors
        if vectors is None or not self._view.caught_up or not vectors.complete or not self._covers:
            return None
        return vectors

    async def _run(self) -> None:
        while True:
            vectors = self._view.vectors
            if vectors is None:
                return
            if self._view.caught_up:
                await self._check(vectors)
            await asyncio.sleep(self._interval_s if self._covers else self._retry_s)

    async def _check(self, vectors: VectorIndex) -> None:
        try:
            in_chroma = await self._collection.count()
        except Exception as exc:  # Chroma unreachable: vector searches fail either way
            log.warning("could not count the chunks in Chroma: %s", exc)
            return
        covers = in_chroma <= vectors.num_vectors
        if covers != self._covers:
            if covers:
                log.info(
                    "vector searches answered here: %d vectors, %d chunks in Chroma",
                    vectors.num_vectors,
                    in_chroma,
                )
            else:
                log.info(
                    "vector searches go to Chroma: it holds %d chunks, this replica's index %d",
                    in_chroma,
                    vectors.num_vectors,
                )
        self._covers = covers
