"""HTTP writes return a consistency token; a search that passes it sees the write on the first try."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from query_api import create_app
from query_api.consistency import ConsistencyToken

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def put(api: httpx.AsyncClient, doc_id: str, content: str) -> dict:
    response = await api.put(f"/v1/documents/{doc_id}", json={"content": content, "source": "rw-test"})
    assert response.status_code == 202, response.text
    return response.json()


async def search_doc(
    api: httpx.AsyncClient, doc_id: str, query: str, mode: str, token: str
) -> httpx.Response:
    return await api.post(
        "/v1/search",
        json={"query": query, "mode": mode, "filter": {"doc_id": doc_id}, "consistent_with": token},
    )


@pytest.fixture
async def strict_api(pipeline_settings, consumer_group, query_embedder):
    """An API instance with a 2 kB document limit and a short read-your-writes wait."""
    settings = pipeline_settings.model_copy(
        update={"max_document_bytes": 2000, "read_your_writes_timeout_s": 0.5}
    )
    app = create_app(settings, embedder=query_embedder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strict") as client:
            yield client


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
async def test_put_then_search_with_its_token_finds_the_document_first_try(pipeline, mode) -> None:
    doc_id = unique(f"rw/{mode}")
    word = unique("quokkaberry")
    receipt = await put(pipeline.api, doc_id, f"The {word} grows only on the northern slopes of Mount Rw.")
    assert receipt["doc_id"] == doc_id
    assert set(receipt) == {"doc_id", "event_id", "version", "partition", "offset", "token"}

    response = await search_doc(pipeline.api, doc_id, f"where does the {word} grow", mode, receipt["token"])

    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert [hit["doc_id"] for hit in hits] == [doc_id]
    assert word in hits[0]["text"]


async def test_token_is_also_accepted_as_a_query_parameter(pipeline) -> None:
    doc_id = unique("rw/query-param")
    receipt = await put(pipeline.api, doc_id, "Lanterns of the harbour festival are lit at dusk.")

    response = await pipeline.api.post(
        "/v1/search",
        params={"consistent_with": receipt["token"]},
        json={"query": "harbour festival lanterns", "mode": "vector", "filter": {"doc_id": doc_id}},
    )

    assert response.status_code == 200, response.text
    assert [hit["doc_id"] for hit in response.json()["hits"]] == [doc_id]


async def test_delete_then_search_with_its_token_no_longer_finds_the_document(pipeline) -> None:
    doc_id = unique("rw/deleted")
    await put(pipeline.api, doc_id, "The glass bridge over the canyon was closed for repairs.")
    response = await pipeline.api.delete(f"/v1/documents/{doc_id}")
    assert response.status_code == 202, response.text

    for mode in ("vector", "hybrid"):
        found = await search_doc(pipeline.api, doc_id, "glass bridge canyon", mode, response.json()["token"])
        assert found.status_code == 200, found.text
        assert found.json()["hits"] == [], mode


async def test_a_token_the_index_cannot_reach_in_time_is_a_504_saying_how_far_behind(
    strict_api, pipeline_settings
) -> None:
    token = ConsistencyToken(pipeline_settings.events_topic, 0, 10**9).encode()

    response = await search_doc(strict_api, "rw/none", "anything", "vector", token)

    assert response.status_code == 504, response.text
    detail = response.json()["detail"]
    assert "partition 0" in detail and "committed offset" in detail
    assert str(10**9) in detail and "behind" in detail


#: A bad token per case, made from the module's events topic (its name has a random suffix).
BAD_TOKENS = {
    "not a token": lambda events_topic: "not-a-token",
    "an empty object": lambda events_topic: "e30",  # base64 of {}
    "another topic": lambda events_topic: ConsistencyToken("some.other.topic", 0, 1).encode(),
    "a partition the topic lacks": lambda events_topic: ConsistencyToken(events_topic, 99, 1).encode(),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_a_bad_token_is_a_400(pipeline, case) -> None:
    token = BAD_TOKENS[case](pipeline.settings.events_topic)

    response = await search_doc(pipeline.api, "rw/none", "anything", "vector", token)

    assert response.status_code == 400, response.text
    assert response.json()["detail"]


async def test_a_document_over_the_size_limit_is_a_413_naming_the_limit(strict_api) -> None:
    response = await strict_api.put("/v1/documents/rw/big", json={"content": "x" * 2001})

    assert response.status_code == 413, response.text
    assert "2000 bytes" in response.json()["detail"]


async def test_a_body_far_over_the_limit_is_a_413_before_it_is_parsed(strict_api) -> None:
    response = await strict_api.put(
        "/v1/documents/rw/huge", content=b'{"content": "' + b"x" * 200_000 + b'"}'
    )

    assert response.status_code == 413, response.text


async def test_put_with_empty_content_is_a_422_saying_so(pipeline) -> None:
    response = await pipeline.api.put("/v1/documents/rw/empty", json={"content": "  \n"})

    assert response.status_code == 422, response.text
    assert "content must not be empty" in response.text


async def test_put_with_reserved_metadata_is_a_422_naming_the_key(pipeline) -> None:
    response = await pipeline.api.put(
        "/v1/documents/rw/reserved", json={"content": "text", "metadata": {"chunk_index": 3}}
    )

    assert response.status_code == 422, response.text
    assert "chunk_index" in response.text


async def test_freshness_reports_every_partition_with_no_lag_after_drain(pipeline) -> None:
    written_at = time.time()
    await put(pipeline.api, unique("rw/fresh"), "A short note so that something was indexed.")
    await pipeline.drain()

    response = await pipeline.api.get("/v1/freshness")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["topic"] == pipeline.settings.changes_topic
    assert body["lag"] == 0
    assert body["oldest_unindexed_age_s"] is None
    # The last batch indexed is the one with this write, or a later one: the page is not stale.
    assert written_at <= body["last_indexed_at"] <= time.time(), (written_at, body["last_indexed_at"])
    assert body["last_indexed_age_s"] <= time.time() - written_at
    hops = body["hops"]
    assert [(hop["name"], hop["topic"]) for hop in hops] == [
        ("changes stage", pipeline.settings.events_topic),
        ("indexer", pipeline.settings.changes_topic),
    ]
    for hop in hops:
        partitions = hop["partitions"]
        assert [p["partition"] for p in partitions] == list(range(pipeline.settings.partitions))
        assert all(p["lag"] == 0 and (p["committed"] or 0) == p["end_offset"] for p in partitions)
    assert body["partitions"] == hops[-1]["partitions"]
