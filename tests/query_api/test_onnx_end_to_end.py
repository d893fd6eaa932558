"""The query API as production builds it, with no embedder handed in: its queries are embedded by
the ONNX Runtime model (int8-blockwise), searched against vectors the consumers made with torch."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
import ray

from consumers.actors import ConsumerGroup
from engines.onnx_embedder import OnnxEmbedder
from query_api import create_app
from schemas import DocumentEvent, EventOp
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

DOCUMENTS = {
    "bread": "To bake a loaf, knead flour, water, salt and yeast into a dough, leave it to rise for "
    "an hour, then bake it in a hot oven until the crust turns brown.",
    "volcano": "Magma rises through the crust and erupts from the vent as lava and ash; an eruption "
    "can bury the villages on the slopes below.",
    "football": "The striker scored twice after the break, and the home side won the league final in "
    "front of a packed stadium.",
    "rates": "Share prices fell sharply on the exchange after the central bank raised interest "
    "rates, and investors sold off their bonds.",
}

#: Each query says what one document is about in words the document mostly does not use: only a
#: model of meaning, not BM25, puts that document first.
QUERIES = {
    "how do I make homemade bread": "bread",
    "molten rock exploding out of a mountain": "volcano",
    "who won the soccer match": "football",
    "markets dropped when borrowing got more expensive": "rates",
}


def start_consumers(group: ConsumerGroup) -> None:
    group.start()
    group.wait_ready()


async def vector_search(api: httpx.AsyncClient, query: str) -> list[str]:
    response = await api.post("/v1/search", json={"query": query, "k": 4, "mode": "vector"})
    assert response.status_code == 200, response.text
    return [hit["doc_id"] for hit in response.json()["hits"]]


async def until_all_searchable(api: httpx.AsyncClient, doc_ids: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    found: list[str] = []
    while time.monotonic() < deadline:
        found = await vector_search(api, "anything at all")
        if set(found) == doc_ids:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"only {found} of {sorted(doc_ids)} searchable after {timeout:.0f} s")


async def test_the_api_as_deployed_embeds_queries_with_onnx_int8_and_puts_the_meant_document_first(
    module_settings, serve
):
    # The consumers read the events themselves: the changes stage adds nothing to a query's path.
    settings = module_settings("onnx-query", consumer_input="events")
    await ensure_topics(settings)
    ray_was_up = ray.is_initialized()
    group = ConsumerGroup(settings, count=1)
    # The consumer loads its torch model while the API loads its ONNX one.
    starting = asyncio.ensure_future(asyncio.to_thread(start_consumers, group))
    try:
        app = create_app(settings)  # as `ragstream serve` builds it: no embedder given
        async with serve(app) as api:
            await starting
            doc_ids = {f"{settings.collection}/{name}" for name in DOCUMENTS}
            async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
                await publisher.publish_many(
                    DocumentEvent(doc_id=f"{settings.collection}/{name}", op=EventOp.UPSERT, content=text)
                    for name, text in DOCUMENTS.items()
                )
            await until_all_searchable(api, doc_ids)

            firsts = {query: (await vector_search(api, query))[0] for query in QUERIES}
            model = app.state.services.embedder
    finally:
        with contextlib.suppress(Exception):
            await starting
        await asyncio.to_thread(group.stop)
        if not ray_was_up:
            ray.shutdown()

    assert firsts == {query: f"{settings.collection}/{name}" for query, name in QUERIES.items()}
    # The model that embedded those queries: ONNX Runtime on block-wise int8 weights, not a
    # fallback to torch (which the API takes, with a warning, when the model does not trace).
    assert isinstance(model, OnnxEmbedder), type(model)
    assert model.precision == "int8-blockwise"
