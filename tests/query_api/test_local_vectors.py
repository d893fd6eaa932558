"""Vector search answered by the replica's own index of the chunk log, and by Chroma when it must.

Which index answered is in the ``vector`` step of Server-Timing (``desc="replica"`` or
``desc="chroma"``), what a user inspecting a slow search would read.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import chromadb
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from consumers.chunk_log import publish_chunk_changes
from consumers.sink import ChunkChanges
from engines.embedder import Embedder
from query_api import create_app
from schemas.settings import Settings
from streams.topics import ensure_topics

IndexChunks = Callable[..., Awaitable[None]]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]

pytestmark = pytest.mark.integration

TEXTS = [
    "Apache Kafka stores streams of records in partitioned, replicated commit logs.",
    "Consumer groups share the partitions of a topic and commit the offsets they have read.",
    "To bake sourdough bread, feed the starter the night before and let the dough rise.",
    "A loaf of rye bread bakes for about an hour in a hot oven.",
    "The gasket kit for the feed line pump is ordered from the central warehouse.",
    "Chroma is a vector database that finds the nearest embeddings to a query.",
    "Tantivy is a full-text search engine library written in Rust, inspired by Lucene.",
    "The northern plant's annual report covers staffing, budget and training.",
]
QUERIES = ["how do consumers commit offsets?", "baking bread", "vector database", "pump spare parts"]


def metadata(index: int) -> dict[str, Any]:
    return {
        "doc_id": f"docs/{index}",
        "source": "wiki" if index % 2 else "tickets",
        "version": 1,
        "indexed_at": 1_700_000_000.0 + index,
        "chunk_index": 0,
        "chunk_count": 1,
        "content_type": "text/plain",
    }


async def write_corpus(settings: Settings, index_chunks: IndexChunks, **options: Any) -> list[str]:
    await ensure_topics(settings)
    ids = [uuid.uuid4().hex for _ in TEXTS]
    await index_chunks(settings, ids, TEXTS, [metadata(i) for i in range(len(TEXTS))], **options)
    return ids


async def vector_search(api: httpx.AsyncClient, query: str, **body: Any) -> tuple[str, list[dict[str, Any]]]:
    """(which index answered, the hits)."""
    response = await api.post("/v1/search", json={"query": query, "mode": "vector", "k": 5, **body})
    assert response.status_code == 200, response.text
    (step,) = [
        part for part in response.headers["server-timing"].split(",") if part.strip().startswith("vector;")
    ]
    answered_by = step.split('desc="')[1].rstrip('"')
    return answered_by, response.json()["hits"]


def ids(hits: list[dict[str, Any]]) -> list[str]:
    return [hit["id"] for hit in hits]


async def answered_by_replica(api: httpx.AsyncClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await vector_search(api, QUERIES[0]))[0] != "replica":
        assert time.monotonic() < deadline, "the replica's vector index never started answering"
        await asyncio.sleep(0.2)


async def test_the_replica_answers_like_chroma_and_forgets_a_deleted_chunk_at_once(
    module_settings: Callable[..., Settings], embedder: Embedder, index_chunks: IndexChunks, serve: Serve
) -> None:
    settings = module_settings("local-vectors")
    await write_corpus(settings, index_chunks)
    chroma_only = settings.model_copy(update={"local_vectors": False})

    async with (
        serve(create_app(settings, embedder=embedder)) as replica,
        serve(create_app(chroma_only, embedder=embedder)) as chroma,
    ):
        await answered_by_replica(replica)
        for query in QUERIES:
            by_replica, replica_hits = await vector_search(replica, query)
            by_chroma, chroma_hits = await vector_search(chroma, query)
            assert (by_replica, by_chroma) == ("replica", "chroma")
            assert ids(replica_hits) == ids(chroma_hits)
            # Chroma's distances differ from the exact cosine in the fourth decimal (seen: 7e-4).
            assert [hit["score"] for hit in replica_hits] == pytest.approx(
                [hit["score"] for hit in chroma_hits], abs=2e-3
            )

        before = ids((await vector_search(replica, "baking bread"))[1])
        gone = before[0]
        # As a consumer deletes: the tombstone into the chunk log, then the delete in Chroma.
        async with AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all") as producer:
            await publish_chunk_changes(producer, settings.chunks_topic, ChunkChanges(deleted_ids=[gone]))
        client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
        await (await client.get_collection(settings.collection)).delete(ids=[gone])

        deadline = time.monotonic() + 10
        while gone in ids((await vector_search(replica, "baking bread"))[1]):
            assert time.monotonic() < deadline, "a deleted chunk was still found by the replica"
            await asyncio.sleep(0.05)
        answered, after = await vector_search(replica, "baking bread")
        assert answered == "replica"
        assert ids(after)[: len(before) - 1] == before[1:]


async def test_filtered_searches_go_to_chroma_and_keep_only_matching_chunks(
    module_settings: Callable[..., Settings], embedder: Embedder, index_chunks: IndexChunks, serve: Serve
) -> None:
    settings = module_settings("local-vectors-filtered")
    await write_corpus(settings, index_chunks)

    async with serve(create_app(settings, embedder=embedder)) as api:
        await answered_by_replica(api)
        answered, hits = await vector_search(api, "baking bread", source="wiki")

    assert answered == "chroma"
    assert len(hits) == len(TEXTS) // 2
    assert {hit["metadata"]["source"] for hit in hits} == {"wiki"}


@pytest.mark.parametrize("gap", ["the log carries no vectors", "Chroma holds chunks the log lacks"])
async def test_chroma_answers_when_the_replica_cannot_hold_every_chunk(
    module_settings: Callable[..., Settings],
    embedder: Embedder,
    index_chunks: IndexChunks,
    serve: Serve,
    gap: str,
) -> None:
    settings = module_settings("local-vectors-gap")
    if gap == "the log carries no vectors":
        await write_corpus(settings, index_chunks, vectors_in_log=False)
    else:
        await write_corpus(settings, index_chunks)
        await index_chunks(
            settings, ["extra"], ["A rye loaf baking in the oven."], [metadata(99)], chunk_log=False
        )

    async with serve(create_app(settings, embedder=embedder)) as api:
        await asyncio.sleep(3)  # longer than the coverage check's first look
        answered, hits = await vector_search(api, "baking bread")

    assert answered == "chroma"
    assert len(hits) == 5
    if gap == "Chroma holds chunks the log lacks":
        assert hits[0]["id"] == "extra"
