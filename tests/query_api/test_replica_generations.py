"""An API replica follows the control topic: it serves the active index generation, holds one being
built beside it, says in its heartbeat which are caught up, switches at once and whole when
``active`` changes, switches back on a rollback, and closes a generation whose record is dropped.

Against the real broker, Chroma and model. Each generation's collection and chunk log are written
the way the consumers write them, chunked with that generation's chunk size. The tests are one
story, in order, on one replica: generation 0 alone, then generation 1 built, switched to, rolled
back and dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from engines.chunking import Chunker
from engines.embedder import Embedder
from query_api import create_app
from schemas.generations import (
    ACTIVE_KEY,
    ActiveGeneration,
    Generation,
    IndexShape,
    ReplicaReport,
    generation_key,
)
from schemas.settings import Settings
from streams.control import publish_control, read_control_state
from streams.kafka_clients import client_options
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

IndexChunks = Callable[..., Awaitable[None]]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]

REPLICA = "replica-a"

DOCUMENT = (
    "To bake sourdough bread, feed the starter the night before and let the dough rise slowly. "
    "Bake the loaf in a very hot Dutch oven for forty minutes until the crust is dark.\n\n"
    "Apache Kafka stores streams of records in partitioned, replicated commit logs; consumer "
    "groups share the partitions of a topic and commit their offsets.\n\n"
    "Chroma keeps the vectors of every chunk in an HNSW graph and answers nearest-neighbour "
    "queries over HTTP, filtered by the metadata stored beside each vector.\n\n"
    "The tomato plants want full sun, deep watering twice a week and a stake to climb once the "
    "first trusses of flowers appear in early summer."
)
QUERIES = ["how long to bake sourdough", "kafka consumer groups", "vector nearest neighbours", "tomatoes"]


@dataclass
class Replica:
    settings: Settings
    app: FastAPI
    api: httpx.AsyncClient
    #: Per generation, the texts its chunking gives the document.
    texts: dict[int, set[str]]

    async def search(self, query: str, mode: str = "hybrid") -> dict:
        response = await self.api.post("/v1/search", json={"query": query, "k": 3, "mode": mode})
        assert response.status_code == 200, response.text
        return response.json()

    async def heartbeat(self) -> ReplicaReport | None:
        return (await read_control_state(self.settings)).replicas.get(REPLICA)

    async def stats(self) -> dict:
        response = await self.api.get("/v1/stats")
        assert response.status_code == 200, response.text
        return response.json()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.2)


async def index_generation(
    index_chunks: IndexChunks, settings: Settings, encoder: Embedder | None = None
) -> set[str]:
    """The document chunked and written as ``settings``' generation's consumers would (embedded by
    ``encoder``, the generation's model, when it is not the default one); its texts."""
    await ensure_topics(settings)  # the generation's chunk log, beside the topics that exist
    chunks = Chunker(settings.chunk_size, settings.chunk_overlap).split("garden/notes", DOCUMENT)
    metadatas = [
        {
            "doc_id": "garden/notes",
            "version": 1,
            "chunk_index": chunk.index,
            "chunk_count": len(chunks),
            "indexed_at": time.time(),
        }
        for chunk in chunks
    ]
    await index_chunks(settings, [c.id for c in chunks], [c.text for c in chunks], metadatas, encoder=encoder)
    return {chunk.text for chunk in chunks}


def assert_answered_by(found: dict, generation: int, texts: set[str]) -> None:
    assert found["generation"] == generation
    assert found["hits"], found
    for hit in found["hits"]:
        assert hit["generation"] == generation, hit
        assert hit["text"] in texts, hit["text"]


@pytest.fixture(scope="module")
async def replica(
    module_settings: Callable[..., Settings], index_chunks: IndexChunks, embedder: Embedder, serve: Serve
) -> AsyncIterator[Replica]:
    settings = module_settings("generations", chunk_size=1000, chunk_overlap=100)
    texts = {0: await index_generation(index_chunks, settings)}
    app = create_app(settings, embedder=embedder, replica=REPLICA)
    async with serve(app) as api:
        yield Replica(settings, app, api, texts)


async def test_with_generation_0_alone_searches_answer_from_it_as_before(replica: Replica) -> None:
    (only_chunk,) = replica.texts[0]  # chunks of 1000 characters: the document is one

    found = await replica.search("how long to bake sourdough")

    assert_answered_by(found, 0, {only_chunk})
    assert (await replica.stats())["generation"] == 0

    async def heartbeat_serves_0() -> bool:
        report = await replica.heartbeat()
        return report is not None and report.serving == 0 and report.ready == (0,)

    await eventually(heartbeat_serves_0, "the heartbeat says: serving 0, 0 ready")


async def test_a_generation_being_built_is_reported_ready_while_the_active_one_still_serves(
    replica: Replica, index_chunks: IndexChunks
) -> None:
    base = replica.settings
    built = Generation(1, IndexShape.of(base.model_copy(update={"chunk_size": 200, "chunk_overlap": 20})))
    await publish_control(
        base,
        [(generation_key(0), Generation.base(base).to_json()), (generation_key(1), built.to_json())],
    )
    replica.texts[1] = await index_generation(index_chunks, built.settings(base))
    assert len(replica.texts[1]) > 3

    async def heartbeat_holds_1() -> bool:
        report = await replica.heartbeat()
        return report is not None and report.ready == (0, 1)

    await eventually(heartbeat_holds_1, "the heartbeat lists generation 1 as ready")
    report = await replica.heartbeat()
    assert report is not None and report.serving == 0
    stats = await replica.stats()
    assert (stats["generation"], stats["generations_ready"]) == (0, [0, 1])
    assert_answered_by(await replica.search("how long to bake sourdough"), 0, replica.texts[0])


async def test_switching_active_answers_every_search_from_one_generation_then_the_new_one(
    replica: Replica,
) -> None:
    stop = asyncio.Event()
    seen: list[list[dict]] = [[] for _ in range(4)]

    async def keep_searching(number: int) -> None:
        while not stop.is_set():
            # Lexical searches too: both views must switch, not only the vectors.
            mode = "lexical" if number % 2 else "hybrid"
            seen[number].append(await replica.search(QUERIES[number], mode))

    searching = [asyncio.create_task(keep_searching(n)) for n in range(4)]
    await asyncio.sleep(0.5)
    await publish_control(
        replica.settings, [(ACTIVE_KEY, ActiveGeneration(1, previous=0, switched_at=time.time()).to_json())]
    )

    async def all_answer_from_1() -> bool:
        return all(answers and answers[-1]["generation"] == 1 for answers in seen)

    await eventually(all_answer_from_1, "every searcher gets answers from generation 1", timeout=30)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*searching)  # any failed search fails here

    for answers in seen:
        generations = [found["generation"] for found in answers]
        assert generations[0] == 0 and generations[-1] == 1
        # One switch, never back and forth.
        assert generations == sorted(generations)
        for found in answers:
            assert_answered_by(found, found["generation"], replica.texts[found["generation"]])
    assert_answered_by(await replica.search("how long to bake sourdough"), 1, replica.texts[1])
    assert (await replica.stats())["generation"] == 1

    async def heartbeat_serves_1() -> bool:
        report = await replica.heartbeat()
        return report is not None and report.serving == 1 and report.ready == (0, 1)

    await eventually(heartbeat_serves_1, "the heartbeat says: serving 1, 0 kept ready")


async def test_after_the_switch_the_metrics_give_the_lag_of_the_serving_generation_s_consumers(
    replica: Replica,
) -> None:
    base = replica.settings
    serving = Generation(1, IndexShape.of(base.model_copy(update={"chunk_size": 200, "chunk_overlap": 20})))
    settings = serving.settings(base)
    # Each generation's consumers commit in a group of their own: an offset only generation 1's has.
    partition = TopicPartition(settings.input_topic, 0)
    # Auto-commit off: on stop it would commit the consumer's position (0 on this empty topic) over the 7.
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka), group_id=settings.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.commit({partition: 7})
    finally:
        await consumer.stop()

    response = await replica.api.get("/metrics", params={"name[]": "ragstream_consumer_committed_offset"})
    assert response.status_code == 200, response.text
    assert 'ragstream_consumer_committed_offset{hop="indexer",partition="0"} 7.0' in response.text


async def test_a_replica_started_after_the_switch_serves_the_active_generation(
    replica: Replica, embedder: Embedder, serve: Serve
) -> None:
    async with serve(create_app(replica.settings, embedder=embedder, replica="replica-late")) as late:
        response = await late.post("/v1/search", json={"query": "kafka consumer groups", "mode": "lexical"})

    assert response.status_code == 200, response.text
    assert_answered_by(response.json(), 1, replica.texts[1])


async def test_a_rollback_switches_back_to_the_kept_generation(replica: Replica) -> None:
    await publish_control(
        replica.settings, [(ACTIVE_KEY, ActiveGeneration(0, previous=1, switched_at=time.time()).to_json())]
    )

    async def answers_from_0() -> bool:
        return (await replica.search("how long to bake sourdough"))["generation"] == 0

    await eventually(answers_from_0, "searches answer from generation 0 again", timeout=30)
    assert_answered_by(await replica.search("tomatoes", "lexical"), 0, replica.texts[0])


async def test_a_dropped_generation_is_closed_and_no_longer_reported(replica: Replica) -> None:
    await publish_control(replica.settings, [(generation_key(1), None)])

    async def heartbeat_drops_1() -> bool:
        report = await replica.heartbeat()
        return report is not None and report.ready == (0,)

    await eventually(heartbeat_drops_1, "the heartbeat no longer lists generation 1")

    async def closed() -> bool:
        return bool(replica.app.state.generations.held == (0,))

    await eventually(closed, "generation 1's collection, views and model are closed", timeout=15)
    stats = await replica.stats()
    assert (stats["generation"], stats["generations_ready"]) == (0, [0])
    assert_answered_by(await replica.search("kafka consumer groups"), 0, replica.texts[0])


async def test_a_generation_of_another_model_and_dimension_is_searched_with_its_own_model(
    replica: Replica, index_chunks: IndexChunks, second_model: str
) -> None:
    base = replica.settings
    other = Generation(2, IndexShape.of(base.model_copy(update={"model": second_model})))
    encoder = Embedder(second_model, "fp32")
    assert encoder.dimension != 384
    await publish_control(base, [(generation_key(2), other.to_json())])
    replica.texts[2] = await index_generation(index_chunks, other.settings(base), encoder)

    async def heartbeat_holds_2() -> bool:
        report = await replica.heartbeat()
        return report is not None and report.ready == (0, 2)

    await eventually(heartbeat_holds_2, "the heartbeat lists generation 2 (another model) as ready")
    await publish_control(
        base, [(ACTIVE_KEY, ActiveGeneration(2, previous=0, switched_at=time.time()).to_json())]
    )

    async def answers_from_2() -> bool:
        return (await replica.search("how long to bake sourdough"))["generation"] == 2

    await eventually(answers_from_2, "searches answer from generation 2", timeout=30)
    # A query embedded by generation 0's model would not even fit generation 2's vectors: each
    # generation embeds queries with its own model.
    for mode in ("vector", "hybrid"):
        found = await replica.search("how long to bake sourdough", mode)
        assert_answered_by(found, 2, replica.texts[2])
    # Generation 0, of the other dimension, is kept beside it and answers again on a rollback.
    await publish_control(
        base, [(ACTIVE_KEY, ActiveGeneration(0, previous=2, switched_at=time.time()).to_json())]
    )

    async def answers_from_0() -> bool:
        return (await replica.search("kafka consumer groups", "vector"))["generation"] == 0

    await eventually(answers_from_0, "vector searches answer from generation 0 again", timeout=30)
