"""A document's trace: every hop it passed, with times, and where it waits when it has not."""

from __future__ import annotations

import asyncio
import time
import uuid

import chromadb
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from engines.chroma import open_collection
from schemas import DocumentEvent, EventOp, Settings
from streams.publisher import EventPublisher
from streams.topics import ensure_topics
from streams.trace import key_partition, read_trace

pytestmark = pytest.mark.integration

EVERY_HOP = ["published", "changes", "consumer batch", "chunks", "chroma", "searchable"]


async def _topology_without_workers(settings: Settings) -> tuple[Settings, str]:
    """Topics and groups of their own, which no stage and no consumer reads, and a doc id."""
    run = uuid.uuid4().hex[:8]
    names = ("events_topic", "changes_topic", "chunks_topic", "dlq_topic")
    update = {name: f"trace-{run}.{name.removesuffix('_topic')}" for name in names}
    update |= {"streams_app_id": f"trace-{run}-stage", "consumer_group": f"trace-{run}-indexer"}
    own = settings.model_copy(update=update)
    await ensure_topics(own)
    return own, f"trace/{run}"


async def _trace_when_searchable(api, doc_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get(f"/v1/trace/{doc_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["versions"] and body["versions"][0]["searchable"]:
            return body
        assert time.monotonic() < deadline, f"not searchable in {timeout}s: {body}"
        await asyncio.sleep(0.5)


async def test_a_searchable_document_shows_every_hop_in_order_with_times_that_never_go_back(pipeline) -> None:
    doc_id = f"trace/{uuid.uuid4().hex[:8]}"
    event = DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content="Guernica is a painting. " * 80)
    (receipt,) = await pipeline.publisher.publish_many([event])
    assert receipt.partition == key_partition(doc_id, pipeline.settings.partitions)

    body = await _trace_when_searchable(pipeline.api, doc_id)

    (newest, *_) = body["versions"]
    assert newest["version"] == event.version and newest["event_id"] == event.event_id
    assert [step["hop"] for step in newest["steps"]] == EVERY_HOP
    assert newest["waiting"] is None
    times = [step["at"] for step in newest["steps"] if step["at"] is not None]
    assert len(times) == 4  # published, changes, consumer batch, chunks
    assert times == sorted(times)
    assert (
        newest["steps"][0]["detail"]
        == f"{pipeline.settings.events_topic}[{receipt.partition}]@{receipt.offset}"
    )


async def test_an_edit_is_traced_beside_the_version_it_supersedes(pipeline) -> None:
    doc_id = f"trace/{uuid.uuid4().hex[:8]}"
    first = DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content="First words about tapestry.")
    await pipeline.publisher.publish_many([first])
    await _trace_when_searchable(pipeline.api, doc_id)
    second = DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content="Second words about pottery.")
    await pipeline.publisher.publish_many([second])

    body = await _trace_when_searchable(pipeline.api, doc_id)
    while body["versions"][0]["version"] != second.version:
        body = await _trace_when_searchable(pipeline.api, doc_id)

    newer, older = body["versions"]
    assert [step["hop"] for step in newer["steps"]] == EVERY_HOP
    assert older["version"] == first.version and older["steps"][-1]["hop"] == "superseded"


async def test_a_document_whose_consumers_are_stopped_shows_where_it_waits(pipeline) -> None:
    """A topology of its own with no consumer running: the stage's part is played by hand (the
    event copied to the changes topic and the stage's offset committed past it)."""
    settings, doc_id = await _topology_without_workers(pipeline.settings)
    event = DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content="Waiting for a consumer.")
    async with EventPublisher(settings.kafka, settings.events_topic) as events:
        (published,) = await events.publish_many([event])
    async with EventPublisher(settings.kafka, settings.changes_topic) as changes:
        (changed,) = await changes.publish_many([event])
    # Auto-commit off: on stop it would commit the consumer's own position over this offset.
    stage = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.streams_app_id,
        enable_auto_commit=False,
    )
    await stage.start()
    try:
        stage.assign([TopicPartition(settings.events_topic, published.partition)])
        await stage.commit({TopicPartition(settings.events_topic, published.partition): published.offset + 1})
    finally:
        await stage.stop()
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)

    found = await read_trace(settings, doc_id, await open_collection(client, settings.collection))

    (version,) = found.versions
    assert [step.hop for step in version.steps] == ["published", "changes"]
    assert version.waiting == (
        f"waits for the indexing consumers: group {settings.consumer_group!r} has never committed on "
        f"{settings.changes_topic}[{changed.partition}], and this record is at offset {changed.offset}"
    )


async def test_an_event_the_stage_has_not_reached_waits_for_the_stage(pipeline) -> None:
    settings, doc_id = await _topology_without_workers(pipeline.settings)
    async with EventPublisher(settings.kafka, settings.events_topic) as events:
        (published,) = await events.publish_many(
            [DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content="No stage reads this.")]
        )
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)

    found = await read_trace(settings, doc_id, await open_collection(client, settings.collection))

    (version,) = found.versions
    assert [step.hop for step in version.steps] == ["published"]
    assert version.waiting is not None and version.waiting.startswith("waits for the changes stage")
    assert f"{settings.events_topic}[{published.partition}]" in version.waiting
