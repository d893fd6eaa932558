"""The BM25 index stays as fresh as the vector index, and every API instance rebuilds it alike."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from schemas import DocumentEvent, EventOp

pytestmark = pytest.mark.integration

#: How long after the pipeline has drained a change may take to show in lexical results. The
#: chunk log is written before Chroma, so it is normally applied before drain() even returns.
SETTLE_S = 0.5


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def upsert(doc_id: str, content: str, version: int) -> DocumentEvent:
    return DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content=content, version=version, source="test")


async def search(api, query: str, mode: str, k: int = 10, **body) -> list[dict]:
    response = await api.post("/v1/search", json={"query": query, "k": k, "mode": mode, **body})
    assert response.status_code == 200, response.text
    return response.json()["hits"]


async def lexical_doc_ids(api, query: str) -> list[str]:
    return [hit["doc_id"] for hit in await search(api, query, "lexical")]


async def within(seconds: float, check) -> float:
    """How long until the async ``check()`` is true; fails after ``seconds``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"still not true {seconds} s after the pipeline drained")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_edits_and_deletes_reach_lexical_results_by_the_time_the_pipeline_drains(pipeline):
    doc_id, old_term, new_term = unique("fresh-"), unique("quokka"), unique("wombat")
    text = "The {} survey counts animals on the island every spring, from the ferry to the lighthouse."
    await pipeline.publisher.publish(upsert(doc_id, text.format(old_term), version=1))
    await pipeline.drain()
    await within(SETTLE_S, lambda: _found(pipeline.api, old_term, doc_id))
    assert (await search(pipeline.api, old_term, "lexical"))[0]["text"] == text.format(old_term)

    await pipeline.publisher.publish(upsert(doc_id, text.format(new_term), version=2))
    await pipeline.drain()
    await within(SETTLE_S, lambda: _gone(pipeline.api, old_term, doc_id))
    assert await lexical_doc_ids(pipeline.api, new_term) == [doc_id]
    # The vector index agrees: the document's one chunk has the new text.
    assert [c["text"] for c in await pipeline.chunks_of(doc_id)] == [text.format(new_term)]

    await pipeline.publisher.publish(DocumentEvent(doc_id=doc_id, op=EventOp.DELETE, version=3))
    await pipeline.drain()
    await within(SETTLE_S, lambda: _gone(pipeline.api, new_term, doc_id))
    assert await pipeline.chunks_of(doc_id) == []
    hybrid = await search(pipeline.api, new_term, "hybrid", k=50)
    assert all(hit["doc_id"] != doc_id for hit in hybrid)


async def _found(api, term: str, doc_id: str) -> bool:
    return await lexical_doc_ids(api, term) == [doc_id]


async def _gone(api, term: str, doc_id: str) -> bool:
    return doc_id not in await lexical_doc_ids(api, term)


async def test_a_restarted_api_and_a_replica_rebuild_the_same_lexical_results(pipeline, api_instance):
    run, term = unique("replica-"), unique("numbat")
    # The term appears 1..4 times, so the BM25 order is clear-cut.
    events = [
        upsert(f"{run}/{i}", f"Field note {i}: " + f"the {term} was seen near the creek. " * (i + 1), 1)
        for i in range(4)
    ]
    await pipeline.publisher.publish_many(events)
    # As long as doc 3, with the term once: a short text with it once would score close to doc 3
    # (BM25 favours short texts, by how much depends on the whole index's average length).
    withdrawn = f"Field note 0 was withdrawn; no {term}. " + "The observer recorded nothing more. " * 5
    await pipeline.publisher.publish(upsert(f"{run}/0", withdrawn, 2))
    await pipeline.publisher.publish(DocumentEvent(doc_id=f"{run}/1", op=EventOp.DELETE, version=2))
    await pipeline.drain()
    expected = [f"{run}/3", f"{run}/2", f"{run}/0"]
    # The view applies the chunk log after the commits drain() waits for: wait for the final state,
    # not for any three documents (doc 1 before its delete and without doc 2 is three too).
    await within(SETTLE_S, lambda: _finds_exactly(pipeline.api, term, expected))
    running = await search(pipeline.api, term, "lexical", doc_id_prefix=f"{run}/")

    async with api_instance() as restarted, api_instance() as replica:
        rebuilt = [
            await search(client, term, "lexical", doc_id_prefix=f"{run}/") for client in (restarted, replica)
        ]

    assert [hit["doc_id"] for hit in running] == expected
    for hits in rebuilt:
        assert [(h["id"], h["text"]) for h in hits] == [(h["id"], h["text"]) for h in running]
        # BM25 statistics count deleted chunks until tantivy merges them away, so a replica that
        # replayed the log in other batches may score a hair differently; the order is the same.
        assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in running], rel=0.05)


async def _finds_exactly(api, term: str, doc_ids: list[str]) -> bool:
    return sorted(await lexical_doc_ids(api, term)) == sorted(doc_ids)
