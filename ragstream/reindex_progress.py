"""How far a reindex has got: a generation's progress, its coverage of the active one, and the
status of every generation (``ragstream reindex status``); read from Kafka and Chroma only."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from chromadb.api import AsyncClientAPI
from chromadb.errors import NotFoundError

from engines.chroma_client import open_chroma
from schemas import Settings
from schemas.generations import ActiveGeneration, Generation, GenerationRole, ReplicaReport
from streams.control import read_control_state
from streams.lag import LagReader

__all__ = [
    "BuildProgress",
    "Coverage",
    "GenerationStatus",
    "ReindexStatus",
    "check_coverage",
    "collection_doc_ids",
    "count_chunks",
    "read_progress",
    "read_status",
]

#: The coverage check's tries (live writes move both collections meanwhile), and their spacing.
COVERAGE_ATTEMPTS = 3
COVERAGE_RETRY_S = 1.0
COVERAGE_PAGE = 1000


@dataclass(frozen=True)
class BuildProgress:
    """How far a generation's consumer group has read its input, and what its collection holds."""

    generation: int
    read: int  # records of the input topic behind the group's committed offsets
    end: int  # the input topic's end offsets, summed
    lag: int
    chunks: int | None  # None: the collection does not exist (yet, or any more)


async def count_chunks(chroma: AsyncClientAPI, name: str) -> int | None:
    """Chunks in collection ``name``; None if it does not exist."""
    try:
        # get_collection, never get_or_create: looking must not make a collection.
        return await (await chroma.get_collection(name)).count()
    except NotFoundError:
        return None


async def read_progress(
    settings: Settings, lag: LagReader, chroma: AsyncClientAPI, generation: Generation
) -> BuildProgress:
    own = generation.settings(settings)
    partitions = await lag.read(own.input_topic, own.consumer_group)
    end = sum(p.end_offset for p in partitions)
    behind = sum(p.lag for p in partitions)
    return BuildProgress(
        generation.number, end - behind, end, behind, await count_chunks(chroma, own.collection)
    )


@dataclass(frozen=True)
class Coverage:
    """Documents with chunks in one generation's collection and none in the other's."""

    only_active: frozenset[str]
    only_new: frozenset[str]

    @property
    def passed(self) -> bool:
        return not self.only_active and not self.only_new

    def describe(self) -> str:
        def some(ids: frozenset[str]) -> str:
            return ", ".join(sorted(ids)[:3]) + (", …" if len(ids) > 3 else "")

        parts = []
        if self.only_active:
            parts.append(
                f"{len(self.only_active)} documents are only in the active one ({some(self.only_active)})"
            )
        if self.only_new:
            parts.append(f"{len(self.only_new)} only in the new one ({some(self.only_new)})")
        return "; ".join(parts) or "every document is in both"


async def collection_doc_ids(chroma: AsyncClientAPI, name: str) -> set[str]:
    """The documents with chunks in collection ``name`` (none if it does not exist)."""
    try:
        collection = await chroma.get_collection(name)
    except NotFoundError:
        return set()
    found: set[str] = set()
    offset = 0
    while True:
        page = await collection.get(include=["metadatas"], limit=COVERAGE_PAGE, offset=offset)
        found.update(str(m["doc_id"]) for m in page["metadatas"] or [] if m and "doc_id" in m)
        if len(page["ids"]) < COVERAGE_PAGE:
            return found
        offset += COVERAGE_PAGE


async def check_coverage(
    settings: Settings, chroma: AsyncClientAPI, active: Generation, new: Generation
) -> Coverage:
    """Every document with chunks in the active collection has chunks in the new one, and the
    other way round; tried a few times, since live writes move both collections meanwhile."""
    coverage = Coverage(frozenset(), frozenset())
    for attempt in range(COVERAGE_ATTEMPTS):
        if attempt:
            await asyncio.sleep(COVERAGE_RETRY_S)
        old_ids = await collection_doc_ids(chroma, active.settings(settings).collection)
        new_ids = await collection_doc_ids(chroma, new.settings(settings).collection)
        coverage = Coverage(frozenset(old_ids - new_ids), frozenset(new_ids - old_ids))
        if coverage.passed:
            break
    return coverage


@dataclass(frozen=True)
class GenerationStatus:
    generation: Generation
    role: GenerationRole
    chunks: int | None
    lag: int | None  # None: its group has no input topic to read
    drop_at: float | None  # a kept one: when the consumers' process drops it


@dataclass(frozen=True)
class ReindexStatus:
    active: ActiveGeneration
    generations: list[GenerationStatus]
    replicas: list[ReplicaReport]  # every heartbeat the topic holds, live or not
    read_at: float


async def read_status(settings: Settings) -> ReindexStatus:
    """Every generation with its role, shape, chunks and lag; every replica's last heartbeat."""
    state = await read_control_state(settings)
    chroma = await open_chroma(settings)
    found = []
    async with LagReader(settings.kafka) as lag:
        for number, role in state.roles().items():
            generation = state.generation(number, settings)
            if generation is None:
                continue
            progress = await read_progress(settings, lag, chroma, generation)
            keep_until = state.active.switched_at + settings.reindex_keep_s if role == "kept" else None
            found.append(GenerationStatus(generation, role, progress.chunks, progress.lag, keep_until))
    replicas = sorted(state.replicas.values(), key=lambda r: r.replica)
    return ReindexStatus(state.active, found, replicas, time.time())
