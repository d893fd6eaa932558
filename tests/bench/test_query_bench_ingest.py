"""The query bench's steady ingestion: revisions after the held-out articles run out are new text."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from bench.query import ingest_steadily
from schemas import DocumentEvent, Settings
from streams.topic_records import read_topic_records
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_revisions_change_the_text_and_raise_the_version(kafka_broker):
    settings = Settings(bootstrap_servers=kafka_broker.bootstrap_servers).namespaced(
        f"bench-{uuid.uuid4().hex[:8]}"
    )
    await ensure_topics(settings)
    articles = [
        DocumentEvent(doc_id=f"wiki/{name}", op="upsert", content=f"{name} is a city.", version=1)
        for name in ("Lyon", "Turin")
    ]
    stop = asyncio.Event()
    ingesting = asyncio.create_task(ingest_steadily(settings, articles, rate=20, stop=stop))
    await asyncio.sleep(2)
    stop.set()
    published = await ingesting
    assert published >= 4

    events = [orjson.loads(r.value) for r in await read_topic_records(settings.kafka, settings.events_topic)]
    lyon = sorted((e for e in events if e["doc_id"] == "wiki/Lyon"), key=lambda e: e["version"])
    assert [e["version"] for e in lyon] == list(range(1, len(lyon) + 1))
    assert [e["content"] for e in lyon[:3]] == [
        "Lyon is a city.", "Revision 1. Lyon is a city.", "Revision 2. Lyon is a city.",
    ]  # fmt: skip
