"""Fusion parameters published by `ragstream tune` on the control topic: every replica follows
them live, per tenant, and a rollback takes effect the same way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from engines.embedder import Embedder
from query_api import create_app
from schemas.api_keys import ApiKeyEntry, new_api_key
from schemas.search_tuning import TunedFusion, tuning_key
from schemas.settings import Settings
from streams.control import publish_control
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

KEYS = {"admin": new_api_key(), "acme": new_api_key()}
QUERY = "how do I reset the pressure valve on the boiler"
TEXTS = [
    "Boiler maintenance: to bring the pressure back down, open the relief valve slowly and wait.",
    "The valve catalogue lists every pressure valve we stock, with part numbers and prices.",
    "Resetting a tripped boiler: press the red button, then check the pressure gauge reads 1.5 bar.",
    "Reset your password on the intranet: how do I reset it? Open the profile page.",
    "Canteen menu for the week: soup, the pressure-cooked stew and apple pie.",
    "Safety notice: never touch the boiler valve while the boiler is hot.",
]


@pytest.fixture(scope="module")
def settings(module_settings: Callable[..., Settings]) -> Settings:
    entries = (ApiKeyEntry.for_key(KEYS["admin"]), ApiKeyEntry.for_key(KEYS["acme"], "acme"))
    return module_settings("tuned", api_keys=entries)


@pytest.fixture(scope="module")
async def api(
    settings: Settings, embedder: Embedder, index_chunks, serve
) -> AsyncIterator[httpx.AsyncClient]:
    await ensure_topics(settings)
    ids = [f"acme/doc-{i}" for i in range(len(TEXTS))]
    metadatas = [
        {"doc_id": doc_id, "tenant": "acme", "version": 1, "chunk_index": 0, "chunk_count": 1}
        for doc_id in ids
    ]
    await index_chunks(settings, [f"chunk-{i}" for i in range(len(TEXTS))], TEXTS, metadatas)
    async with serve(create_app(settings, embedder=embedder)) as client:
        yield client


async def search(api: httpx.AsyncClient, who: str, mode: str = "hybrid") -> dict[str, Any]:
    response = await api.post(
        "/v1/search",
        json={"query": QUERY, "k": len(TEXTS), "mode": mode},
        headers={"Authorization": f"Bearer {KEYS[who]}"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def ids(body: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in body["hits"]]


async def until_version(api: httpx.AsyncClient, who: str, version: int | None, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = await search(api, who)
        if body["tuning_version"] == version:
            return body
        assert time.monotonic() < deadline, f"{who} still searches with version {body['tuning_version']}"
        await asyncio.sleep(0.2)


def record(
    prior: float, tenant: str | None = None, current: TunedFusion | None = None, version: int = 1
) -> TunedFusion:
    tuned = TunedFusion(version, prior, tenant, time.time(), "test", 40, 0.5, 0.6)
    return tuned.replacing(current)


async def test_replicas_follow_published_priors_per_tenant_and_their_rollback(api, settings):
    default = await search(api, "admin")
    assert default["tuning_version"] is None
    vector, lexical = ids(await search(api, "admin", "vector")), ids(await search(api, "admin", "lexical"))
    assert vector != lexical, "the corpus must rank differently by vector and by BM25"

    everyone = record(1.0)
    await publish_control(settings, [(tuning_key(None), everyone.to_json())])
    assert ids(await until_version(api, "admin", 1)) == vector  # a prior of 1: vectors alone
    assert ids(await until_version(api, "acme", 1)) == vector

    # A version of its own, so that waiting for it cannot stop at everyone's version 1.
    acme = record(0.0, "acme", version=7)
    await publish_control(settings, [(tuning_key("acme"), acme.to_json())])
    assert ids(await until_version(api, "acme", 7)) == lexical  # acme's own: BM25 alone
    assert (await search(api, "admin"))["tuning_version"] == 1
    assert ids(await search(api, "admin")) == vector  # everyone else keeps theirs

    newer = record(0.0, current=everyone)
    await publish_control(settings, [(tuning_key(None), newer.to_json())])
    assert ids(await until_version(api, "admin", 2)) == lexical
    await publish_control(settings, [(tuning_key(None), newer.rolled_back().to_json())])
    assert ids(await until_version(api, "admin", 1)) == vector

    await publish_control(settings, [(tuning_key(None), None), (tuning_key("acme"), None)])
    assert ids(await until_version(api, "admin", None)) == ids(default)
    assert ids(await until_version(api, "acme", None)) == ids(default)
    # Other modes never read the fusion's parameters.
    assert (await search(api, "admin", "vector"))["tuning_version"] is None
