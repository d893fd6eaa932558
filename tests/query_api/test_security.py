"""API keys and tenants: no key, no /v1 route; a tenant's key reads and writes only its documents.

The documents are written through ``PUT /v1/documents`` with each tenant's key and indexed by the
consumers' own steps (chunk, embed, chunk log, Chroma, commit), run in the test's process, so what
is checked is the whole way from a tenant's write to another tenant's search.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from consumers.chunk_log import publish_chunk_changes
from consumers.indexer import DocumentIndexer
from consumers.sink import ChromaSink
from engines.chunking import Chunker
from engines.embedder import Embedder
from evaluation import cases_from_feedback
from query_api import create_app
from query_api.auth import ApiKeyMiddleware
from query_api.models import SearchHit
from query_api.rerank import rescored
from schemas import DocumentEvent
from schemas.api_keys import ApiKeyEntry, new_api_key
from schemas.settings import Settings
from streams.feedback import read_feedback
from streams.topics import ensure_topics

Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]

KEYS = {name: new_api_key() for name in ("admin", "acme", "globex")}
ENTRIES = [
    ApiKeyEntry.for_key(KEYS["admin"]),
    ApiKeyEntry.for_key(KEYS["acme"], "acme"),
    ApiKeyEntry.for_key(KEYS["globex"], "globex"),
]

#: (whose key writes it, doc_id as the writer names it, version, text). Both tenants write "shared/handbook".
#: Every text ends in "Internal memo.", so one lexical query finds them all.
DOCUMENTS = [
    ("acme", "shared/handbook", 7, "Acme handbook: the quarterly budget review is held in the blue room."),
    ("acme", "skates", 1, "Acme rocket skates roll on wheels of zorbium alloy."),
    ("acme", "notes/keep", 1, "Acme keeps its spare zorbium bolts in locker nine."),
    ("globex", "shared/handbook", 9, "Globex handbook: the quarterly budget review is held in the red room."),
    ("globex", "devices", 1, "Globex builds doomsday devices powered by zorbium crystals."),
    ("admin", "public/notice", 1, "Maintenance notice: the budget servers reboot on Sunday night."),
]
SEEN_BY = {
    "acme": {"shared/handbook", "skates", "notes/keep"},
    "globex": {"shared/handbook", "devices"},
    # Without a tenant, ids are as stored: a tenant's documents under its name.
    "admin": {
        "acme/shared/handbook",
        "acme/skates",
        "acme/notes/keep",
        "globex/shared/handbook",
        "globex/devices",
        "public/notice",
    },
}
COMPANY = {"acme": "Acme", "globex": "Globex"}
MODES = ["vector", "lexical", "hybrid"]


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def text_of(body: str) -> str:
    return f"{body} Internal memo."


# --- without a valid key ------------------------------------------------------------------------


def v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every /v1 route the app documents, path parameters filled in."""
    return [
        (method.upper(), path.replace("{doc_id}", "some/doc"))
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    ]


@pytest.fixture(scope="module")
def locked_app() -> FastAPI:
    """The app with keys configured; its lifespan is not run: refusing a request needs no index."""
    return create_app(Settings(api_keys=ENTRIES))


async def test_every_v1_route_is_401_without_a_key(locked_app: FastAPI) -> None:
    routes = v1_routes(locked_app)
    assert {path for _, path in routes} >= {
        "/v1/search",
        "/v1/answer",
        "/v1/documents/some/doc",
        "/v1/freshness",
    }
    transport = httpx.ASGITransport(app=locked_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://query-api") as client:
        for method, path in routes:
            response = await client.request(method, path, json={"query": "anything", "content": "x"})

            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "API key is required" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer rsk_not-a-key-anyone-was-given"},
        {"X-API-Key": "rsk_not-a-key-anyone-was-given"},
        # The hash the server holds is not a key.
        {"Authorization": f"Bearer {ENTRIES[0].digest}"},
    ],
    ids=["bearer", "x-api-key", "the stored hash"],
)
async def test_every_v1_route_is_401_with_a_wrong_key(locked_app: FastAPI, headers: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=locked_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://query-api", headers=headers) as client:
        for method, path in v1_routes(locked_app):
            response = await client.request(method, path, json={"query": "anything", "content": "x"})

            assert response.status_code == 401, (method, path)
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
            assert response.json() == {"detail": "the API key is not valid"}


async def test_health_is_open_without_a_key(locked_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=locked_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://query-api") as client:
        response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_websocket_under_v1_is_refused_without_a_key() -> None:
    async def hello(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/v1/hello", hello)])
    app.add_middleware(ApiKeyMiddleware, keys=ENTRIES)
    client = TestClient(app)

    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/v1/hello"):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect("/v1/hello", headers=auth("acme")) as websocket:
        assert websocket.receive_text() == "hello"


# --- two tenants on the real stack ------------------------------------------------------------


@pytest.fixture(scope="module")
def security_settings(module_settings: Callable[..., Settings]) -> Settings:
    return module_settings(
        "security", consumer_input="events", api_keys=ENTRIES, answer_generator="extractive"
    )


async def index_new_events(settings: Settings, embedder: Embedder) -> None:
    """What a consumer does with the events published since the group's last commit: plan the
    chunk changes, write the chunk log, then Chroma, then commit."""
    topic = settings.events_topic
    partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    async with (
        consumer,
        AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all") as producer,
    ):
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        events = []
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            batch = await consumer.getmany(timeout_ms=500)
            events.extend(DocumentEvent.from_json(r.value) for records in batch.values() for r in records)
        async with ChromaSink(settings) as sink:
            indexer = DocumentIndexer(Chunker(settings.chunk_size, settings.chunk_overlap), embedder, sink)
            changes, _ = await indexer.plan(events)
            await publish_chunk_changes(producer, settings.chunks_topic, changes)
            await indexer.write(changes)
        await consumer.commit()


class LastFirst:
    """A reranker that turns the order around: it reorders only what retrieval gave it."""

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        return rescored(hits, [float(rank) for rank in range(len(hits))])


@pytest.fixture(scope="module")
async def receipts(
    security_settings: Settings, embedder: Embedder, serve: Serve
) -> dict[tuple[str, str], Any]:
    """Writes every document with its writer's key; the receipts by (writer, doc_id)."""
    await ensure_topics(security_settings)
    written = {}
    async with serve(create_app(security_settings, embedder=embedder)) as client:
        for who, doc_id, version, body in DOCUMENTS:
            response = await client.put(
                f"/v1/documents/{doc_id}",
                json={"content": text_of(body), "version": version, "source": "security-test"},
                headers=auth(who),
            )
            assert response.status_code == 202, response.text
            written[(who, doc_id)] = response.json()
    return written


@pytest.fixture(scope="module")
async def api(
    security_settings: Settings,
    embedder: Embedder,
    receipts: dict[tuple[str, str], Any],
    serve: Serve,
) -> AsyncIterator[httpx.AsyncClient]:
    await index_new_events(security_settings, embedder)
    # Started after the indexing: its BM25 index replays the whole chunk log before it serves.
    app = create_app(security_settings, embedder=embedder, reranker=LastFirst())
    async with serve(app) as client:
        yield client


async def search(api: httpx.AsyncClient, who: str, query: str, **body: Any) -> list[dict[str, Any]]:
    response = await api.post("/v1/search", json={"query": query, "k": 20, **body}, headers=auth(who))
    assert response.status_code == 200, response.text
    return list(response.json()["hits"])


@pytest.mark.integration
async def test_a_write_is_acknowledged_under_the_name_its_tenant_gave(
    receipts: dict[tuple[str, str], Any],
) -> None:
    assert receipts[("acme", "shared/handbook")]["doc_id"] == "shared/handbook"
    assert receipts[("globex", "shared/handbook")]["doc_id"] == "shared/handbook"
    assert receipts[("admin", "public/notice")]["doc_id"] == "public/notice"


@pytest.mark.integration
@pytest.mark.parametrize("rerank", [False, True], ids=["plain", "reranked"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tenant", ["acme", "globex"])
async def test_a_tenant_finds_only_its_own_documents_in_every_mode(
    api: httpx.AsyncClient, tenant: str, mode: str, rerank: bool
) -> None:
    hits = await search(api, tenant, "memo zorbium quarterly budget review", mode=mode, rerank=rerank)

    assert {hit["doc_id"] for hit in hits} == SEEN_BY[tenant]
    assert all(hit["text"].startswith(COMPANY[tenant]) for hit in hits)
    assert all(hit["metadata"]["tenant"] == tenant for hit in hits)


@pytest.mark.integration
@pytest.mark.parametrize("tenant", ["acme", "globex"])
async def test_a_tenants_vector_search_is_answered_by_the_replicas_own_index_of_that_tenant(
    api: httpx.AsyncClient, tenant: str
) -> None:
    body = {"query": "memo zorbium quarterly budget review", "k": 20, "mode": "vector"}
    deadline = time.monotonic() + 30
    while True:
        response = await api.post("/v1/search", json=body, headers=auth(tenant))
        assert response.status_code == 200, response.text
        # Chroma answers until the replica has checked that it holds every chunk.
        if 'desc="replica"' in response.headers["server-timing"]:
            break
        assert time.monotonic() < deadline, f"Chroma still answers: {response.headers['server-timing']}"
        await asyncio.sleep(0.2)

    hits = response.json()["hits"]
    assert {hit["doc_id"] for hit in hits} == SEEN_BY[tenant]
    assert all(hit["metadata"]["tenant"] == tenant for hit in hits)


@pytest.mark.integration
@pytest.mark.parametrize("mode", MODES)
async def test_a_key_without_tenant_finds_every_document(api: httpx.AsyncClient, mode: str) -> None:
    hits = await search(api, "admin", "memo zorbium quarterly budget review", mode=mode)

    assert {hit["doc_id"] for hit in hits} == SEEN_BY["admin"]


@pytest.mark.integration
@pytest.mark.parametrize("mode", MODES)
async def test_a_tenants_page_is_full_although_another_tenants_document_ranks_first(
    api: httpx.AsyncClient, mode: str
) -> None:
    query = "Globex doomsday devices powered by zorbium crystals"
    assert [hit["doc_id"] for hit in await search(api, "admin", query, mode=mode, k=1)] == ["globex/devices"]

    hits = await search(api, "acme", query, mode=mode, k=2)

    assert len(hits) == 2
    assert {hit["doc_id"] for hit in hits} <= SEEN_BY["acme"]


@pytest.mark.integration
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "conditions",
    [{"doc_id_prefix": "shared/"}, {"filter": {"doc_id": "shared/handbook"}}],
    ids=["doc_id prefix", "doc_id filter"],
)
async def test_a_tenants_filters_name_its_own_documents(
    api: httpx.AsyncClient, mode: str, conditions: dict[str, Any]
) -> None:
    for tenant, room in (("acme", "blue room"), ("globex", "red room")):
        hits = await search(api, tenant, "quarterly budget review memo", mode=mode, **conditions)

        assert [hit["doc_id"] for hit in hits] == ["shared/handbook"]
        assert room in hits[0]["text"]


@pytest.mark.integration
@pytest.mark.parametrize("mode", MODES)
async def test_a_tenant_cannot_filter_its_way_into_another_tenant(api: httpx.AsyncClient, mode: str) -> None:
    assert await search(api, "acme", "doomsday devices memo", mode=mode, filter={"tenant": "globex"}) == []
    assert await search(api, "acme", "memo", mode=mode, doc_id_prefix="../globex/") == []


@pytest.mark.integration
async def test_a_tenant_looks_up_only_its_own_documents(api: httpx.AsyncClient) -> None:
    async def lookup(who: str, doc_id: str) -> httpx.Response:
        return await api.get(f"/v1/documents/{doc_id}", headers=auth(who))

    acme, globex = await lookup("acme", "shared/handbook"), await lookup("globex", "shared/handbook")
    assert (acme.status_code, acme.json()["doc_id"], acme.json()["version"]) == (200, "shared/handbook", 7)
    assert (globex.status_code, globex.json()["doc_id"], globex.json()["version"]) == (
        200,
        "shared/handbook",
        9,
    )

    assert (await lookup("globex", "skates")).status_code == 404
    assert (await lookup("acme", "devices")).status_code == 404
    assert (await lookup("acme", "globex/devices")).status_code == 404
    assert (await lookup("acme", "public/notice")).status_code == 404

    admin = await lookup("admin", "acme/shared/handbook")
    assert (admin.status_code, admin.json()["version"]) == (200, 7)


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True], ids=["json", "events"])
async def test_a_tenants_answer_is_grounded_only_on_its_own_documents(
    api: httpx.AsyncClient, stream: bool
) -> None:
    for tenant, room, other_room in (("acme", "blue room", "red room"), ("globex", "red room", "blue room")):
        response = await api.post(
            "/v1/answer",
            json={"query": "Where is the quarterly budget review held?", "k": 5, "stream": stream},
            headers=auth(tenant),
        )
        assert response.status_code == 200, response.text
        body = response.json() if not stream else _done_event(response.text)

        assert {citation["doc_id"] for citation in body["citations"]} <= SEEN_BY[tenant]
        assert all(citation["text"].startswith(COMPANY[tenant]) for citation in body["citations"])
        assert room in body["answer"] and other_room not in body["answer"]


def _done_event(text: str) -> dict[str, Any]:
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    done = [lines for lines in events if lines[0] == "event: done"]
    assert len(done) == 1, text
    return dict(orjson.loads(done[0][1].removeprefix("data: ")))


@pytest.mark.integration
async def test_a_tenant_cannot_write_into_another_tenant(api: httpx.AsyncClient) -> None:
    claims = [
        {"content": "Globex owns this now.", "tenant": "globex"},
        {"content": "Globex owns this now.", "metadata": {"tenant": "globex"}},
    ]
    for body in claims:
        response = await api.put("/v1/documents/skates", json=body, headers=auth("acme"))
        assert response.status_code == 422, response.text


@pytest.mark.integration
async def test_deleting_a_doc_id_removes_only_the_deleting_tenants_document(
    api: httpx.AsyncClient, security_settings: Settings, embedder: Embedder
) -> None:
    response = await api.delete("/v1/documents/notes/keep", headers=auth("globex"))
    assert response.status_code == 202, response.text
    assert response.json()["doc_id"] == "notes/keep"

    await index_new_events(security_settings, embedder)

    kept = await api.get("/v1/documents/notes/keep", headers=auth("acme"))
    assert kept.status_code == 200, kept.text
    hits = await search(api, "acme", "spare zorbium bolts locker", mode="vector", k=1)
    assert [hit["doc_id"] for hit in hits] == ["notes/keep"]


@pytest.mark.integration
async def test_health_readiness_and_metrics_need_no_key(api: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await api.get(path)).status_code == 200, path
    assert (await api.get("/")).status_code != 401


@pytest.mark.integration
async def test_without_keys_configured_the_api_is_open_and_sees_everything(
    api: httpx.AsyncClient, security_settings: Settings, embedder: Embedder, serve: Serve
) -> None:
    open_settings = security_settings.model_copy(update={"api_keys": ()})
    async with serve(create_app(open_settings, embedder=embedder)) as client:
        response = await client.post("/v1/search", json={"query": "memo", "k": 20, "mode": "lexical"})

    assert response.status_code == 200, response.text
    assert {hit["doc_id"] for hit in response.json()["hits"]} == SEEN_BY["admin"]


@pytest.mark.integration
async def test_a_key_is_also_accepted_in_the_x_api_key_header(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/search",
        json={"query": "memo", "k": 20, "mode": "lexical"},
        headers={"X-API-Key": KEYS["globex"]},
    )

    assert response.status_code == 200, response.text
    assert {hit["doc_id"] for hit in response.json()["hits"]} == SEEN_BY["globex"]


async def test_feedback_is_recorded_under_the_tenant_of_its_key_and_becomes_a_case_on_its_document(
    api: httpx.AsyncClient, security_settings: Settings
) -> None:
    body = {"query": "where is the handbook", "request_id": "r-1", "doc_id": "shared/handbook", "rating": 1}
    refused = await api.post("/v1/feedback", json={**body, "tenant": "globex"}, headers=auth("acme"))
    assert refused.status_code == 422, refused.text

    response = await api.post("/v1/feedback", json=body, headers=auth("acme"))

    assert response.status_code == 202, response.text
    log = await read_feedback(security_settings.kafka, security_settings.feedback_topic)
    [event] = [e for e in log.events if e.feedback_id == response.json()["feedback_id"]]
    assert event.tenant == "acme" and event.doc_id == "shared/handbook"
    # The case names the document as the index stores it: acme's, not globex's "shared/handbook".
    assert [c.relevant_doc_id for c in cases_from_feedback([event]).cases] == ["acme/shared/handbook"]
