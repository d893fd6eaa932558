"""Publishing a list of events in batches."""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import DocumentEvent, EventOp
from streams.publisher import EventPublisher
from streams.topic_records import read_topic_records

pytestmark = pytest.mark.integration


async def test_events_published_in_batches_arrive_in_order_and_each_batch_is_reported(kafka_broker):
    servers, topic = kafka_broker.bootstrap_servers, f"batches-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    events = [DocumentEvent(doc_id=f"d{i}", op=EventOp.UPSERT, content=f"text {i}") for i in range(5)]
    reported: list[list[str]] = []

    async with EventPublisher(servers, topic) as publisher:
        await publisher.publish_in_batches(
            events, batch_size=2, on_batch=lambda batch: reported.append([e.doc_id for e in batch])
        )

    assert reported == [["d0", "d1"], ["d2", "d3"], ["d4"]]
    records = await read_topic_records(servers, topic)
    assert [orjson.loads(r.value)["doc_id"] for r in records] == [e.doc_id for e in events]
