"""Rerankers: the CrossEncoder from a local path, and clear errors when none can be loaded."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from consumers.embedder import Embedder, resolve_model_path
from query_api import create_app
from query_api.models import SearchHit
from query_api.rerank import CrossEncoderReranker, RerankerUnavailable, load_reranker
from schemas.settings import Settings


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


def test_no_reranker_is_loaded_unless_configured() -> None:
    assert load_reranker(Settings()) is None

    with pytest.raises(RerankerUnavailable, match="RAGSTREAM_RERANK_MODEL is not set"):
        load_reranker(Settings(rerank=True))


@pytest.mark.integration
async def test_the_api_does_not_start_with_a_reranker_it_cannot_load(
    kafka_broker: Any, chroma_server: Any, embedder: Embedder, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        chroma_port=chroma_server.port,
        collection=f"rerank-{suffix}",
        chunks_topic=f"rerank-{suffix}.chunks",
        stats_topic=f"rerank-{suffix}.stats",
        rerank_model=str(tmp_path / "missing-reranker"),
    )
    app = create_app(settings, embedder=embedder)

    with pytest.raises(RerankerUnavailable, match="missing-reranker"):
        async with app.router.lifespan_context(app):
            pass
