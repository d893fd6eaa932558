"""Fault-injection scenarios: a consumer group on its own topics, an event stream, an oracle, and
a two-node Ray cluster to lose a node of."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import chromadb
import pytest
import ray
from aiokafka.errors import KafkaError
from in_flight import InFlight
from index_oracle import differences, expected_index

from consumers.actors import RAY_NAMESPACE, ConsumerGroup
from deploy import RayCluster
from engines.chroma import open_collection
from engines.chunking import Chunker
from schemas import DocumentEvent, Settings
from streams.lag import LagReader
from streams.publisher import EventPublisher
from streams.topics import ensure_topics


@dataclass
class Scenario:
    """Runs an event stream through a consumer group while a test does damage."""

    settings: Settings
    group: ConsumerGroup | None = None
    published: list[DocumentEvent] = field(default_factory=list)
    #: The work in flight at each fault, noted by the test as it does them.
    faults: InFlight = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.faults = InFlight(s.bootstrap_servers, s.input_topic, s.consumer_group)

    async def start_consumers(self, count: int) -> ConsumerGroup:
        await ensure_topics(self.settings)
        self.group = ConsumerGroup(self.settings, count)
        await asyncio.to_thread(self.group.start)
        await asyncio.to_thread(self.group.wait_ready)
        return self.group

    async def publish(
        self,
        events: list[DocumentEvent],
        slice_size: int = 50,
        pause: float = 0.1,
        until: asyncio.Event | None = None,
        backlog: int | None = None,
    ) -> None:
        """Publish in slices; a slice that fails (broker down) is sent again until acknowledged.

        With ``until``, stop at the first slice after it is set: a scenario publishes while its
        faults are done, however long they take, and the stream is what was published by then.
        With ``backlog``, hold a slice back while that many events wait for the consumers: the
        work in flight stays bounded on a slow machine, and so does the time to drain it.
        """
        async with EventPublisher(self.settings.kafka, self.settings.events_topic) as publisher:
            for start in range(0, len(events), slice_size):
                if backlog is not None:
                    await self._while_backlog_reaches(backlog, until)
                if until is not None and until.is_set():
                    return
                part = events[start : start + slice_size]
                deadline = time.monotonic() + 120
                while True:
                    try:
                        await publisher.publish_many(part)
                        break
                    except KafkaError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(1)
                self.published.extend(part)
                await asyncio.sleep(pause)

    async def _while_backlog_reaches(self, most: int, until: asyncio.Event | None) -> None:
        while until is None or not until.is_set():
            try:
                _, waiting = await self.faults.read()
            except KafkaError:
                return  # a broker restarting: the slice goes, and is sent again if it must
            if waiting < most:
                return
            await asyncio.sleep(0.5)

    async def drain(self, timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        partitions: list = []
        while time.monotonic() < deadline:
            try:
                async with LagReader(self.settings.kafka) as reader:
                    partitions = await reader.read(self.settings.events_topic, self.settings.consumer_group)
                if partitions and all((p.committed or 0) == p.end_offset for p in partitions):
                    return
            except KafkaError:
                pass  # the broker may be restarting
            await asyncio.sleep(1)
        raise TimeoutError(f"not drained after {timeout}s: {partitions}")

    async def index_content(self) -> dict[str, dict]:
        client = await chromadb.AsyncHttpClient(
            host=self.settings.chroma_host, port=self.settings.chroma_port
        )
        collection = await open_collection(client, self.settings.collection)
        content: dict[str, dict] = {}
        offset = 0
        while True:
            page = await collection.get(include=["documents", "metadatas"], limit=1000, offset=offset)
            for chunk_id, text, metadata in zip(
                page["ids"], page["documents"], page["metadatas"], strict=True
            ):
                assert chunk_id not in content, f"duplicate chunk id {chunk_id}"
                content[chunk_id] = {"text": text, "metadata": metadata}
            if len(page["ids"]) < 1000:
                return content
            offset += 1000

    async def assert_index_matches_oracle(self) -> None:
        await self.drain()
        expected = expected_index(
            self.published, Chunker(self.settings.chunk_size, self.settings.chunk_overlap)
        )
        problems = differences(expected, await self.index_content())
        assert not problems, "\n".join(problems)
        async with LagReader(self.settings.kafka) as reader:
            for p in await reader.read(self.settings.events_topic, self.settings.consumer_group):
                assert (p.committed or 0) == p.end_offset, p

    def stop(self) -> None:
        if self.group is not None:
            group, self.group = self.group, None
            group.stop(timeout=120)


@pytest.fixture
async def scenario_factory():
    made: list[Scenario] = []

    def make(settings: Settings) -> Scenario:
        made.append(Scenario(settings))
        return made[-1]

    yield make
    for scenario in made:
        await asyncio.to_thread(scenario.stop)


@pytest.fixture
def two_node_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A head and a worker Ray node on this host, this process their driver (as ``RAY_ADDRESS``
    makes ``ragstream consume`` one): consumer groups started in the test run on them."""
    # A short folder name: Ray's socket paths under it must stay within 107 bytes.
    cluster = RayCluster(tmp_path_factory.mktemp("ray"), nodes=2, num_cpus=2)
    cluster.start()
    try:
        ray.shutdown()  # a local Ray an earlier test left connected
        ray.init(address=cluster.address, namespace=RAY_NAMESPACE, logging_level="WARNING")
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
