"""The whole pipeline for end-to-end tests: real broker, Chroma server, Ray actors and model."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
import ray

from consumers.actors import ConsumerGroup
from consumers.embedder import Embedder
from query_api import create_app
from schemas import Settings
from streams.lag import LagReader
from streams.publisher import EventPublisher
from streams.topics import ensure_topics


@pytest.fixture(scope="session")
def pipeline_settings(kafka_broker, chroma_server) -> Settings:
    return Settings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        chroma_port=chroma_server.port,
        events_topic="e2e.events",
        dlq_topic="e2e.dlq",
        stats_topic="e2e.stats",
        chunks_topic="e2e.chunks",
        consumer_group="e2e-indexer",
        collection="e2e",
        partitions=6,
        chunk_size=1000,
        chunk_overlap=100,
    )


@pytest.fixture(scope="session")
async def consumer_group(pipeline_settings):
    await ensure_topics(pipeline_settings)
    group = ConsumerGroup(pipeline_settings, count=2)
    group.start()
    await asyncio.to_thread(group.wait_ready)
    yield group
    await asyncio.to_thread(group.stop)
    ray.shutdown()


@pytest.fixture(scope="session")
def query_embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
async def api(pipeline_settings, consumer_group, query_embedder):
    app = create_app(pipeline_settings, embedder=query_embedder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ragstream") as client:
            yield client


@pytest.fixture(scope="session")
async def publisher(pipeline_settings):
    async with EventPublisher(pipeline_settings.bootstrap_servers, pipeline_settings.events_topic) as pub:
        yield pub


class Pipeline:
    """What a test does to the running system and reads back from it."""

    def __init__(self, settings: Settings, api: httpx.AsyncClient, publisher: EventPublisher) -> None:
        self.settings = settings
        self.api = api
        self.publisher = publisher

    async def lag(self):
        async with LagReader(self.settings.bootstrap_servers) as reader:
            return await reader.read(self.settings.events_topic, self.settings.consumer_group)

    async def drain(self, timeout: float = 240) -> None:
        """Wait until every partition's committed offset reaches its end offset, and the
        consumers' counters (read through the API) account for every event."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            partitions = await self.lag()
            if all((p.committed or 0) == p.end_offset for p in partitions):
                published = sum(p.end_offset for p in partitions)
                if await self.metric("ragstream_events_consumed_total") >= published:
                    return
            await asyncio.sleep(0.3)
        raise TimeoutError(f"pipeline did not drain in {timeout}s: {await self.lag()}")

    async def metric(self, name: str) -> float:
        text = (await self.api.get("/metrics")).text
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    async def search(self, query: str, k: int = 10, **filters) -> list[dict]:
        body: dict = {"query": query, "k": k}
        if filters:
            body["filter"] = filters
        response = await self.api.post("/v1/search", json=body)
        assert response.status_code == 200, response.text
        return response.json()["hits"]

    async def chunks_of(self, doc_id: str) -> list[dict]:
        hits = await self.search(doc_id, k=100, doc_id=doc_id)
        return sorted(hits, key=lambda h: h["metadata"]["chunk_index"])


@pytest.fixture(scope="session")
async def pipeline(pipeline_settings, api, publisher) -> Pipeline:
    return Pipeline(pipeline_settings, api, publisher)
