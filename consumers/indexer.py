"""Turns a batch of document events into the minimal set of index changes, then applies them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from consumers.batch_timings import BatchTimings
from consumers.sink import ChunkChanges, Metadata
from engines.chunking import Chunker
from schemas import DocumentEvent, EventOp

#: Metadata that says which version of the document a chunk belongs to. ``indexed_at`` is left
#: out: it changes on every write, and comparing it would turn every replay into a rewrite.
_COMPARED_KEYS = ("version", "chunk_index", "chunk_count", "source", "content_type")


class Encoder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


class Sink(Protocol):
    async def existing_chunks(self, doc_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]: ...
    async def embeddings(self, chunk_ids: list[str]) -> np.ndarray: ...
    async def write(self, changes: ChunkChanges) -> None: ...


@dataclass
class BatchResult:
    documents_upserted: int = 0
    documents_deleted: int = 0
    events_superseded: int = 0
    chunks_embedded: int = 0
    chunks_skipped: int = 0
    chunks_deleted: int = 0


def latest_per_document(events: Sequence[DocumentEvent]) -> dict[str, DocumentEvent]:
    """The event that decides each document's final state: the highest version, last on ties.

    Events of one document share a partition (key = doc_id), so arrival order is their order.
    """
    latest: dict[str, DocumentEvent] = {}
    for event in events:
        current = latest.get(event.doc_id)
        if current is None or event.version >= current.version:
            latest[event.doc_id] = event
    return latest


def _chunk_metadata(event: DocumentEvent, index: int, count: int) -> Metadata:
    metadata: Metadata = {
        **event.metadata,
        "doc_id": event.doc_id,
        "version": event.version,
        "chunk_index": index,
        "chunk_count": count,
        "source": event.source,
        "content_type": event.content_type,
    }
    # What the query API restricts a tenant's reads by, in Chroma and (through the chunk log) in
    # the BM25 index. Absent without a tenant: Chroma stores no nulls.
    if event.tenant is not None:
        metadata["tenant"] = event.tenant
    return metadata


def _same_metadata(wanted: Metadata, stored: dict[str, Any]) -> bool:
    own = {k: v for k, v in stored.items() if k != "indexed_at"}
    return own == wanted


class DocumentIndexer:
    """Applies events with exactly-once effect: replaying a batch leaves the index unchanged."""

    def __init__(
        self,
        chunker: Chunker,
        encoder: Encoder,
        sink: Sink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._chunker = chunker
        self._encoder = encoder
        self._sink = sink
        self._clock = clock

    async def apply(self, events: Sequence[DocumentEvent]) -> BatchResult:
        """Plan and write in one step."""
        changes, result = await self.plan(events)
        await self.write(changes)
        return result

    async def write(self, changes: ChunkChanges) -> None:
        if changes:
            await self._sink.write(changes)

    async def plan(
        self, events: Sequence[DocumentEvent], timings: BatchTimings | None = None
    ) -> tuple[ChunkChanges, BatchResult]:
        """The changes that bring these documents to their latest state, new chunks embedded.

        Reads the index but writes nothing, so the caller may write an earlier batch meanwhile,
        as long as that batch touches none of these documents. ``timings`` gets the seconds
        of its parts (diff, chunk, encode, reuse_vectors) added.
        """
        timings = timings if timings is not None else BatchTimings()
        result = BatchResult()
        latest = latest_per_document(events)
        result.events_superseded = len(events) - len(latest)
        with timings.measure("diff"):
            existing = await self._sink.existing_chunks(list(latest))
        with timings.measure("chunk"):
            changes = self._changes(latest, existing, result)
        if changes.new_texts:
            # Embedding holds the CPU for seconds: keep the event loop (and Kafka heartbeats) free.
            with timings.measure("encode"):
                changes.new_embeddings = await asyncio.to_thread(self._encoder.encode, changes.new_texts)
        if changes.updated_ids:
            # The chunk log carries every upsert's vector; an updated chunk keeps the one it has.
            with timings.measure("reuse_vectors"):
                changes.updated_embeddings = await self._sink.embeddings(changes.updated_ids)
        result.chunks_embedded = len(changes.new_ids)
        result.chunks_deleted = len(changes.deleted_ids)
        return changes, result

    def _changes(
        self,
        latest: dict[str, DocumentEvent],
        existing: dict[str, dict[str, dict[str, Any]]],
        result: BatchResult,
    ) -> ChunkChanges:
        """Chunk each document and compare its chunks with the stored ones; embeds nothing."""
        changes = ChunkChanges()
        now = self._clock()
        for doc_id, event in latest.items():
            stored = existing.get(doc_id, {})
            stored_version = max((int(m["version"]) for m in stored.values()), default=-1)
            if event.version < stored_version:
                # A source republished an old version: the index already holds a newer one.
                result.events_superseded += 1
                continue
            if event.op is EventOp.DELETE:
                changes.deleted_ids.extend(stored)
                result.documents_deleted += 1
                continue

            chunks = self._chunker.split(doc_id, event.content)
            wanted_ids = set()
            for chunk in chunks:
                wanted_ids.add(chunk.id)
                metadata = _chunk_metadata(event, chunk.index, len(chunks))
                if chunk.id not in stored:
                    changes.new_ids.append(chunk.id)
                    changes.new_texts.append(chunk.text)
                    changes.new_metadatas.append({**metadata, "indexed_at": now})
                    continue
                result.chunks_skipped += 1
                if not _same_metadata(metadata, stored[chunk.id]):
                    # Keys the new version dropped are removed by setting them to None.
                    dropped = {k: None for k in stored[chunk.id] if k not in metadata and k != "indexed_at"}
                    changes.updated_ids.append(chunk.id)
                    changes.updated_texts.append(chunk.text)
                    changes.updated_metadatas.append({**dropped, **metadata, "indexed_at": now})
            changes.deleted_ids.extend(chunk_id for chunk_id in stored if chunk_id not in wanted_ids)
            result.documents_upserted += 1
        return changes
