"""A zero-downtime reindex on the real stack: broker, changes stage, Ray consumers, Chroma, the API.

The consumers run as ``ragstream consume`` does (``GenerationSupervisor``, one group per index
generation), the API follows the control topic, and the reindex is driven by the functions behind
``ragstream reindex``. While the new generation is built from the changes topic, documents are
written at 5/s and searched at 20/s, and its consumer is killed (SIGKILL) part way through; every
response is kept and checked afterwards, and the new index chunk for chunk.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field

import chromadb
import httpx
import pytest
import ray
from index_oracle import differences, expected_index, paragraph
from scale import scaled, scaled_timeout

from consumers.actors import init_ray
from consumers.generations import GENERATIONS_AT_ONCE, GenerationSupervisor
from engines.chroma import open_collection
from engines.chunking import Chunker
from query_api import create_app
from ragstream.reindex import (
    abort,
    check_request,
    requested_shape,
    rollback,
    start_generation,
    switch,
    wait_serving,
)
from ragstream.reindex_progress import BuildProgress, read_progress
from schemas import DocumentEvent, EventOp, Settings
from schemas.generations import Generation, IndexShape
from streams.control import read_control_state
from streams.hops import drained, read_pipeline_lag
from streams.lag import LagReader
from streams.publisher import EventPublisher

pytestmark = scaled_timeout()

DOCUMENTS = scaled(2000, 5000)
NEW_CHUNKING = (400, 40)
WRITES_PER_S = 5.0
SEARCHES_PER_S = 20.0
WORDS = ["river", "stone", "ledger", "lantern", "orbit", "cedar", "harbor", "signal", "quartz", "meadow"]


@pytest.fixture(scope="module")
def settings(pipeline_settings) -> Settings:
    # Long enough that the generation switched away from is still kept for the rollback below; one
    # consumer per generation, so that three fit a Ray that an earlier module started on 2 CPUs.
    return pipeline_settings.model_copy(update={"reindex_keep_s": 900.0, "consumers_max": 1})


@pytest.fixture(scope="module")
def supervisor(settings, changes_stage, ray_session):
    """``ragstream consume``: one consumer group per generation, on a thread of its own."""
    # Ray started here, on the main thread, before the supervisor's thread places actors in it.
    init_ray(settings.consumers_max * GENERATIONS_AT_ONCE)
    stop = threading.Event()
    supervisor = GenerationSupervisor(settings)
    failure: list[str] = []

    def run() -> None:
        try:
            asyncio.run(supervisor.run(stop))
        except BaseException:  # noqa: BLE001 - handed to the test below
            failure.append(traceback.format_exc())

    thread = threading.Thread(target=run, name="consume", daemon=True)
    thread.start()
    yield supervisor
    stop.set()
    thread.join(timeout=240)
    assert not failure, f"the consumers' process failed: {failure[0]}"


@pytest.fixture(scope="module")
async def api(settings, supervisor, query_embedder):
    app = create_app(settings, embedder=query_embedder, replica="reindex-test")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ragstream") as client:
            yield client


@dataclass
class Corpus:
    """The documents written, as events, so that the expected index can be computed from them."""

    rng: random.Random = field(default_factory=lambda: random.Random(18))
    events: list[DocumentEvent] = field(default_factory=list)
    live: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def upsert(self, doc_id: str, paragraphs: list[str]) -> DocumentEvent:
        self.live[doc_id] = paragraphs
        return self._event(doc_id, EventOp.UPSERT, "\n\n".join(paragraphs))

    def new(self, number: int) -> DocumentEvent:
        return self.upsert(f"doc-{number}", [paragraph(self.rng) for _ in range(self.rng.randint(2, 7))])

    def change(self) -> DocumentEvent:
        """An edit of one paragraph (half the time), a new document, or a deletion."""
        roll = self.rng.random()
        if roll < 0.25 or not self.live:
            return self.new(len(self.versions))
        doc_id = self.rng.choice(sorted(self.live))
        if roll < 0.5:
            del self.live[doc_id]
            return self._event(doc_id, EventOp.DELETE, "")
        paragraphs = list(self.live[doc_id])
        paragraphs[self.rng.randrange(len(paragraphs))] = paragraph(self.rng)
        return self.upsert(doc_id, paragraphs)

    def _event(self, doc_id: str, op: EventOp, content: str) -> DocumentEvent:
        self.versions[doc_id] = self.versions.get(doc_id, 0) + 1
        event = DocumentEvent(
            doc_id=doc_id, op=op, content=content, version=self.versions[doc_id], source="t"
        )
        self.events.append(event)
        return event


@dataclass
class Seen:
    """One search as the client saw it."""

    at: float
    #: the same moment by the wall clock, which the switch record's time is on
    wall: float
    status: int
    generation: int | None = None
    hit_generations: frozenset[int] = frozenset()


class LiveTraffic:
    """Writes at 5/s and searches at 20/s until stopped; records what every search returned."""

    def __init__(self, api: httpx.AsyncClient, publisher: EventPublisher, corpus: Corpus) -> None:
        self.api, self.publisher, self.corpus = api, publisher, corpus
        self.searches: list[Seen] = []
        self.written_at: list[float] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._search())]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _write(self) -> None:
        while not self._stop.is_set():
            await self.publisher.publish(self.corpus.change())
            self.written_at.append(time.monotonic())
            await asyncio.sleep(1 / WRITES_PER_S)

    async def _search(self) -> None:
        rng = random.Random(7)
        pending: set[asyncio.Task[None]] = set()
        while not self._stop.is_set():
            query = " ".join(rng.sample(WORDS, 3))
            task = asyncio.create_task(self._one(query))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(1 / SEARCHES_PER_S)
        await asyncio.gather(*pending)

    async def _one(self, query: str) -> None:
        at, wall = time.monotonic(), time.time()
        response = await self.api.post("/v1/search", json={"query": query, "k": 5, "mode": "hybrid"})
        if response.status_code != 200:
            self.searches.append(Seen(at, wall, response.status_code))
            return
        body = response.json()
        hits = frozenset(hit["generation"] for hit in body["hits"])
        self.searches.append(Seen(at, wall, 200, body["generation"], hits))


async def _drain(settings: Settings, timeout: float = 300) -> None:
    """Until the stage and the generation's consumer group have committed everything published."""
    deadline = time.monotonic() + timeout
    async with LagReader(settings.kafka) as reader:
        while not drained(hops := await read_pipeline_lag(reader, settings)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not drained in {timeout} s: {hops}")
            await asyncio.sleep(0.5)


async def _collection_content(settings: Settings) -> dict[str, dict]:
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    collection = await open_collection(client, settings.collection)
    content: dict[str, dict] = {}
    while True:
        page = await collection.get(include=["documents", "metadatas"], limit=1000, offset=len(content))
        for chunk_id, text, metadata in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
            content[chunk_id] = {"text": text, "metadata": metadata}
        if len(page["ids"]) < 1000:
            return content


async def _put(api: httpx.AsyncClient, doc_id: str, content: str) -> dict:
    response = await api.put(f"/v1/documents/{doc_id}", json={"content": content, "source": "t"})
    assert response.status_code == 202, response.text
    return response.json()


async def _search_with_token(api: httpx.AsyncClient, doc_id: str, query: str, token: str) -> dict:
    body = {"query": query, "k": 3, "filter": {"doc_id": doc_id}, "consistent_with": token}
    response = await api.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@dataclass(frozen=True)
class Build:
    generation: Generation
    receipt: dict  # of a write through the API before the switch
    started: float
    switched: float  # the switch record written
    switched_at: float  # the time in the switch record (wall clock), set just before it is written
    served: float  # every live replica said it serves the new generation


async def _reindex_under(
    traffic: LiveTraffic, settings: Settings, api: httpx.AsyncClient, supervisor: GenerationSupervisor
) -> Build:
    """What `ragstream reindex --chunk-size 400 --chunk-overlap 40` does, while ``traffic`` runs,
    with the rebuilding consumer killed (SIGKILL) part way through."""
    # A write through the API before the switch: its token must still be honoured after it.
    receipt = await _put(api, "token-doc", TOKEN_DOC)
    size, overlap = NEW_CHUNKING
    shape = requested_shape(IndexShape.of(settings), chunk_size=size, chunk_overlap=overlap)
    generation = await start_generation(settings, await check_request(settings, shape))
    started = time.monotonic()
    # The rebuild is under way while writes and searches run: it has read part of the log.
    progress = await _started_building(settings, generation)
    assert progress.lag > 0, f"the rebuild finished before it could be observed in flight: {progress}"
    # Killed like a crash, with part of the log still to read: Ray restarts it, and it resumes
    # from its group's committed offsets (the chunk-for-chunk check below finds any loss).
    group = supervisor.groups[generation.number]
    pid = await asyncio.to_thread(lambda: ray.get(group.actors[0].pid.remote(), timeout=60))
    os.kill(pid, signal.SIGKILL)
    chroma = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    async with LagReader(settings.kafka) as lag:
        left = await read_progress(settings, lag, chroma, generation)
    assert left.lag > 0, f"the kill landed after the rebuild had read everything: {left}"
    record = await switch(settings, within_s=scaled(480, 1800))
    switched = time.monotonic()
    assert (record.generation, record.previous) == (generation.number, 0)
    live, behind = await wait_serving(settings, generation.number, within_s=60)
    assert [r.replica for r in live] == ["reindex-test"] and not behind
    served = time.monotonic()
    await asyncio.sleep(3)  # searches and writes go on against the new generation
    return Build(generation, receipt, started, switched, record.switched_at, served)


async def _started_building(settings: Settings, generation: Generation) -> BuildProgress:
    """The generation's progress once its consumers committed their first batch."""
    chroma = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    async with LagReader(settings.kafka) as lag:
        deadline = time.monotonic() + 240
        while (progress := await read_progress(settings, lag, chroma, generation)).read == 0:
            assert time.monotonic() < deadline, f"generation {generation.number} did not start building"
            await asyncio.sleep(0.2)
    return progress


CORPUS = Corpus()
TOKEN_DOC = "The quillwort grows in the cold lakes of the north."


async def test_a_reindex_under_writes_and_searches_switches_every_search_at_once_and_loses_nothing(
    settings, api, supervisor
) -> None:
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        await publisher.publish_many(CORPUS.new(n) for n in range(DOCUMENTS))
        await _drain(settings)
        traffic = LiveTraffic(api, publisher, CORPUS)
        traffic.start()
        try:
            build = await _reindex_under(traffic, settings, api, supervisor)
        finally:
            await traffic.stop()
    generation, receipt = build.generation, build.receipt

    after = await _search_with_token(api, "token-doc", "where does the quillwort grow", receipt["token"])
    assert after["generation"] == generation.number
    assert [hit["doc_id"] for hit in after["hits"]][:1] == ["token-doc"]

    failed = [seen for seen in traffic.searches if seen.status != 200]
    assert not failed, f"{len(failed)} of {len(traffic.searches)} searches failed, e.g. {failed[:3]}"
    mixed = [seen for seen in traffic.searches if seen.hit_generations - {seen.generation}]
    assert not mixed, f"searches answered by two generations at once: {mixed[:3]}"
    # A search is answered by the generation serving when it began; the switch record's own time
    # precedes its write, so whatever began before it was answered by generation 0.
    before = {seen.generation for seen in traffic.searches if seen.wall < build.switched_at}
    after_switch = {seen.generation for seen in traffic.searches if seen.at > build.served}
    assert before == {0}, "a search was answered by the new generation before the switch"
    assert after_switch == {generation.number}, "a search went to the old generation after the switch"
    during = [at for at in traffic.written_at if build.started <= at <= build.switched]
    assert len(during) >= 5, f"only {len(during)} writes were made while the generation was built"
    assert sum(1 for seen in traffic.searches if build.started <= seen.at <= build.switched) >= 20

    # The new collection is the new chunking of every live document, chunk for chunk: every write
    # made before, during and after the build, the API's included.
    new_settings = generation.settings(settings)
    await _drain(new_settings)
    token_event = DocumentEvent(
        doc_id="token-doc",
        op=EventOp.UPSERT,
        content=TOKEN_DOC,
        version=receipt["version"],
    )
    expected = expected_index([*CORPUS.events, token_event], Chunker(*NEW_CHUNKING))
    problems = differences(expected, await _collection_content(new_settings))
    assert not problems, "\n".join(problems[:10])
    # The old generation was kept current beside it, for a rollback.
    await _drain(settings)
    old = expected_index([*CORPUS.events, token_event], Chunker(settings.chunk_size, settings.chunk_overlap))
    assert not differences(old, await _collection_content(settings))


async def test_a_rollback_serves_the_kept_generation_again_with_the_writes_made_since_the_switch(
    settings, api, supervisor
) -> None:
    state = await read_control_state(settings)
    assert state.roles() == {0: "kept", 1: "active"}, "runs after the reindex above"
    receipt = await _put(api, "after-switch", "The saxifrage splits the granite of the high passes.")
    record = await rollback(settings)
    assert (record.generation, record.previous) == (0, 1)
    live, behind = await wait_serving(settings, 0, within_s=60)
    assert [r.replica for r in live] == ["reindex-test"] and not behind
    found = await _search_with_token(api, "after-switch", "what splits the granite", receipt["token"])
    assert found["generation"] == 0
    assert [hit["doc_id"] for hit in found["hits"]][:1] == ["after-switch"]
    assert {hit["generation"] for hit in found["hits"]} == {0}


async def test_an_aborted_reindex_drops_what_it_built_and_the_active_generation_keeps_serving(
    settings, api, supervisor
) -> None:
    shape = requested_shape(IndexShape.of(settings), chunk_size=600, chunk_overlap=0)
    generation = await start_generation(settings, await check_request(settings, shape))
    await _started_building(settings, generation)
    result = await abort(settings, within_s=120)
    assert result.generation == generation and result.consumers_running and result.dropped
    state = await read_control_state(settings)
    assert generation.number not in state.roles() and state.building() is None
    chroma = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    names = {c.name for c in await chroma.list_collections()}
    assert generation.settings(settings).collection not in names
    assert settings.collection in names
    response = await api.post("/v1/search", json={"query": "granite passes", "k": 3})
    assert response.status_code == 200 and response.json()["generation"] == 0
