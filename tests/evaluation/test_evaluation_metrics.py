"""Graded ranking metrics, checked by hand on small cases."""

from __future__ import annotations

import math
import random

import pytest

from evaluation.ranking_metrics import (
    ndcg_at,
    paired_tests,
    per_query_scores,
    recall_at,
    reciprocal_rank,
    summarize,
)

GRADED = {"a": 2, "b": 1, "c": 0}


def test_graded_ndcg_divides_the_gains_at_their_ranks_by_those_of_the_ideal_order():
    # DCG of [b, x, a] = 1/log2(2) + 2/log2(4) = 2; ideal [a, b] = 2/log2(2) + 1/log2(3).
    expected = 2 / (2 + 1 / math.log2(3))
    assert ndcg_at(["b", "x", "a"], GRADED) == pytest.approx(expected)
    assert ndcg_at(["a", "b"], GRADED) == pytest.approx(1.0)
    assert ndcg_at(["a", "b"], GRADED) > ndcg_at(["b", "a"], GRADED)


def test_a_document_judged_zero_earns_nothing_and_is_not_wanted():
    assert ndcg_at(["c", "x"], GRADED) == 0.0
    assert reciprocal_rank(["c", "b"], GRADED) == 0.5
    assert recall_at(["c"], GRADED, 1) == 0.0


def test_recall_is_the_share_of_the_relevant_documents_found_within_the_cutoff():
    assert recall_at(["b", "x", "a"], GRADED, 1) == 0.5
    assert recall_at(["b", "x", "a"], GRADED, 3) == 1.0


def test_nothing_past_the_cutoff_counts():
    ranking = [f"x{i}" for i in range(10)] + ["a", "b"]
    assert ndcg_at(ranking, GRADED, 10) == 0.0
    assert reciprocal_rank(ranking, GRADED, 10) == 0.0


def test_a_known_item_scores_as_one_relevant_document_of_grade_one():
    assert ndcg_at(["x", "a"], "a") == pytest.approx(1 / math.log2(3))
    assert ndcg_at(["x", "a"], {"a": 1}) == ndcg_at(["x", "a"], "a")


def test_per_query_scores_keep_the_query_order_and_summarize_averages_them():
    rankings = [["a"], ["x", "b"]]
    judged = [GRADED, GRADED]
    scores = per_query_scores(rankings, judged)
    assert scores["mrr"] == [1.0, 0.5]
    assert scores["recall@1"] == [0.5, 0.0]
    assert summarize(rankings, judged)["mrr"] == 0.75


def test_ranx_per_query_scores_agree_with_the_definitions_checked_by_hand():
    rng = random.Random(3)
    documents = [f"d{i}" for i in range(30)]
    rankings = [rng.sample(documents, rng.randrange(0, 12)) for _ in range(60)]
    judged: list[dict[str, int]] = [
        {d: rng.choice([0, 1, 2]) for d in rng.sample(documents, 3)} for _ in range(60)
    ]
    scores = per_query_scores(rankings, judged)
    for index, (ranking, relevant) in enumerate(zip(rankings, judged, strict=True)):
        assert scores["ndcg@10"][index] == pytest.approx(ndcg_at(ranking, relevant, 10))
        assert scores["recall@5"][index] == pytest.approx(recall_at(ranking, relevant, 5))
        assert scores["mrr"][index] == pytest.approx(reciprocal_rank(ranking, relevant, 10))


def test_a_paired_test_finds_a_consistent_difference_and_not_an_identical_run():
    judged = [{f"d{i}": 1} for i in range(40)]
    found = [[f"d{i}", "x"] for i in range(40)]
    missed = [["x", "y"] for _ in range(40)]
    tests = paired_tests({"found": found, "missed": missed, "same": found}, judged, ("ndcg@10",))
    assert tests["found vs missed"]["ndcg@10"]["significant"] is True
    assert tests["found vs same"]["ndcg@10"] == {"p_value": 1.0, "significant": False}
