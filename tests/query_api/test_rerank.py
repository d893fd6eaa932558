"""Rerankers: the CrossEncoder from a local path, nanoranker's offline ONNX model, and clear errors
when none can be loaded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from engines.embedder import Embedder, resolve_model_path
from query_api import create_app
from query_api.models import SearchHit
from query_api.rerank import CrossEncoderReranker, NanoRanker, RerankerUnavailable, load_reranker
from schemas.settings import Settings
from streams.corpus import wiki_articles
from streams.topics import ensure_topics


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CrossEncoder saved to a local folder: MiniLM's encoder with a fresh, seeded scoring head.

    Its scores mean nothing; what is tested is loading from a path and ordering by its scores.
    """
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder(resolve_model_path("all-MiniLM-L6-v2"), num_labels=1, device="cpu")
    path = tmp_path_factory.mktemp("cross-encoder")
    model.save(str(path))
    return path


def hit(chunk_id: str, text: str) -> SearchHit:
    return SearchHit(id=chunk_id, doc_id=chunk_id, text=text, score=0.0, metadata={}, indexed_at=0.0)


HITS = [
    hit("a", "Apache Kafka stores streams of records in partitioned logs."),
    hit("b", "Bake the loaf in a very hot Dutch oven for forty minutes."),
    hit("c", "Plants turn sunlight into sugar in their chloroplasts."),
]


def test_a_cross_encoder_from_a_local_path_orders_hits_by_its_scores(cross_encoder_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    query = "how long does bread bake?"
    reranker = CrossEncoderReranker(str(cross_encoder_dir))
    expected = CrossEncoder(str(cross_encoder_dir), device="cpu").predict([(query, h.text) for h in HITS])

    reranked = reranker.rerank(query, HITS)

    by_id = {h.id: float(score) for h, score in zip(HITS, expected, strict=True)}
    assert [h.id for h in reranked] == sorted(by_id, key=lambda chunk_id: -by_id[chunk_id])
    assert [h.rerank_score for h in reranked] == pytest.approx(sorted(by_id.values(), reverse=True))
    assert all(h.score == h.rerank_score for h in reranked)
    assert reranker.rerank(query, []) == []


def test_a_missing_model_is_an_error_that_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"

    with pytest.raises(RerankerUnavailable, match="no-such-model"):
        CrossEncoderReranker(str(missing))


@pytest.fixture(scope="module")
def nanoranker() -> NanoRanker:
    return NanoRanker()


FILMS = [
    hit(
        "spielberg",
        "Steven Spielberg is one of the best-known directors, famous for 'E.T.', 'Jaws' and 'Jaws 2'.",
    ),
    hit(
        "titanic",
        "'Titanic', directed by James Cameron, was released in 1997 and earned more than any film before.",
    ),
    hit("bread", "Bake the loaf in a very hot Dutch oven for forty minutes."),
    hit(
        "inception",
        "'Inception' is a 2010 science fiction film directed by Christopher Nolan, about entering dreams.",
    ),
]


def test_nanoranker_lifts_the_passage_that_answers_the_question(nanoranker: NanoRanker) -> None:
    reranked = nanoranker.rerank("Who directed 'Inception'?", FILMS)

    assert reranked[0].id == "inception"
    assert sorted(h.id for h in reranked) == sorted(h.id for h in FILMS)
    scores = [h.rerank_score for h in reranked]
    assert None not in scores and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert all(h.score == h.rerank_score for h in reranked)
    assert nanoranker.rerank("Who directed 'Inception'?", []) == []


def test_nanoranker_scores_are_those_of_the_package_itself(nanoranker: NanoRanker) -> None:
    import nanoranker as package

    query = "Which film did James Cameron direct?"
    ranked = package.rank(query, [h.text for h in FILMS], top_n=len(FILMS), normalize_scores=False)

    reranked = nanoranker.rerank(query, FILMS)

    by_text = dict(ranked)
    assert [h.text for h in reranked] == [text for text, _ in ranked]
    assert [h.rerank_score for h in reranked] == pytest.approx([by_text[h.text] for h in reranked], abs=1e-6)
    # Asked again, from embeddings it has kept: the same scores.
    assert [h.rerank_score for h in nanoranker.rerank(query, FILMS)] == [h.rerank_score for h in reranked]


@pytest.mark.parametrize(
    "text",
    ["", "a", "Ünïcödé  naïve café — 東京, İstanbul\t\n ok", FILMS[3].text],
    ids=["empty", "one-char", "non-ascii", "passage"],
)
def test_the_ngram_vector_is_bit_for_bit_nanorankers_own(text: str) -> None:
    import nanoranker as package
    import numpy as np

    from query_api._ngram_hashing import textual_embedding

    assert np.array_equal(textual_embedding(text), package.textual_embed(text))


def test_nanoranker_keeps_every_hit_when_two_share_their_text(nanoranker: NanoRanker) -> None:
    twins = [FILMS[0], hit("inception-copy", FILMS[3].text), FILMS[3]]

    reranked = nanoranker.rerank("Who directed 'Inception'?", twins)

    assert [h.id for h in reranked] == ["inception-copy", "inception", "spielberg"]
    assert reranked[0].rerank_score == reranked[1].rerank_score


def test_nanoranker_puts_the_described_wikipedia_article_first(nanoranker: NanoRanker) -> None:
    """Short descriptions as queries, the first 1,000 characters of each article as its passage."""
    titles = ["2001: A Space Odyssey", "Accordion", "Acropolis of Athens", "Academy Awards", "Acrobatics"]
    articles = {a["title"]: a for a in wiki_articles() if a["title"] in titles}
    passages = [hit(title, f"{title}\n\n{articles[title]['extract']}"[:1000]) for title in titles]

    for title in titles:
        # The described article comes last into the reranker.
        candidates = [p for p in passages if p.id != title] + [p for p in passages if p.id == title]
        reranked = nanoranker.rerank(articles[title]["description"], candidates)
        assert reranked[0].id == title, articles[title]["description"]


def test_nanoranker_is_chosen_by_its_name() -> None:
    assert isinstance(load_reranker(Settings(rerank_model="nanoranker")), NanoRanker)


def test_no_reranker_is_loaded_unless_configured() -> None:
    assert load_reranker(Settings()) is None


def test_reranking_on_by_default_without_a_model_uses_nanoranker() -> None:
    assert isinstance(load_reranker(Settings(rerank=True)), NanoRanker)


@pytest.mark.integration
async def test_the_api_does_not_start_with_a_reranker_it_cannot_load(
    module_settings: Callable[..., Settings], embedder: Embedder, tmp_path: Path
) -> None:
    settings = module_settings("rerank", rerank_model=str(tmp_path / "missing-reranker"))
    app = create_app(settings, embedder=embedder)

    with pytest.raises(RerankerUnavailable, match="missing-reranker"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.integration
async def test_the_api_reranks_with_nanoranker_when_asked(
    module_settings: Callable[..., Settings],
    embedder: Embedder,
    index_chunks: Callable[..., Awaitable[None]],
    serve: Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    settings = module_settings("rerank-nano", rerank_model="nanoranker")
    await ensure_topics(settings)
    await index_chunks(
        settings,
        [h.id for h in FILMS],
        [h.text for h in FILMS],
        [
            {
                "doc_id": h.doc_id,
                "source": "films",
                "version": 1,
                "indexed_at": 1.0,
                "chunk_index": 0,
                "chunk_count": 1,
                "content_type": "text/plain",
            }
            for h in FILMS
        ],
    )
    query = "Which movie about dreams did Christopher Nolan make?"

    async with serve(create_app(settings, embedder=embedder)) as client:
        response = await client.post("/v1/search", json={"query": query, "k": 2, "rerank": True})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reranked"] is True
    assert body["hits"][0]["id"] == "inception"
    assert body["hits"][0]["rerank_score"] >= body["hits"][1]["rerank_score"]
