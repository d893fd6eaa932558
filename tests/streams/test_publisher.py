"""Publishing a list of events in batches."""

from __future__ import annotations

import uuid

import orjson
import pytest

from schemas import DocumentEvent, EventOp, Settings
from streams.publisher import EventPublisher
from streams.topic_records import read_topic_records
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_events_published_in_batches_arrive_in_order_and_each_batch_is_reported(kafka_broker):
    settings = Settings(bootstrap_servers=kafka_broker.bootstrap_servers, partitions=1)
    settings = settings.namespaced(f"batches-{uuid.uuid4().hex[:8]}")
    await ensure_topics(settings)
    topic = settings.events_topic
    events = [DocumentEvent(doc_id=f"d{i}", op=EventOp.UPSERT, content=f"text {i}") for i in range(5)]
    reported: list[list[str]] = []

    async with EventPublisher(settings.kafka, topic) as publisher:
        await publisher.publish_in_batches(
            events, batch_size=2, on_batch=lambda batch: reported.append([e.doc_id for e in batch])
        )

    assert reported == [["d0", "d1"], ["d2", "d3"], ["d4"]]
    records = await read_topic_records(settings.kafka, topic)
    assert [orjson.loads(r.value)["doc_id"] for r in records] == [e.doc_id for e in events]
