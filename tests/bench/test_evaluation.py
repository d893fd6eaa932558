"""The retrieval evaluation: exact metric values on hand-made rankings, and one small real run."""

from __future__ import annotations

import json
import math

import pytest

from evaluation import (
    EvaluationOptions,
    build_cases,
    ndcg_at,
    recall_at,
    reciprocal_rank,
    run_evaluation,
    summarize,
)
from evaluation.ranking_metrics import documents_in_order
from schemas import Settings

RANKING = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]


def test_recall_counts_the_relevant_document_only_within_the_cutoff():
    assert recall_at(RANKING, "a", 1) == 1.0
    assert recall_at(RANKING, "c", 1) == 0.0
    assert recall_at(RANKING, "e", 5) == 1.0
    assert recall_at(RANKING, "f", 5) == 0.0
    assert recall_at(RANKING, "j", 10) == 1.0
    assert recall_at(RANKING, "k", 10) == 0.0
    assert recall_at(RANKING, "missing", 10) == 0.0


def test_reciprocal_rank_is_one_over_the_rank_and_zero_past_ten():
    assert reciprocal_rank(RANKING, "a") == 1.0
    assert reciprocal_rank(RANKING, "d") == 0.25
    assert reciprocal_rank(RANKING, "j") == 0.1
    assert reciprocal_rank(RANKING, "k") == 0.0
    assert reciprocal_rank([], "a") == 0.0


def test_ndcg_with_one_relevant_document_is_the_discount_at_its_rank():
    assert ndcg_at(RANKING, "a") == 1.0
    assert ndcg_at(RANKING, "c") == pytest.approx(0.5)  # 1 / log2(4)
    assert ndcg_at(RANKING, "b") == pytest.approx(1 / math.log2(3))
    assert ndcg_at(RANKING, "k") == 0.0


def test_summary_averages_over_queries():
    rankings = [["x", "y"], ["y", "x"], ["p", "q", "r", "s", "t", "x"], []]
    relevant = ["x", "x", "x", "x"]
    summary = summarize(rankings, relevant)
    assert summary["recall@1"] == 0.25
    assert summary["recall@5"] == 0.5
    assert summary["recall@10"] == 0.75
    assert summary["mrr"] == pytest.approx((1 + 0.5 + 1 / 6) / 4)
    assert summary["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7)) / 4)


def test_chunks_of_one_document_count_once_at_the_best_rank():
    assert documents_in_order(["d1", "d2", "d1", "d3", "d2"]) == ["d1", "d2", "d3"]


def test_cases_are_the_articles_with_a_description_sampled_with_a_fixed_seed():
    articles = [{"title": f"T{i}", "description": "" if i % 3 == 0 else f"desc {i}"} for i in range(30)]
    cases = build_cases(articles)
    assert len(cases) == 20
    assert cases[0].query == "desc 1" and cases[0].relevant_doc_id == "wiki/T1"
    assert build_cases(articles, queries=5, seed=7) == build_cases(articles, queries=5, seed=7)
    assert len(build_cases(articles, queries=5, seed=7)) == 5


@pytest.mark.integration
def test_evaluation_indexes_through_the_pipeline_and_writes_its_report(kafka_broker, chroma_server, tmp_path):
    base = Settings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        chroma_port=chroma_server.port,
        partitions=2,
        # Other tests' consumer actors may hold the local Ray cluster's CPUs.
        consumer_num_cpus=0,
    )
    options = EvaluationOptions(articles=150, queries=60, results_dir=tmp_path)

    report = run_evaluation(options, base, own_services=False)

    assert report.path is not None and report.path.parent == tmp_path
    saved = json.loads(report.path.read_text())
    assert saved["counts"]["articles"] == 150
    assert saved["counts"]["cases"] == 60
    modes = saved["modes"]
    assert set(modes) == {"vector", "lexical", "hybrid", "hybrid+rerank"}
    assert modes["hybrid+rerank"]["available"] is False
    for name in ("vector", "lexical", "hybrid"):
        assert all(0.0 <= value <= 1.0 for value in modes[name]["metrics"].values()), name
    assert modes["vector"]["metrics"]["recall@10"] > 0.3
