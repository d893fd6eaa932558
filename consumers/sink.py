"""The Chroma sink: the only place that writes chunks, so its writes are the ones to keep idempotent."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from chromadb.api.models.AsyncCollection import AsyncCollection

from consumers.errors import chroma_calls
from engines.chroma import open_collection
from engines.chroma_client import open_chroma
from schemas.settings_groups import ChromaSettings

log = logging.getLogger(__name__)

Metadata = dict[str, str | int | float | bool | None]


@dataclass
class ChunkChanges:
    """Everything one batch changes in the index, applied as upsert → update → delete."""

    new_ids: list[str] = field(default_factory=list)
    new_texts: list[str] = field(default_factory=list)
    new_metadatas: list[Metadata] = field(default_factory=list)
    new_embeddings: np.ndarray | None = None
    updated_ids: list[str] = field(default_factory=list)
    updated_texts: list[str] = field(default_factory=list)
    updated_metadatas: list[Metadata] = field(default_factory=list)
    #: The unchanged vectors of the updated chunks, read back for the chunk log (Chroma keeps its own).
    updated_embeddings: np.ndarray | None = None
    deleted_ids: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.new_ids or self.updated_ids or self.deleted_ids)


class ChromaSink:
    """Reads and writes a batch's chunks; every Chroma failure is raised as an ``IndexingError``."""

    def __init__(self, settings: ChromaSettings) -> None:
        self._settings = settings
        self._collection: AsyncCollection | None = None
        self._max_batch = 1000

    async def start(self) -> None:
        if self._collection is not None:
            return
        name = self._settings.collection
        with chroma_calls(f"opening collection {name} at {self._settings.chroma_url}"):
            client = await open_chroma(self._settings)
            self._max_batch = min(await client.get_max_batch_size(), 5000)
            self._collection = await open_collection(client, name)

    async def stop(self) -> None:
        self._collection = None

    async def __aenter__(self) -> ChromaSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def collection(self) -> AsyncCollection:
        if self._collection is None:
            raise RuntimeError("ChromaSink.start() was not called")
        return self._collection

    async def existing_chunks(self, doc_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """doc_id → {chunk id → metadata} for the chunks these documents have in the index now."""
        found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        if not doc_ids:
            return found
        where: Any = {"doc_id": doc_ids[0]} if len(doc_ids) == 1 else {"doc_id": {"$in": doc_ids}}
        collection = self.collection
        with chroma_calls("reading the indexed chunks of the batch's documents"):
            result = await collection.get(where=where, include=["metadatas"])
        for chunk_id, metadata in zip(result["ids"], result["metadatas"] or [], strict=True):
            found[str(metadata["doc_id"])][chunk_id] = dict(metadata)
        return found

    async def embeddings(self, chunk_ids: list[str]) -> np.ndarray:
        """The stored vectors of these chunks, in their order (every one must be in the index)."""
        collection = self.collection
        with chroma_calls("reading the stored vectors of updated chunks"):
            result = await collection.get(ids=chunk_ids, include=["embeddings"])
        row = {chunk_id: index for index, chunk_id in enumerate(result["ids"])}
        missing = [chunk_id for chunk_id in chunk_ids if chunk_id not in row]
        if missing:
            raise KeyError(f"{len(missing)} chunks are not in the index, e.g. {missing[0]}")
        stored = np.asarray(result["embeddings"], dtype=np.float32)
        return stored[[row[chunk_id] for chunk_id in chunk_ids]]

    async def write(self, changes: ChunkChanges) -> None:
        """Apply a batch's changes; returns only once Chroma acknowledged every request.

        New chunks go in before stale ones go out, so a reader never sees a document vanish
        during an edit, and a crash between the steps leaves work that a replay completes.
        """
        collection, step = self.collection, self._max_batch
        with chroma_calls("writing the batch's chunks to Chroma"):
            for start in range(0, len(changes.new_ids), step):
                end = start + step
                assert changes.new_embeddings is not None
                await collection.upsert(
                    ids=changes.new_ids[start:end],
                    embeddings=changes.new_embeddings[start:end],
                    documents=changes.new_texts[start:end],
                    metadatas=changes.new_metadatas[start:end],  # type: ignore[arg-type]
                )
            for start in range(0, len(changes.updated_ids), step):
                end = start + step
                await collection.update(
                    ids=changes.updated_ids[start:end],
                    metadatas=changes.updated_metadatas[start:end],  # type: ignore[arg-type]
                )
            for start in range(0, len(changes.deleted_ids), step):
                await collection.delete(ids=changes.deleted_ids[start : start + step])

    async def flush(self) -> None:
        """Every write is acknowledged synchronously by the Chroma server; nothing is buffered."""
