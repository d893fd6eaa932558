"""Kafka → Ray consumers → Chroma → search API, observed the way a user would."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import DocumentEvent, EventOp
from streams.corpus import wiki_articles
from streams.dlq import read_dead_letters as read_dlq

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def upsert(doc_id: str, content: str, version: int = 1) -> DocumentEvent:
    return DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content=content, version=version, source="test")


def long_document(paragraphs: int, topic: str, edited: int | None = None) -> str:
    """Paragraphs of about 800 characters, so each one is one chunk of a 1000-character splitter."""
    texts = []
    for i in range(paragraphs):
        sentence = f"Section {i} of the {topic} handbook explains procedure number {i} in detail. "
        text = sentence * 10
        if i == edited:
            text = text.replace("explains", "now describes", 1)
        texts.append(text.strip())
    return "\n\n".join(texts)


async def test_published_documents_are_found_by_their_own_text(pipeline):
    articles = wiki_articles()[1000:1050]
    run = unique("wiki")
    events = [upsert(f"{run}/{a['title']}", f"{a['title']}\n\n{a['extract']}") for a in articles]
    published_at = time.time()
    await pipeline.publisher.publish_many(events)
    await pipeline.drain()
    drained_at = time.time()

    for event in events:
        hits = await pipeline.search(event.content[:1000], k=3)
        assert hits and hits[0]["doc_id"] == event.doc_id, f"{event.doc_id} not found first: {hits[:1]}"
        # Stamped when this run indexed it, not carried over from anything older.
        assert published_at <= hits[0]["indexed_at"] <= drained_at, (published_at, hits[0], drained_at)


async def test_shrinking_a_document_leaves_exactly_its_new_chunks(pipeline):
    doc_id = unique("shrink")
    await pipeline.publisher.publish(upsert(doc_id, long_document(10, "shrinking"), version=1))
    await pipeline.drain()
    assert len(await pipeline.chunks_of(doc_id)) == 10

    await pipeline.publisher.publish(upsert(doc_id, long_document(4, "shrinking"), version=2))
    await pipeline.drain()
    chunks = await pipeline.chunks_of(doc_id)
    assert len(chunks) == 4
    assert {c["metadata"]["version"] for c in chunks} == {2}
    document = (await pipeline.api.get(f"/v1/documents/{doc_id}")).json()
    assert document["version"] == 2 and document["chunk_count"] == 4


async def test_editing_one_paragraph_embeds_one_chunk(pipeline):
    doc_id = unique("edit")
    await pipeline.publisher.publish(upsert(doc_id, long_document(20, "editing"), version=1))
    await pipeline.drain()
    assert len(await pipeline.chunks_of(doc_id)) == 20
    embedded_before = await pipeline.metric("ragstream_chunks_embedded_total")

    await pipeline.publisher.publish(upsert(doc_id, long_document(20, "editing", edited=13), version=2))
    await pipeline.drain()
    assert await pipeline.metric("ragstream_chunks_embedded_total") - embedded_before == 1
    chunks = await pipeline.chunks_of(doc_id)
    assert len(chunks) == 20 and "now describes" in chunks[13]["text"]


async def test_the_same_event_twice_is_embedded_once(pipeline):
    event = upsert(unique("twice"), long_document(3, "duplicate"))
    await pipeline.publisher.publish(event)
    await pipeline.drain()
    embedded_before = await pipeline.metric("ragstream_chunks_embedded_total")

    await pipeline.publisher.publish(event)
    await pipeline.drain()
    assert await pipeline.metric("ragstream_chunks_embedded_total") == embedded_before
    chunks = await pipeline.chunks_of(event.doc_id)
    assert len(chunks) == 3 and len({c["id"] for c in chunks}) == 3


async def test_a_deleted_document_is_no_longer_found(pipeline):
    doc_id = unique("gone")
    text = "The zebrafish lighthouse keeper catalogues tides in a purple notebook every dawn."
    await pipeline.publisher.publish(upsert(doc_id, text, version=1))
    await pipeline.drain()
    assert (await pipeline.search(text, k=1))[0]["doc_id"] == doc_id

    await pipeline.publisher.publish(DocumentEvent(doc_id=doc_id, op=EventOp.DELETE, version=2))
    await pipeline.drain()
    assert await pipeline.chunks_of(doc_id) == []
    assert all(hit["doc_id"] != doc_id for hit in await pipeline.search(text, k=20))
    assert (await pipeline.api.get(f"/v1/documents/{doc_id}")).status_code == 404


async def test_committed_offsets_reach_the_end_offsets_once_drained(pipeline):
    await pipeline.publisher.publish_many(
        upsert(unique("offsets"), f"Offset check document {i}.") for i in range(30)
    )
    await pipeline.drain()
    hops = await pipeline.lag()
    assert [hop.hop.topic for hop in hops] == [
        pipeline.settings.events_topic,
        pipeline.settings.changes_topic,
    ]
    for hop in hops:
        assert len(hop.partitions) == pipeline.settings.partitions
        for partition in hop.partitions:
            if partition.end_offset:
                assert partition.committed == partition.end_offset and partition.lag == 0


async def test_bad_events_go_to_the_dead_letter_topic_and_their_neighbours_are_indexed(pipeline):
    run = unique("dlq")
    before, after = (
        upsert(f"{run}/before", "A valid event published before the bad ones."),
        upsert(f"{run}/after", "A valid event published after the bad ones."),
    )
    malformed = b'{"doc_id": "broken", "op": "upsert", "content": '
    violating = orjson.dumps({"doc_id": f"{run}/bad", "op": "rename", "content": "x"})
    await pipeline.publisher.publish_many([before])
    await pipeline.publisher.publish_raw([(f"{run}/malformed", malformed), (f"{run}/bad", violating)])
    await pipeline.publisher.publish_many([after])
    await pipeline.drain()

    for event in (before, after):
        assert (await pipeline.search(event.content, k=1))[0]["doc_id"] == event.doc_id
    letters = await read_dead_letters(pipeline.settings, key_prefix=run)
    reasons = {key: headers["ragstream.reason"] for key, headers, _ in letters}
    assert "not valid JSON" in reasons[f"{run}/malformed"]
    assert "schema violation" in reasons[f"{run}/bad"] and "op" in reasons[f"{run}/bad"]
    originals = {key: value for key, _, value in letters}
    assert originals[f"{run}/malformed"] == malformed


async def read_dead_letters(settings, key_prefix: str) -> list[tuple[str, dict[str, str], bytes]]:
    found = []
    for stored in await read_dlq(settings.kafka, settings.dlq_topic):
        key = (stored.letter.key or b"").decode()
        if key.startswith(key_prefix):
            headers = {name: raw.decode() for name, raw in stored.letter.headers()}
            found.append((key, headers, stored.letter.value))
    return found


async def read_chunk_log(settings, doc_id: str) -> dict[str, str]:
    """The latest record per chunk id of one document, tombstones applied, as a view would."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.chunks_topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        state: dict[str, dict] = {}
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    if record.value is None:
                        state.pop(record.key.decode(), None)
                    else:
                        state[record.key.decode()] = orjson.loads(record.value)
        return {key: chunk["text"] for key, chunk in state.items() if chunk["doc_id"] == doc_id}
    finally:
        await consumer.stop()
