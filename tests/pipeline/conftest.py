"""The whole pipeline for end-to-end tests: real broker, Chroma server, Ray actors and model."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import pytest
import ray
from stage_process import StageProcess

from consumers.actors import ConsumerGroup
from engines.embedder import Embedder
from query_api import create_app
from schemas import Settings
from streams.hops import HopLag, drained, read_pipeline_lag
from streams.lag import LagReader
from streams.publisher import EventPublisher
from streams.topics import ensure_topics
from streams.watcher import FolderWatcher


@pytest.fixture(scope="module")
def pipeline_settings(kafka_broker, chroma_server, module_namespace, tmp_path_factory) -> Settings:
    """The default topology (events → changes stage → docs.changes → indexers) on topics, groups
    and a collection of the test module's own; the broker and Chroma are the session's."""
    return Settings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        chroma_port=chroma_server.port,
        partitions=6,
        chunk_size=1000,
        chunk_overlap=100,
        state_dir=tmp_path_factory.mktemp("pipeline-state"),
    ).namespaced(module_namespace)


@pytest.fixture(scope="module")
async def changes_stage(pipeline_settings):
    await ensure_topics(pipeline_settings)
    stage = StageProcess(pipeline_settings, pipeline_settings.state_dir / "stage.log")
    stage.start()
    yield stage
    await asyncio.to_thread(stage.stop)


@pytest.fixture(scope="session")
def ray_session():
    """Ray, once for the session: each module's consumer group starts its actors in it."""
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
async def consumer_group(pipeline_settings, changes_stage, ray_session):
    group = ConsumerGroup(pipeline_settings, count=2)
    await asyncio.to_thread(group.start)
    await asyncio.to_thread(group.wait_ready)
    yield group
    await asyncio.to_thread(group.stop)


@pytest.fixture(scope="session")
def query_embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
async def api(pipeline_settings, consumer_group, query_embedder):
    app = create_app(pipeline_settings, embedder=query_embedder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ragstream") as client:
            yield client


@pytest.fixture(scope="module")
async def publisher(pipeline_settings):
    async with EventPublisher(pipeline_settings.kafka, pipeline_settings.events_topic) as pub:
        yield pub


class Pipeline:
    """What a test does to the running system and reads back from it."""

    def __init__(
        self,
        settings: Settings,
        api: httpx.AsyncClient,
        publisher: EventPublisher,
        changes_stage: StageProcess,
    ) -> None:
        self.settings = settings
        self.api = api
        self.publisher = publisher
        self.changes_stage = changes_stage

    async def lag(self) -> list[HopLag]:
        """Every hop's lag, upstream (the changes stage on the events topic) first."""
        async with LagReader(self.settings.kafka) as reader:
            return await read_pipeline_lag(reader, self.settings)

    async def events_published(self) -> int:
        return sum(p.end_offset for p in (await self.lag())[0].partitions)

    async def drain(self, timeout: float = 240) -> None:
        """Wait until every hop's committed offsets reach their end offsets (every event is in the
        index), then, briefly, until the consumers' counters read through the API catch up."""
        deadline = time.monotonic() + timeout
        while True:
            hops = await self.lag()
            self.changes_stage.assert_running()
            if drained(hops):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"pipeline did not drain in {timeout}s: {hops}")
            await asyncio.sleep(0.3)
        # Counters travel through the stats topic a moment after the commit; tests that read
        # them assert on them, so a counter that never catches up still fails its test.
        published = sum(p.end_offset for p in hops[-1].partitions)
        counters_deadline = time.monotonic() + 30
        while time.monotonic() < counters_deadline:
            if await self.metric("ragstream_events_consumed_total") >= published:
                return
            await asyncio.sleep(0.3)

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


@pytest.fixture(scope="module")
async def pipeline(pipeline_settings, api, publisher, changes_stage) -> Pipeline:
    return Pipeline(pipeline_settings, api, publisher, changes_stage)


class WatchedFolder:
    """A folder watcher on a temporary folder, run as a task of the test's event loop and publishing
    through the pipeline's publisher; it can be stopped and started again like the CLI."""

    def __init__(self, root, settings: Settings, publisher: EventPublisher, namespace: str) -> None:
        self.root = root
        self.settings = settings
        self.publisher = publisher
        self.namespace = namespace
        self.watcher: FolderWatcher | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def doc_id(self, relative: str) -> str:
        return f"{self.namespace}/{relative}"

    async def start(self) -> FolderWatcher:
        self._stop = asyncio.Event()
        self.watcher = FolderWatcher(self.root, self.publisher, self.settings, self.namespace)
        self._task = asyncio.create_task(self.watcher.run(self._stop))
        ready = asyncio.create_task(self.watcher.ready.wait())
        await asyncio.wait({self._task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()
        assert self.watcher.ready.is_set(), "the watcher did not finish its start-up pass in 60 s"
        return self.watcher

    async def stop(self) -> None:
        if self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, timeout=60)
            self._task = None

    async def published(self, count: int, timeout: float = 30) -> None:
        """Wait until the running watcher has published ``count`` events since it started."""
        deadline = time.monotonic() + timeout
        while self.watcher is None or self.watcher.stats.published < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the watcher published {self.watcher and self.watcher.stats}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def watched_folder(tmp_path, pipeline_settings, pipeline):
    root = tmp_path / "watched"
    root.mkdir()
    settings = pipeline_settings.model_copy(update={"state_dir": tmp_path / "state", "watch_settle_ms": 100})
    folder = WatchedFolder(root, settings, pipeline.publisher, namespace=f"watch-{uuid.uuid4().hex[:8]}")
    yield folder
    await folder.stop()


class ApiInstance:
    """One more instance of the query API on the running pipeline: a replica, or the API restarted.

    ``async with`` starts its lifespan (the BM25 index replays the chunk log) and gives a client.
    """

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self._app = create_app(settings, embedder=embedder)
        self._lifespan = self._app.router.lifespan_context(self._app)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        await self._lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self._app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://replica")
        return self._client

    async def __aexit__(self, *exc_info) -> None:
        if self._client is not None:
            await self._client.aclose()
        await self._lifespan.__aexit__(*exc_info)


@pytest.fixture
def api_instance(pipeline_settings, query_embedder):
    """Factory: ``async with api_instance() as client`` runs another query API instance."""
    return lambda: ApiInstance(pipeline_settings, query_embedder)
