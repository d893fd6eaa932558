"""The several-set report: significance marks, the checks and the Markdown page."""

from __future__ import annotations

from evaluation.cases import EvalCase
from evaluation.runner import ChunkHit, ModeResult
from evaluation.sets import SetResult, SetsReport, _significance
from evaluation.sets_report import sets_markdown

SETTINGS = {
    "model": "all-MiniLM-L6-v2",
    "chunk_size": 256,
    "hybrid_candidates": 100,
    "hybrid_fusion": "convex",
    "hybrid_vector_prior": 0.35,
}


def mode(name: str, found: list[list[str]], ndcg: float) -> ModeResult:
    metrics = {"recall@1": ndcg, "recall@5": ndcg, "recall@10": ndcg, "mrr": ndcg, "ndcg@10": ndcg}
    return ModeResult(
        name,
        available=True,
        metrics=metrics,
        latency_ms={"p50": 1.0, "p95": 2.0},
        hits=[[ChunkHit(f"{doc}#0", doc, 1.0) for doc in ranking] for ranking in found],
    )


def a_set() -> SetResult:
    cases = [EvalCase(f"query {i}", {f"d{i}": 1}, f"q{i}") for i in range(30)]
    right = [[f"d{i}"] for i in range(30)]
    wrong = [["x"] for _ in range(30)]
    modes = {"vector": mode("vector", wrong, 0.0), "lexical": mode("lexical", right, 1.0)}
    modes["hybrid"] = mode("hybrid", right, 1.0)
    return SetResult("tiny", 30, 30, {}, modes, 1.0, significance=_significance(modes, cases))


def test_a_retriever_that_differs_significantly_from_the_default_is_starred_on_the_page():
    report = SetsReport("run-1", "2026-12-06T22:00:00+00:00", SETTINGS, {"tiny": a_set()})
    page = sets_markdown(report, "ragstream eval --beir tiny")

    assert "    ragstream eval --beir tiny" in page and "2026-12-06" in page
    assert "| vector | 0.000* |" in page
    assert "| lexical | 1.000 |" in page
    assert "| hybrid (default) | 1.000 |" in page
    assert "| tiny | ndcg@10 | lexical 1.000 | 1.000 | 1.000 | yes |" in page
    assert "convex, vector prior 0.35" in page
