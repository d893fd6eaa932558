"""The query API against a real Chroma server, a real broker and the real embedding model."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI

from deploy import ChromaServer, free_port
from engines.embedder import Embedder
from query_api import create_app
from schemas.settings import Settings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

IndexChunks = Callable[..., Awaitable[None]]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    text: str
    version: int = 1
    chunk_index: int = 0
    chunk_count: int = 1
    indexed_at: float = 1_700_000_000.0
    extra: tuple[tuple[str, Any], ...] = ()


CORPUS = [
    Chunk(
        "guides/kafka",
        "Apache Kafka stores streams of records in partitioned, replicated commit logs; "
        "consumer groups share the partitions of a topic and commit their offsets.",
        extra=(("lang", "en"), ("team", "platform"), ("year", 2023), ("public", True)),
    ),
    # An edit in flight: version 2 is written, version 1's chunk is not yet deleted.
    Chunk(
        "recipes/sourdough",
        "Feed the sourdough starter, then knead it with flour, water and salt.",
        version=1,
        chunk_count=1,
        indexed_at=1_700_000_100.0,
        extra=(("lang", "en"), ("team", "kitchen"), ("year", 2021), ("public", True)),
    ),
    Chunk(
        "recipes/sourdough",
        "To bake sourdough bread, feed the starter the night before and let the dough rise slowly.",
        version=2,
        chunk_index=0,
        chunk_count=2,
        indexed_at=1_700_000_200.0,
        extra=(("lang", "en"), ("team", "kitchen"), ("year", 2021), ("public", True)),
    ),
    Chunk(
        "recipes/sourdough",
        "Bake the loaf in a very hot Dutch oven for forty minutes until the crust is dark.",
        version=2,
        chunk_index=1,
        chunk_count=2,
        indexed_at=1_700_000_300.0,
        extra=(("lang", "en"), ("team", "kitchen"), ("year", 2021), ("public", True)),
    ),
    Chunk(
        "science/photosynthesis",
        "Plants turn sunlight, water and carbon dioxide into sugar and oxygen in their chloroplasts.",
        extra=(("lang", "en"), ("team", "science"), ("year", 2019), ("public", False)),
    ),
    Chunk(
        "fr/boulangerie",
        "Le boulanger fait cuire le pain au levain dans un four à bois chaque matin.",
        extra=(("lang", "fr"), ("team", "kitchen"), ("year", 2020), ("public", True)),
    ),
]


def _metadata(chunk: Chunk) -> dict[str, Any]:
    return {
        "doc_id": chunk.doc_id,
        "version": chunk.version,
        "chunk_index": chunk.chunk_index,
        "chunk_count": chunk.chunk_count,
        "source": "tests",
        "content_type": "text/plain",
        "indexed_at": chunk.indexed_at,
        **dict(chunk.extra),
    }


@pytest.fixture(scope="module")
def api_settings(module_settings: Callable[..., Settings]) -> Settings:
    """Settings with this module's own collection, topics and consumer group."""
    return module_settings("api", consumer_input="events")


@pytest.fixture(scope="module")
async def indexed(api_settings: Settings, index_chunks: IndexChunks) -> None:
    """The corpus written the way the consumers write it: one record per chunk, real embeddings."""
    await index_chunks(
        api_settings,
        [uuid.uuid4().hex for _ in CORPUS],
        [chunk.text for chunk in CORPUS],
        [_metadata(chunk) for chunk in CORPUS],
        chunk_log=False,
    )


@pytest.fixture(scope="module")
async def topics(api_settings: Settings) -> None:
    await ensure_topics(api_settings)


@pytest.fixture(scope="module")
async def api(
    api_settings: Settings, embedder: Embedder, indexed: None, topics: None, serve: Serve
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(api_settings, embedder=embedder)) as client:
        yield client


async def _search(api: httpx.AsyncClient, query: str, **body: Any) -> list[dict[str, Any]]:
    response = await api.post("/v1/search", json={"query": query, **body})
    assert response.status_code == 200, response.text
    return list(response.json()["hits"])


# --- search -----------------------------------------------------------------------------------


async def test_search_ranks_the_document_that_answers_first(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/search", json={"query": "how do consumer groups commit offsets?", "k": 3})

    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "how do consumer groups commit offsets?"
    assert body["k"] == 3
    assert body["took_ms"] > 0
    hits = body["hits"]
    assert len(hits) == 3
    best = hits[0]
    assert best["doc_id"] == "guides/kafka"
    assert best["text"].startswith("Apache Kafka stores streams")
    assert best["metadata"]["team"] == "platform"
    assert best["metadata"]["public"] is True
    assert best["indexed_at"] == 1_700_000_000.0
    assert re.fullmatch(r"[0-9a-f]{32}", best["id"])
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores[-1] > 0 and scores[0] <= 1.0


@pytest.mark.parametrize(
    ("mode", "steps"),
    [("hybrid", {"embed", "vector", "lexical", "fuse", "load"}), ("vector", {"embed", "vector", "load"})],
)
async def test_search_says_where_its_time_went_in_server_timing(
    api: httpx.AsyncClient, mode: str, steps: set[str]
) -> None:
    response = await api.post("/v1/search", json={"query": "bread", "k": 2, "mode": mode})

    header = response.headers["server-timing"]
    parts = [part.strip().split(";") for part in header.split(",")]
    durations = {name: dict(p.split("=", 1) for p in params)["dur"] for name, *params in parts}
    assert set(durations) == steps
    assert sum(float(ms) for ms in durations.values()) <= response.json()["took_ms"] * 2 + 1


async def test_a_search_tells_the_consumers_on_this_host_that_searches_are_running(
    api: httpx.AsyncClient, api_settings: Settings
) -> None:
    await _search(api, "painting")

    assert time.time() - api_settings.search_activity_path.stat().st_mtime < 2.0


async def test_a_search_that_waits_for_a_write_does_not_slow_down_the_consumers(
    api: httpx.AsyncClient, api_settings: Settings
) -> None:
    await asyncio.sleep(0.6)  # past the API's pause between two touches of the file
    path = api_settings.search_activity_path
    path.touch()
    long_ago = time.time() - 100
    os.utime(path, (long_ago, long_ago))

    waiting = await api.post("/v1/search", json={"query": "painting", "consistent_with": "not-a-token"})
    assert waiting.status_code == 400
    assert path.stat().st_mtime == long_ago

    await _search(api, "painting")
    assert path.stat().st_mtime > long_ago


async def test_search_finds_the_chunk_not_just_the_document(api: httpx.AsyncClient) -> None:
    hits = await _search(api, "how long should the loaf stay in the oven?", k=1)

    assert [(hit["doc_id"], hit["metadata"]["chunk_index"]) for hit in hits] == [("recipes/sourdough", 1)]


async def test_search_returns_at_most_k_hits(api: httpx.AsyncClient) -> None:
    assert len(await _search(api, "bread", k=2)) == 2
    assert len(await _search(api, "bread", k=100)) == len(CORPUS)


async def test_filter_on_one_key_keeps_only_matching_chunks(api: httpx.AsyncClient) -> None:
    hits = await _search(api, "baking bread with sourdough", filter={"lang": "fr"})

    assert [hit["doc_id"] for hit in hits] == ["fr/boulangerie"]


async def test_filter_on_several_keys_must_match_all_of_them(api: httpx.AsyncClient) -> None:
    hits = await _search(api, "bread", filter={"team": "kitchen", "lang": "en", "version": 2})

    assert {hit["doc_id"] for hit in hits} == {"recipes/sourdough"}
    assert len(hits) == 2


async def test_filter_with_a_range_and_a_boolean(api: httpx.AsyncClient) -> None:
    hits = await _search(api, "anything", k=100, filter={"year": {"$gte": 2021}, "public": True})

    assert {hit["doc_id"] for hit in hits} == {"guides/kafka", "recipes/sourdough"}


async def test_filter_with_in_and_not_equal(api: httpx.AsyncClient) -> None:
    hits = await _search(api, "anything", k=100, filter={"team": {"$in": ["science", "platform"]}})
    assert {hit["doc_id"] for hit in hits} == {"guides/kafka", "science/photosynthesis"}

    hits = await _search(api, "anything", k=100, filter={"lang": {"$ne": "en"}})
    assert {hit["doc_id"] for hit in hits} == {"fr/boulangerie"}


async def test_filter_that_matches_nothing_gives_no_hits(api: httpx.AsyncClient) -> None:
    assert await _search(api, "bread", filter={"team": "nobody"}) == []


async def test_unknown_filter_operator_is_a_422_that_names_it(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/search", json={"query": "bread", "filter": {"lang": {"$regex": "^e"}}})

    assert response.status_code == 422
    assert "$regex" in response.text
    assert "$gte" in response.text  # the message lists what is allowed


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "whitespace"),
        ({"query": "x" * 4097}, "query"),
        ({"query": "bread", "k": 0}, "k"),
        ({"query": "bread", "k": 101}, "k"),
        ({"query": "bread", "filter": {"year": [2020, 2021]}}, "filter"),
        ({"query": "bread", "filter": {"year": {"$gt": "2020"}}}, "compares numbers only"),
        ({"query": "bread", "filter": {"year": {"$gt": 1, "$lt": 3}}}, "exactly one operator"),
        ({"query": "bread", "filter": {"team": {"$in": []}}}, "non-empty list"),
        ({"query": "bread", "filter": {"$or": "x"}}, "must be a metadata key"),
        ({"query": "bread", "top": 3}, "top"),
    ],
)
async def test_invalid_search_request_is_a_422_saying_what_is_wrong(
    api: httpx.AsyncClient, body: dict[str, Any], complaint: str
) -> None:
    response = await api.post("/v1/search", json=body)

    assert response.status_code == 422
    assert complaint in response.text


# --- documents ---------------------------------------------------------------------------------


async def test_document_reports_its_newest_version(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/documents/recipes/sourdough")

    assert response.status_code == 200
    assert response.json() == {
        "doc_id": "recipes/sourdough",
        "version": 2,
        "chunk_count": 2,
        "indexed_at": 1_700_000_300.0,
    }


async def test_unknown_document_is_a_404_naming_it(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/documents/recipes/croissant")

    assert response.status_code == 404
    assert "recipes/croissant" in response.json()["detail"]


# --- health, readiness, metrics ----------------------------------------------------------------


async def test_healthz_answers_ok(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_what_start_up_made_is_left_out_of_garbage_collection_while_serving(
    api_settings: Settings, embedder: Embedder, indexed: None, serve: Serve
) -> None:
    # Full collections walk every object they track, holding the GIL: searches wait meanwhile.
    app = create_app(api_settings, embedder=embedder)

    async with serve(app) as client:
        services = app.state.services
        tracked = any(item is services for item in gc.get_objects())
        search = await client.post("/v1/search", json={"query": "bread", "k": 1})

    assert not tracked
    assert search.status_code == 200
    assert any(item is services for item in gc.get_objects())  # handed back when the app stops


async def test_readyz_is_200_when_kafka_and_chroma_answer(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"kafka": "ok", "chroma": "ok"}}


async def test_readyz_is_503_naming_kafka_when_no_broker_answers(
    api_settings: Settings, embedder: Embedder, indexed: None, serve: Serve
) -> None:
    settings = api_settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})

    async with serve(create_app(settings, embedder=embedder)) as client:
        response = await client.get("/readyz")
        # Search does not need Kafka and keeps working.
        search = await client.post("/v1/search", json={"query": "bread", "k": 1})

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["chroma"] == "ok"
    assert checks["kafka"].startswith("unreachable")
    assert search.status_code == 200


async def test_readyz_and_search_are_503_naming_chroma_when_it_goes_away(
    api_settings: Settings, embedder: Embedder, tmp_path: Path, serve: Serve
) -> None:
    server = ChromaServer(tmp_path, free_port())
    await asyncio.to_thread(server.start)
    try:
        # Every search goes to Chroma: a replica whose own vectors had caught up with Chroma's
        # would answer this one itself, rightly, whether Chroma is there or not.
        settings = api_settings.model_copy(update={"chroma_port": server.port, "local_vectors": False})
        async with serve(create_app(settings, embedder=embedder)) as client:
            assert (await client.get("/readyz")).status_code == 200
            await asyncio.to_thread(server.kill)
            ready = await client.get("/readyz")
            search = await client.post("/v1/search", json={"query": "bread"})
    finally:
        await asyncio.to_thread(server.stop)

    assert ready.status_code == 503
    assert ready.json()["checks"]["kafka"] == "ok"
    assert ready.json()["checks"]["chroma"].startswith("unreachable")
    assert search.status_code == 503
    assert "index is unreachable" in search.json()["detail"]


def _stats(consumer_id: str, scale: int) -> dict[str, Any]:
    return {
        "consumer_id": consumer_id,
        "events_consumed": 10 * scale,
        "events_dead_lettered": 1 * scale,
        "chunks_embedded": 20 * scale,
        "chunks_skipped": 5 * scale,
        "chunks_deleted": 2 * scale,
        "batches": 4 * scale,
        "batch_seconds_sum": 1.5 * scale,
        "batch_seconds_buckets": {
            "0.05": 0,
            "0.1": 0,
            "0.25": 1 * scale,
            "0.5": 3 * scale,
            "1.0": 4 * scale,
            "2.5": 4 * scale,
            "5.0": 4 * scale,
            "10.0": 4 * scale,
            "30.0": 4 * scale,
            "+Inf": 4 * scale,
        },
        "updated_at": time.time(),
    }


async def _wait_for_metric(api: httpx.AsyncClient, line: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get("/metrics")
        assert response.status_code == 200
        if line in response.text.splitlines():
            return response.text
        if time.monotonic() > deadline:
            raise AssertionError(f"{line!r} not in /metrics after {timeout} s:\n{response.text}")
        await asyncio.sleep(0.3)


async def test_metrics_sum_the_latest_counters_of_every_consumer(
    api: httpx.AsyncClient, api_settings: Settings
) -> None:
    async with AIOKafkaProducer(bootstrap_servers=api_settings.bootstrap_servers) as producer:
        # Consumer "a" reports twice (only its latest counts), "b" once, plus one malformed message.
        for consumer_id, scale in [("a", 1), ("b", 2), ("a", 3)]:
            value = orjson.dumps(_stats(consumer_id, scale))
            await producer.send_and_wait(api_settings.stats_topic, value, key=consumer_id.encode())
        await producer.send_and_wait(api_settings.stats_topic, b"not json", key=b"c")

    text = await _wait_for_metric(api, "ragstream_events_consumed_total 50.0")

    assert "# TYPE ragstream_events_consumed_total counter" in text
    for line in [
        "ragstream_events_dead_lettered_total 5.0",
        "ragstream_chunks_embedded_total 100.0",
        "ragstream_chunks_skipped_total 25.0",
        "ragstream_chunks_deleted_total 10.0",
        'ragstream_batch_seconds_bucket{le="0.25"} 5.0',
        'ragstream_batch_seconds_bucket{le="+Inf"} 20.0',
        "ragstream_batch_seconds_count 20.0",
        "ragstream_batch_seconds_sum 7.5",
    ]:
        assert line in text.splitlines(), line
    assert "# TYPE ragstream_batch_seconds histogram" in text


async def test_metrics_show_the_apis_garbage_collection_pauses(api: httpx.AsyncClient) -> None:
    gc.collect()  # at least one full collection to show

    lines = (await api.get("/metrics")).text.splitlines()

    assert "# TYPE ragstream_api_gc_pause_seconds histogram" in lines
    full = next(
        line for line in lines if line.startswith('ragstream_api_gc_pause_seconds_count{generation="2"}')
    )
    assert float(full.split()[-1]) >= 1


async def test_metrics_report_the_consumer_groups_lag_per_partition(
    api: httpx.AsyncClient, api_settings: Settings
) -> None:
    events = api_settings.events_topic
    async with AIOKafkaProducer(bootstrap_servers=api_settings.bootstrap_servers) as producer:
        for partition in (0, 0, 0, 1):
            await producer.send_and_wait(events, b"{}", partition=partition)
    # The group has committed 1 event on partition 0 and nothing on partition 1.
    committer = AIOKafkaConsumer(
        bootstrap_servers=api_settings.bootstrap_servers,
        group_id=api_settings.consumer_group,
        enable_auto_commit=False,
    )
    committer.assign([TopicPartition(events, 0)])
    async with committer:
        await committer.commit({TopicPartition(events, 0): 1})

    text = await _wait_for_metric(api, 'ragstream_consumer_lag{hop="indexer",partition="0"} 2.0')

    assert 'ragstream_consumer_lag{hop="indexer",partition="1"} 1.0' in text.splitlines()
    assert "# TYPE ragstream_consumer_lag gauge" in text
