"""Hybrid search: the fusion itself, then modes, filters, pages and reranking through the API."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from deploy import free_port
from engines.embedder import Embedder
from query_api import create_app
from query_api.fusion import convex_fusion, reciprocal_rank_fusion
from query_api.models import SearchHit
from query_api.rerank import rescored
from query_api.retrieval import hybrid_weights
from schemas.settings import Settings
from streams.topics import ensure_topics

IndexChunks = Callable[..., Awaitable[None]]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]

# --- reciprocal rank fusion --------------------------------------------------------------------


def test_rrf_orders_a_hand_made_example() -> None:
    fused = reciprocal_rank_fusion(
        {"vector": ["a", "b", "c"], "lexical": ["c", "a", "d"]}, {"vector": 1.0, "lexical": 1.0}, k=60
    )

    # a: 1/61 + 1/62 = 0.03252, c: 1/63 + 1/61 = 0.03227, b: 1/62, d: 1/63
    assert [item.id for item in fused] == ["a", "c", "b", "d"]
    best = 2 / 61
    assert [item.score for item in fused] == pytest.approx(
        [(1 / 61 + 1 / 62) / best, (1 / 63 + 1 / 61) / best, (1 / 62) / best, (1 / 63) / best]
    )
    assert fused[0].ranks == {"vector": 1, "lexical": 2}
    assert fused[3].ranks == {"lexical": 3}


def test_rrf_weights_decide_between_two_lists_that_disagree() -> None:
    rankings = {"vector": ["a", "b"], "lexical": ["b", "a"]}

    assert reciprocal_rank_fusion(rankings, {"vector": 3.0, "lexical": 1.0})[0].id == "a"
    assert reciprocal_rank_fusion(rankings, {"vector": 1.0, "lexical": 3.0})[0].id == "b"


def test_rrf_gives_1_to_an_item_first_everywhere_and_keeps_a_single_list_in_order() -> None:
    both = reciprocal_rank_fusion({"vector": ["a", "b"], "lexical": ["a"]}, {"vector": 1, "lexical": 1})
    single = reciprocal_rank_fusion({"lexical": ["z", "y", "x"]}, {"vector": 1, "lexical": 2})

    assert both[0].score == pytest.approx(1.0)
    assert [item.id for item in single] == ["z", "y", "x"]
    assert single[0].score == pytest.approx(1.0)


def test_rrf_breaks_ties_by_best_rank_then_by_id() -> None:
    fused = reciprocal_rank_fusion({"vector": ["b", "c"], "lexical": ["a", "d"]}, {"vector": 1, "lexical": 1})

    assert [item.id for item in fused] == ["a", "b", "c", "d"]


def test_rrf_counts_an_item_listed_twice_at_its_better_rank() -> None:
    fused = reciprocal_rank_fusion({"vector": ["a", "b", "a"]}, {"vector": 1})

    assert [(item.id, item.ranks) for item in fused] == [("a", {"vector": 1}), ("b", {"vector": 2})]


def test_rrf_with_a_limit_gives_the_head_of_the_whole_fusion() -> None:
    rng = random.Random(3)
    ids = [f"chunk-{i}" for i in range(150)]
    # Overlapping lists with ties among the items only one list names.
    rankings = {"vector": rng.sample(ids, 100), "lexical": rng.sample(ids, 100)}
    weights = {"vector": 1.0, "lexical": 3.0}

    whole = reciprocal_rank_fusion(rankings, weights)

    for limit in (1, 10, 37, 100, 500):
        assert reciprocal_rank_fusion(rankings, weights, limit=limit) == whole[:limit]


@pytest.mark.parametrize(
    ("weights", "k", "complaint"),
    [
        ({"vector": 0, "lexical": 0}, 60, "positive weight"),
        ({"vector": 1}, 60, "no weight"),
        ({"vector": -1, "lexical": 1}, 60, "negative"),
        ({"vector": 1, "lexical": 1}, 0, "at least 1"),
    ],
)
def test_rrf_refuses_weights_or_k_that_make_no_sense(
    weights: dict[str, float], k: int, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        reciprocal_rank_fusion({"vector": ["a"], "lexical": ["b"]}, weights, k)


def test_rescoring_orders_by_the_new_scores_and_keeps_ties_in_order() -> None:
    hits = [
        SearchHit(id=name, doc_id=name, text=name, score=0.0, metadata={}, indexed_at=0.0) for name in "abc"
    ]

    reranked = rescored(hits, [0.1, 0.5, 0.1])

    assert [(hit.id, hit.rerank_score, hit.score) for hit in reranked] == [
        ("b", 0.5, 0.5),
        ("a", 0.1, 0.1),
        ("c", 0.1, 0.1),
    ]


# --- through the API ---------------------------------------------------------------------------

#: (chunk id, doc_id, source, version, indexed_at, text). Every text ends in "plant notes", so a
#: query for those words matches every chunk lexically and filters alone decide what is found.
CORPUS = [
    (
        "h0",
        "plant/reports/2023",
        "reports",
        3,
        1_700_000_300.0,
        "The annual report of the northern plant covers staffing, the budget, training of new "
        "operators, the canteen menu and a long list of small repairs, among them the gasket kit "
        "zorbulux on the feed line. Plant notes.",
    ),
    (
        "h1",
        "catalogue/gaskets",
        "catalogue",
        1,
        1_700_000_000.0,
        "Gasket kit catalogue: every gasket kit, its sizes and materials, for pumps and valves. Plant notes.",
    ),
    (
        "h2",
        "warehouse/orders",
        "warehouse",
        2,
        1_700_000_100.0,
        "Gasket kits for the feed line are ordered from the central warehouse. Plant notes.",
    ),
    (
        "h3",
        "catalogue/kit-zorbulax",
        "catalogue",
        5,
        1_700_000_500.0,
        "Kit zorbulax: the replacement gasket for the feed line pump. Plant notes.",
    ),
    (
        "h4",
        "catalogue/kit-zorbolux",
        "catalogue",
        4,
        1_700_000_400.0,
        "Kit zorbolux is discontinued; use the newer feed line gasket instead. Plant notes.",
    ),
    (
        "h5",
        "recipes/sourdough",
        "kitchen",
        1,
        1_700_000_050.0,
        "To bake sourdough bread, feed the starter the night before and let the dough rise. Plant notes.",
    ),
    (
        "h6",
        "guides/kafka",
        "guides",
        2,
        1_700_000_200.0,
        "Apache Kafka stores streams of records in partitioned, replicated commit logs. Plant notes.",
    ),
]


def metadata(doc_id: str, source: str, version: int, indexed_at: float) -> dict[str, Any]:
    return {
        "doc_id": doc_id,
        "source": source,
        "version": version,
        "indexed_at": indexed_at,
        "chunk_index": 0,
        "chunk_count": 1,
        "content_type": "text/plain",
        "team": "plant" if source != "kitchen" else "kitchen",
    }


@pytest.fixture(scope="module")
def hybrid_settings(module_settings: Callable[..., Settings]) -> Settings:
    return module_settings("hybrid")


@pytest.fixture(scope="module")
async def indexed(hybrid_settings: Settings, index_chunks: IndexChunks) -> None:
    """The corpus in Chroma and in the chunk log, the way the consumers write both."""
    await ensure_topics(hybrid_settings)
    metadatas = [metadata(doc_id, source, version, at) for _, doc_id, source, version, at, _ in CORPUS]
    texts = [text for *_, text in CORPUS]
    await index_chunks(hybrid_settings, [chunk_id for chunk_id, *_ in CORPUS], texts, metadatas)


@pytest.fixture(scope="module")
async def api(
    hybrid_settings: Settings, embedder: Embedder, indexed: None, serve: Serve
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(hybrid_settings, embedder=embedder)) as client:
        yield client


async def search(api: httpx.AsyncClient, query: str, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/search", json={"query": query, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def hit_ids(api: httpx.AsyncClient, query: str, **body: Any) -> list[str]:
    return [hit["id"] for hit in (await search(api, query, **body))["hits"]]


@pytest.mark.integration
async def test_lexical_finds_a_rare_exact_term_that_vector_search_misses(api: httpx.AsyncClient) -> None:
    assert (await hit_ids(api, "zorbulux", k=1, mode="lexical")) == ["h0"]
    # Near-identical made-up words in short texts look more alike to the embedding model.
    assert (await hit_ids(api, "zorbulux", k=1, mode="vector")) != ["h0"]
    assert "h0" in await hit_ids(api, "zorbulux", k=2, mode="hybrid")


@pytest.mark.integration
async def test_hybrid_is_the_default_and_fuses_the_two_rankings(
    api: httpx.AsyncClient, hybrid_settings: Settings
) -> None:
    body = await search(api, "gasket kit zorbulux", k=7)
    # Each retriever's whole candidate depth, as hybrid mode reads it.
    depth = hybrid_settings.hybrid_candidates
    found = {
        mode: [
            (hit["id"], hit["score"])
            for hit in (await search(api, "gasket kit zorbulux", k=depth, mode=mode))["hits"]
        ]
        for mode in ("vector", "lexical")
    }

    assert body["mode"] == "hybrid" and body["reranked"] is False
    assert hybrid_settings.hybrid_fusion == "convex"
    expected = convex_fusion(found, hybrid_weights(hybrid_settings), limit=7)
    assert [hit["id"] for hit in body["hits"]] == [item.id for item in expected]
    for hit, item in zip(body["hits"], expected, strict=True):
        assert hit["score"] == hit["fused_score"] == pytest.approx(item.score)
        assert {name: found["rank"] for name, found in hit["retrievers"].items()} == item.ranks


@pytest.mark.integration
async def test_single_mode_hits_carry_their_rank_and_their_own_score(api: httpx.AsyncClient) -> None:
    for mode in ("vector", "lexical"):
        hits = (await search(api, "gasket kit", k=3, mode=mode))["hits"]
        assert [hit["retrievers"][mode]["rank"] for hit in hits] == [1, 2, 3]
        assert all(hit["retrievers"][mode]["score"] == hit["score"] for hit in hits)
        assert all(hit["fused_score"] is None for hit in hits)


def expected_ids(**conditions: Any) -> set[str]:
    """Chunk ids of CORPUS that pass the conditions (source, doc_id_prefix, version/indexed_at)."""
    kept = set()
    for chunk_id, doc_id, source, version, indexed_at, _ in CORPUS:
        if "source" in conditions and source != conditions["source"]:
            continue
        if "doc_id_prefix" in conditions and not doc_id.startswith(conditions["doc_id_prefix"]):
            continue
        if (
            "team" in conditions
            and metadata(doc_id, source, version, indexed_at)["team"] != conditions["team"]
        ):
            continue
        ok = True
        for key, value in (("version", version), ("indexed_at", indexed_at)):
            bounds = conditions.get(key, {})
            ok &= all(
                {"gt": value > b, "gte": value >= b, "lt": value < b, "lte": value <= b}[op]
                for op, b in bounds.items()
            )
        if ok:
            kept.add(chunk_id)
    return kept


FILTERS = {
    "source": {"source": "catalogue"},
    "doc_id prefix": {"doc_id_prefix": "catalogue/kit-"},
    "version range": {"version": {"gte": 2, "lt": 5}},
    "indexed_at range": {"indexed_at": {"gt": 1_700_000_100.0, "lte": 1_700_000_400.0}},
    "prefix and range": {"doc_id_prefix": "catalogue/", "version": {"gt": 1}},
    "flat metadata filter": {"filter": {"team": "kitchen"}},
    "flat filter with source": {"filter": {"team": "plant"}, "source": "catalogue"},
}


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["vector", "lexical", "hybrid"])
@pytest.mark.parametrize("conditions", FILTERS.values(), ids=FILTERS.keys())
async def test_filters_keep_exactly_the_matching_chunks_in_every_mode(
    api: httpx.AsyncClient, mode: str, conditions: dict[str, Any]
) -> None:
    found = await hit_ids(api, "plant notes", k=20, mode=mode, **conditions)
    flat = {key: value for key, value in conditions.items() if key != "filter"}
    flat.update(conditions.get("filter", {}))

    assert sorted(found) == sorted(expected_ids(**flat))


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["vector", "lexical", "hybrid"])
async def test_pages_of_k_hits_add_up_to_one_long_page(api: httpx.AsyncClient, mode: str) -> None:
    whole = await hit_ids(api, "gasket kit for the feed line in plant notes", k=7, mode=mode)
    pages = [
        await hit_ids(api, "gasket kit for the feed line in plant notes", k=3, offset=offset, mode=mode)
        for offset in (0, 3, 6)
    ]

    assert len(whole) == 7
    assert [chunk_id for page in pages for chunk_id in page] == whole
    assert await hit_ids(api, "gasket kit for the feed line in plant notes", k=3, offset=90, mode=mode) == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"mode": "semantic"}, "'vector', 'lexical' or 'hybrid'"),
        ({"k": 60, "offset": 41}, "k + offset must be at most 100"),
        ({"offset": -1}, "offset"),
        ({"version": {"gt": 1, "gte": 2}}, "gt or gte, not both"),
        ({"indexed_at": {}}, "at least one of gt, gte, lt, lte"),
        ({"version": {"gte": "2"}}, "version"),
        ({"doc_id_prefix": ""}, "doc_id_prefix"),
        ({"source": 3}, "source"),
    ],
)
async def test_bad_mode_offset_or_filter_is_a_422_saying_what_is_wrong(
    api: httpx.AsyncClient, body: dict[str, Any], complaint: str
) -> None:
    response = await api.post("/v1/search", json={"query": "gasket", **body})

    assert response.status_code == 422
    assert complaint in response.text


@pytest.mark.integration
async def test_reranking_without_a_reranker_is_a_400_that_says_so(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/search", json={"query": "gasket", "rerank": True})

    assert response.status_code == 400
    assert "no reranker is configured" in response.json()["detail"]


class ShortestFirst:
    """A reranker that prefers short passages: easy to predict, unlike any retriever here."""

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        return rescored(hits, [-float(len(hit.text)) for hit in hits])


@pytest.mark.integration
async def test_a_configured_reranker_reorders_the_top_hits_when_asked(
    hybrid_settings: Settings, embedder: Embedder, indexed: None, serve: Serve
) -> None:
    settings = hybrid_settings.model_copy(update={"rerank_depth": 4})
    async with serve(create_app(settings, embedder=embedder, reranker=ShortestFirst())) as client:
        plain = await search(client, "gasket kit for the feed line in plant notes", k=7)
        reranked = await search(client, "gasket kit for the feed line in plant notes", k=7, rerank=True)

    assert plain["reranked"] is False and all(hit["rerank_score"] is None for hit in plain["hits"])
    assert reranked["reranked"] is True
    head, tail = plain["hits"][:4], plain["hits"][4:]
    assert [hit["id"] for hit in reranked["hits"][:4]] == [
        hit["id"] for hit in sorted(head, key=lambda hit: len(hit["text"]))
    ]
    assert [hit["rerank_score"] for hit in reranked["hits"][:4]] == sorted(
        (-float(len(hit["text"])) for hit in head), reverse=True
    )
    # Below the rerank depth the fused order stays, unscored by the reranker.
    assert [hit["id"] for hit in reranked["hits"][4:]] == [hit["id"] for hit in tail]
    assert all(hit["rerank_score"] is None for hit in reranked["hits"][4:])
    assert all(hit["retrievers"] for hit in reranked["hits"])


@pytest.mark.integration
async def test_without_kafka_hybrid_falls_back_to_vectors_and_lexical_is_a_503(
    hybrid_settings: Settings, embedder: Embedder, indexed: None, serve: Serve
) -> None:
    settings = hybrid_settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    async with serve(create_app(settings, embedder=embedder)) as client:
        hybrid = await client.post("/v1/search", json={"query": "gasket kit", "k": 3})
        lexical = await client.post("/v1/search", json={"query": "gasket kit", "mode": "lexical"})
        # With no BM25 index to list document ids, a prefix is matched by over-fetching from Chroma.
        prefixed = await hit_ids(client, "plant notes", k=20, mode="vector", doc_id_prefix="catalogue/kit-")

    assert hybrid.status_code == 200
    assert all(set(hit["retrievers"]) == {"vector"} for hit in hybrid.json()["hits"])
    assert lexical.status_code == 503
    assert "still replaying" in lexical.json()["detail"]
    assert sorted(prefixed) == sorted(expected_ids(doc_id_prefix="catalogue/kit-"))
