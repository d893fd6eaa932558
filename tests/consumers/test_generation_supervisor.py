"""Index generations on the consumers' side, against the real broker, Chroma and Ray: a generation's
resources dropped, and the supervisor that runs one consumer group per generation."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import chromadb
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from chromadb.errors import NotFoundError

from consumers.generation_resources import drop_generation
from consumers.generations import GenerationSupervisor
from engines.chroma import open_collection
from engines.chunking import Chunker
from engines.embedder import Embedder
from schemas import DocumentEvent, EventOp, Settings
from schemas.generations import ACTIVE_KEY, ActiveGeneration, Generation, IndexShape, generation_key
from streams.control import publish_control, read_control_state
from streams.lag import LagReader
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

pytestmark = [pytest.mark.integration]


#: Small and quick on 2 cores: one consumer per generation at half a Ray CPU, so that two
#: generations and a member being replaced fit beside each other.
QUICK = {
    "partitions": 2,
    "consumer_input": "events",  # no changes stage: the consumers read the events topic
    "consumers_min": 1,
    "consumers_max": 1,
    "consumer_num_cpus": 0.5,
    "consumer_memory_bytes": 500_000_000,
    "torch_threads": 1,
    "fetch_max_records": 64,
    "reindex_keep_s": 3.0,
}


@pytest.fixture(scope="module")
def base_settings(kafka_broker, chroma_server, module_namespace, tmp_path_factory) -> Settings:
    """Generation 0's settings, with chunks of 1000 characters."""
    servers, state = kafka_broker.bootstrap_servers, tmp_path_factory.mktemp("generations-state")
    where = {"bootstrap_servers": servers, "chroma_port": chroma_server.port, "state_dir": state}
    return Settings.model_validate(QUICK | where | {"chunk_size": 1000}).namespaced(module_namespace)


def shaped(settings: Settings, chunk_size: int, chunk_overlap: int) -> IndexShape:
    return IndexShape(settings.model, chunk_size, chunk_overlap, settings.precision)


async def collection_names(settings: Settings) -> set[str]:
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    return {collection.name for collection in await client.list_collections()}


class Broker:
    """What an operator would list on the broker: topics, consumer groups, committed offsets."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def __aenter__(self) -> Broker:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.bootstrap_servers)
        await self._admin.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._admin.close()

    async def topics(self) -> set[str]:
        return set(await self._admin.list_topics())

    async def groups(self) -> set[str]:
        return {group for group, *_ in await self._admin.list_consumer_groups()}

    async def offsets(self, group: str) -> dict[TopicPartition, OffsetAndMetadata]:
        return await self._admin.list_consumer_group_offsets(group)


async def commit_offset(settings: Settings, offset: int) -> None:
    """Commit ``offset`` on the input topic's partition 0 for the generation's consumer group."""
    tp = TopicPartition(settings.input_topic, 0)
    servers, group = settings.bootstrap_servers, settings.consumer_group
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def test_dropping_a_generation_deletes_its_collection_chunk_log_and_offsets_and_nothing_else(
    base_settings,
):
    gen = Generation(7, shaped(base_settings, 400, 40)).settings(base_settings)
    await ensure_topics(base_settings)
    await ensure_topics(gen)
    client = await chromadb.AsyncHttpClient(host=gen.chroma_host, port=gen.chroma_port)
    await open_collection(client, gen.collection)
    await open_collection(client, base_settings.collection)
    await commit_offset(gen, 0)
    await commit_offset(base_settings, 0)
    async with Broker(base_settings) as broker:
        assert await broker.offsets(gen.consumer_group)

        await drop_generation(gen, active=base_settings)

        assert gen.collection not in await collection_names(gen)
        assert gen.chunks_topic not in await broker.topics()
        assert gen.consumer_group not in await broker.groups()
        assert not await broker.offsets(gen.consumer_group)
        # The active generation's resources, and the topics all generations share, stay.
        assert base_settings.collection in await collection_names(gen)
        assert {base_settings.chunks_topic, gen.input_topic, gen.control_topic} <= await broker.topics()
        assert await broker.offsets(base_settings.consumer_group)


async def test_dropping_a_generation_again_finds_nothing_to_do(base_settings):
    gen = Generation(8, shaped(base_settings, 400, 40)).settings(base_settings)

    await drop_generation(gen, active=base_settings)
    await drop_generation(gen, active=base_settings)

    with pytest.raises(NotFoundError):
        await (await chromadb.AsyncHttpClient(host=gen.chroma_host, port=gen.chroma_port)).get_collection(
            gen.collection
        )


async def test_the_active_generations_resources_are_never_dropped(base_settings):
    await ensure_topics(base_settings)
    client = await chromadb.AsyncHttpClient(host=base_settings.chroma_host, port=base_settings.chroma_port)
    await open_collection(client, base_settings.collection)
    active = Generation(3, shaped(base_settings, 400, 40)).settings(base_settings)

    with pytest.raises(ValueError, match="active generation"):
        await drop_generation(active, active=active)
    with pytest.raises(ValueError, match="active generation"):
        await drop_generation(base_settings, active=base_settings)

    assert base_settings.collection in await collection_names(base_settings)


# The supervisor: the tests below run in this order on one supervisor, each starting where the
# one before left off, as a reindex does: build generation 1 beside 0, switch to 1 (0 is kept a
# few seconds, then dropped), then start generation 2 and abort it, then build generation 3 with
# another model.

#: The words the documents are made of.
WORDS = [
    first + last for first in ("ka", "lo", "mi", "ru", "se", "ta") for last in ("ber", "don", "fel", "mar")
]


def document(doc_id: str, version: int, seed: int) -> DocumentEvent:
    """About 1,200 characters in paragraphs: a few chunks at 1000 characters, more at 400."""
    rng = random.Random(seed)
    paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40))) + "." for _ in range(6)]
    return DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content="\n\n".join(paragraphs), version=version)


def expected_chunks(events: list[DocumentEvent], chunker: Chunker) -> dict[str, str]:
    """chunk id → text, as if every event had been applied once, in order."""
    latest: dict[str, DocumentEvent] = {}
    for event in events:
        if event.doc_id not in latest or event.version >= latest[event.doc_id].version:
            latest[event.doc_id] = event
    return {
        chunk.id: chunk.text
        for event in latest.values()
        if event.op is EventOp.UPSERT
        for chunk in chunker.split(event.doc_id, event.content)
    }


async def indexed_chunks(settings: Settings) -> dict[str, str]:
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    page = await (await client.get_collection(settings.collection)).get(include=["documents"])
    return dict(zip(page["ids"], page["documents"] or [], strict=True))


async def until(condition, what: str, supervising: asyncio.Task, timeout: float = 240) -> None:
    """Wait until ``condition()`` (awaited if it must be) is true; a supervisor that ended is an
    error at once."""
    deadline = time.monotonic() + timeout
    while not await holds(condition):
        if supervising.done():
            raise AssertionError(f"the supervisor ended while waiting for {what}: {supervising!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen in {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def holds(condition) -> bool:
    result = condition()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


def thread_niceness(pid: int) -> set[int]:
    """The nice value of each thread of process ``pid`` (field 19 of /proc/<pid>/task/*/stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            values.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
    return values


@dataclass
class Supervised:
    supervisor: GenerationSupervisor
    task: asyncio.Task
    base: Settings
    published: list[DocumentEvent] = field(default_factory=list)

    def settings(self, number: int, chunk_size: int, chunk_overlap: int) -> Settings:
        return Generation(number, shaped(self.base, chunk_size, chunk_overlap)).settings(self.base)

    async def publish(self, events: list[DocumentEvent]) -> None:
        async with EventPublisher(self.base.kafka, self.base.events_topic) as publisher:
            await publisher.publish_many(events)
        self.published.extend(events)

    async def drained(self, settings: Settings) -> bool:
        async with LagReader(settings.kafka) as reader:
            partitions = await reader.read(settings.input_topic, settings.consumer_group)
        return bool(partitions) and all(p.committed == p.end_offset for p in partitions)

    async def until(self, condition, what: str, timeout: float = 240) -> None:
        await until(condition, what, self.task, timeout)

    async def niceness(self, number: int) -> set[int]:
        group = self.supervisor.groups[number]
        pids = await asyncio.to_thread(group.pids)
        return set().union(*(thread_niceness(pid) for pid in pids))

    async def assert_index(self, settings: Settings) -> None:
        await self.until(lambda: self.drained(settings), f"{settings.consumer_group} drained")
        want = expected_chunks(self.published, Chunker(settings.chunk_size, settings.chunk_overlap))
        got = await indexed_chunks(settings)
        assert got.keys() - want.keys() == set(), f"stale chunks in {settings.collection}"
        assert want.keys() - got.keys() == set(), f"chunks missing from {settings.collection}"
        assert got == want


@pytest.fixture(scope="module")
async def supervised(base_settings) -> AsyncIterator[Supervised]:
    """``ragstream consume``'s supervisor on the module's topics, with no control record yet."""
    supervisor = GenerationSupervisor(base_settings, controller_options={"interval_s": 1.0})
    stop = threading.Event()
    task = asyncio.create_task(supervisor.run(stop))
    running = Supervised(supervisor, task, base_settings)
    await running.until(lambda: 0 in supervisor.groups, "generation 0's consumers")
    yield running
    stop.set()
    await asyncio.wait_for(task, 240)


async def test_a_new_generation_is_built_from_the_whole_input_while_the_active_one_indexes_live_events(
    supervised,
):
    base = supervised.base
    first = [document(f"doc-{i}", 1, seed=i) for i in range(30)]
    await supervised.publish(first)
    await supervised.until(lambda: supervised.drained(base), "generation 0 drained")
    assert supervised.supervisor.groups.keys() == {0}

    # What `ragstream reindex --chunk-size 400` writes.
    rebuilt = supervised.settings(1, 400, 40)
    await publish_control(
        base,
        [
            (generation_key(0), Generation.base(base).to_json()),
            (generation_key(1), Generation(1, shaped(base, 400, 40)).to_json()),
        ],
    )
    await supervised.until(lambda: 1 in supervised.supervisor.groups, "generation 1's consumers")
    assert await supervised.niceness(1) == {base.reindex_niceness}
    assert await supervised.niceness(0) == {0}
    live = [document(f"doc-{i}", 2, seed=100 + i) for i in range(0, 10)]
    live += [DocumentEvent(doc_id=f"doc-{i}", op=EventOp.DELETE, version=2) for i in range(10, 15)]
    live += [document(f"doc-{i}", 1, seed=i) for i in range(30, 45)]
    await supervised.publish(live)

    await supervised.assert_index(base)
    await supervised.assert_index(rebuilt)
    assert {len(text) for text in (await indexed_chunks(rebuilt)).values()} <= set(range(1, 401))
    assert max(len(text) for text in (await indexed_chunks(base)).values()) > 400


async def test_after_a_switch_the_new_generation_serves_at_full_priority_and_the_old_one_is_dropped(
    supervised,
):
    base, rebuilt = supervised.base, supervised.settings(1, 400, 40)
    old_members = set(await asyncio.to_thread(supervised.supervisor.groups[1].pids))

    # What `ragstream reindex switch` writes; the old generation is kept reindex_keep_s (3 s).
    await publish_control(
        base, [(ACTIVE_KEY, ActiveGeneration(1, previous=0, switched_at=time.time()).to_json())]
    )

    await supervised.until(lambda: 0 not in supervised.supervisor.groups, "generation 0 stopped")
    assert 0 not in (await read_control_state(base)).generations
    await supervised.until(lambda: _gone(base), "generation 0's collection, chunk log and offsets dropped")
    members = set(await asyncio.to_thread(supervised.supervisor.groups[1].pids))
    assert not members & old_members, "the members built at nice 10 were not replaced"
    assert await supervised.niceness(1) == {0}
    await supervised.publish([document(f"doc-{i}", 3, seed=200 + i) for i in range(5, 20)])
    await supervised.assert_index(rebuilt)


async def _gone(settings: Settings) -> bool:
    async with Broker(settings) as broker:
        return (
            settings.collection not in await collection_names(settings)
            and settings.chunks_topic not in await broker.topics()
            and settings.consumer_group not in await broker.groups()
        )


async def test_tombstoning_a_generation_being_built_stops_its_consumers_and_drops_what_it_made(supervised):
    base, aborted = supervised.base, supervised.settings(2, 300, 0)
    await publish_control(base, [(generation_key(2), Generation(2, shaped(base, 300, 0)).to_json())])
    await supervised.until(lambda: 2 in supervised.supervisor.groups, "generation 2's consumers")
    assert await supervised.niceness(2) == {base.reindex_niceness}
    await supervised.until(lambda: supervised.drained(aborted), "generation 2 built")
    assert await indexed_chunks(aborted)

    # What `ragstream reindex abort` writes.
    await publish_control(base, [(generation_key(2), None)])

    await supervised.until(lambda: 2 not in supervised.supervisor.groups, "generation 2 stopped")
    await supervised.until(lambda: _gone(aborted), "generation 2's collection, chunk log and offsets dropped")
    async with Broker(base) as broker:
        assert not await broker.offsets(aborted.consumer_group)
    # No consumer of generation 2 is left to make its collection again; generation 1 indexes on.
    await supervised.publish([document("doc-50", 1, seed=50)])
    await supervised.assert_index(supervised.settings(1, 400, 40))
    assert aborted.collection not in await collection_names(base)
    assert supervised.supervisor.groups.keys() == {1}


async def test_a_generation_of_another_model_is_built_with_that_model_s_vectors_of_its_dimension(
    supervised, second_model
):
    base = supervised.base
    shape = IndexShape(second_model, 400, 40, base.precision)
    other = Generation(3, shape).settings(base)
    await publish_control(base, [(generation_key(3), Generation(3, shape).to_json())])
    await supervised.until(lambda: 3 in supervised.supervisor.groups, "generation 3's consumers")

    await supervised.assert_index(other)
    vectors = await indexed_vectors(other)
    reference = Embedder(second_model, "fp32")
    texts = await indexed_chunks(other)
    want = reference.encode([texts[chunk_id] for chunk_id in vectors])
    got = np.array(list(vectors.values()), dtype=np.float32)
    assert got.shape == (len(texts), reference.dimension) and reference.dimension != 384
    # The consumers embed in the generation's precision (bf16 where the CPU has it): near, not equal.
    assert float(np.min(np.sum(got * want, axis=1))) > 0.98
    # Generation 1, of the first model, indexes on beside it at its own dimension.
    assert {len(v) for v in (await indexed_vectors(supervised.settings(1, 400, 40))).values()} == {384}


async def indexed_vectors(settings: Settings) -> dict[str, list[float]]:
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    page = await (await client.get_collection(settings.collection)).get(include=["embeddings"])
    return {chunk_id: list(vector) for chunk_id, vector in zip(page["ids"], page["embeddings"], strict=True)}
