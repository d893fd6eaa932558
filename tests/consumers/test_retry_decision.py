"""What a consumer does with a batch that fails, against the real broker and Chroma server.

An event Chroma refuses is dead-lettered with Chroma's reason and the rest of its batch indexed;
a fault of the deployment (the collection deleted) stops the consumer with nothing committed and
nothing dead-lettered. That an outage is retried, skipping and dead-lettering nothing, is proven
by tests/faults/test_exactly_once.py, which restarts Chroma and a broker under running consumers
and compares the index with an oracle.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import chromadb
import numpy as np
import pytest

from consumers.consumer import IndexingConsumer
from consumers.errors import IndexMisconfigured
from engines.embedder import Embedder
from schemas import DocumentEvent, EventOp, Settings
from streams.dlq import StoredDeadLetter, read_dead_letters
from streams.lag import LagReader
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

#: A text that names this gets a vector Chroma refuses (NaN: HTTP 400, "Non-finite float value").
POISON = "POISON"


class NaNOnPoison:
    """Stands in for the model: the same unit vector for every text, NaN for a poisoned one."""

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.full((len(texts), 8), 8**-0.5, dtype=np.float32)
        vectors[[POISON in text for text in texts]] = np.nan
        return vectors


def upsert(doc_id: str, content: str) -> DocumentEvent:
    return DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content=content)


@pytest.fixture
async def settings(kafka_broker, chroma_server, module_namespace) -> Settings:
    settings = Settings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        chroma_port=chroma_server.port,
        partitions=1,
        consumer_input="events",
    ).namespaced(f"{module_namespace}-{uuid.uuid4().hex[:6]}")
    await ensure_topics(settings)
    return settings


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """A consumer of the settings' group, running until the test ends."""
    consumer = IndexingConsumer(settings, cast(Embedder, NaNOnPoison()))
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    yield task
    consumer.request_stop()
    await asyncio.wait([task])
    await consumer.stop()


async def publish(settings: Settings, *events: DocumentEvent) -> None:
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        await publisher.publish_many(events)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def indexed_doc_ids(settings: Settings) -> set[str]:
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    collection = await client.get_collection(settings.collection)
    found = await collection.get(include=["metadatas"])
    return {str(metadata["doc_id"]) for metadata in found["metadatas"] or []}


async def committed_and_end(settings: Settings) -> tuple[int | None, int]:
    async with LagReader(settings.kafka) as lag:
        (partition,) = await lag.read(settings.events_topic, settings.consumer_group)
    return partition.committed, partition.end_offset


async def dead_letters(settings: Settings) -> list[StoredDeadLetter]:
    return await read_dead_letters(settings.kafka, settings.dlq_topic)


async def test_an_event_chroma_refuses_is_dead_lettered_and_the_rest_of_its_batch_is_indexed(
    settings, running
):
    before, after = (
        upsert("before", "Published before the poisoned one."),
        upsert("after", "Published after it."),
    )
    await publish(settings, before, upsert("poisoned", f"This text is {POISON}."), after)

    async def drained() -> bool:
        committed, end = await committed_and_end(settings)
        return committed == end

    await eventually(drained, "the committed offset at the end of the topic")

    assert await indexed_doc_ids(settings) == {"before", "after"}
    (stored,) = await dead_letters(settings)
    assert stored.letter.key == b"poisoned" and stored.letter.offset == 1
    assert stored.letter.error_class == "InvalidArgumentError"
    assert "Non-finite float value" in stored.letter.reason
    assert not running.done()


async def test_a_deleted_collection_stops_the_consumer_without_committing_or_dead_lettering(
    settings, running
):
    await publish(settings, upsert("first", "Indexed while the collection exists."))

    async def first_committed() -> bool:
        return (await committed_and_end(settings))[0] == 1

    await eventually(first_committed, "the first event committed")
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    await client.delete_collection(settings.collection)
    await publish(settings, upsert("second", "Arrives after the collection was deleted."))

    done, _ = await asyncio.wait([running], timeout=60)

    assert done, "the consumer is still running"
    with pytest.raises(IndexMisconfigured, match="the collection is gone"):
        running.result()
    assert await committed_and_end(settings) == (1, 2)
    assert await dead_letters(settings) == []
