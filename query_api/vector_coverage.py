"""Whether this replica's vector index may answer: it must hold every chunk Chroma holds.

The consumers log each chunk before writing it to Chroma, so in a running pipeline the chunk
log holds all of Chroma and more. A collection filled some other way (or a log whose older
records were never written) would leave the replica's index short of chunks that Chroma
would find, silently. Comparing the two counts catches that: while Chroma holds more, Chroma
answers. A batch's deletes reach the log before Chroma, so Chroma may hold more for a moment
in a healthy pipeline too; only a shortfall seen twice in a row, ``retry_s`` apart, counts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from query_api.chunk_log_view import ChunkLogView
from query_api.vector_index import VectorIndex
from streams.background import BackgroundLoop

log = logging.getLogger(__name__)

__all__ = ["VectorCoverage"]


class VectorCoverage(BackgroundLoop):
    """``covers`` says whether the replica's vector index may answer (else Chroma answers)."""

    def __init__(
        self, view: ChunkLogView, collection: Any, *, interval_s: float = 30.0, retry_s: float = 2.0
    ) -> None:
        self._view = view
        self._collection = collection
        self._interval_s = interval_s
        self._retry_s = retry_s
        self._covers = False

    @property
    def covers(self) -> bool:
        vectors = self._view.vectors
        return vectors is not None and vectors.complete and self._view.caught_up and self._covers

    async def _run(self) -> None:
        while True:
            vectors = self._view.vectors
            if vectors is None:
                return
            if self._view.caught_up:
                await self._check(vectors)
            await asyncio.sleep(self._interval_s if self._covers else self._retry_s)

    async def _count(self) -> int | None:
        try:
            return int(await self._collection.count())
        except Exception as exc:  # noqa: BLE001
            # Blind: chromadb raises a bare Exception for an error status. The loop must outlive
            # Chroma being away (vector searches fail then either way) and keep its last answer.
            log.warning("could not count the chunks in Chroma: %s", exc)
            return None

    async def _check(self, vectors: VectorIndex) -> None:
        in_chroma = await self._count()
        if in_chroma is None:
            return
        covers = in_chroma <= vectors.num_vectors
        if self._covers and not covers:
            await asyncio.sleep(self._retry_s)
            in_chroma = await self._count()
            if in_chroma is None:
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
