"""``ragstream_freshness_seconds`` on /metrics: each event's time from its publication on the events
topic, through the changes stage, to the index."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from schemas import DocumentEvent, EventOp
from streams.kafka_clients import client_options

pytestmark = pytest.mark.integration

#: How long before its publication an event's publisher stamped it.
STAMPED_AGO_S = 120.0


def upsert(doc_id: str, content: str) -> DocumentEvent:
    return DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content=content, source="test")


async def _freshness(pipeline, group: str) -> tuple[dict[str, float], float]:
    """The group's cumulative count per ``le``, and the sum of its seconds."""
    text = (await pipeline.api.get("/metrics")).text
    labels = rf'consumer_group="{re.escape(group)}"'
    buckets = {
        le: float(count)
        for le, count in re.findall(
            rf'^ragstream_freshness_seconds_bucket\{{{labels},le="([^"]+)"\}} (\S+)$', text, re.MULTILINE
        )
    }
    total = re.search(rf"^ragstream_freshness_seconds_sum\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return buckets, float(total.group(1)) if total else 0.0


async def test_each_indexed_event_is_counted_once_aged_from_its_publication_on_the_events_topic(pipeline):
    settings = pipeline.settings
    run = f"fresh-{uuid.uuid4().hex[:8]}"
    events = [upsert(f"{run}/{i}", f"Lighthouse log {i}: the keeper noted the tide.") for i in range(10)]
    late = upsert(f"{run}/late", "A message in a bottle, stamped long before it was sent.")
    started = time.time()
    await pipeline.publisher.publish_many(events)
    # A producer may set its record's time: this one says two minutes ago. The stage writes the
    # change with a time of its own, so only the publication time it passes on makes this late.
    async with AIOKafkaProducer(**client_options(settings.kafka)) as producer:
        await producer.send_and_wait(
            settings.events_topic,
            late.to_json(),
            key=late.doc_id.encode(),
            timestamp_ms=round((time.time() - STAMPED_AGO_S) * 1000),
        )
    await pipeline.drain()
    waited = time.time() - started

    buckets, seconds = await _freshness(pipeline, settings.consumer_group)

    assert buckets["+Inf"] == 11, buckets
    assert buckets["60.0"] == 10, "the late event counted as fresh: aged from the stage's record"
    assert STAMPED_AGO_S <= seconds <= STAMPED_AGO_S + 11 * waited
    text = (await pipeline.api.get("/metrics")).text
    served = (
        f'ragstream_serving_generation_info{{consumer_group="{settings.consumer_group}",generation="0"}} 1.0'
    )
    assert served in text.splitlines()
