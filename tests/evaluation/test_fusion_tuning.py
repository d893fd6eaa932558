from __future__ import annotations

import pytest

from evaluation.runner import ChunkHit
from evaluation.tuning import MIN_QUERIES, JudgedCandidates, TooFewQueries, cross_validated, tune_vector_prior


def judged(query_id: str, right: str, vector_first: bool) -> JudgedCandidates:
    """A query whose relevant document ``right`` one retriever ranks first and the other last."""
    others = [f"{query_id}-other-{i}" for i in range(9)]
    good = [right, *others]
    bad = [*others, right]
    vector, lexical = (good, bad) if vector_first else (bad, good)
    return JudgedCandidates(
        query_id,
        {right: 1},
        vector=[ChunkHit(f"c-{doc}", doc, 0.9 - 0.05 * i) for i, doc in enumerate(vector)],
        lexical=[ChunkHit(f"c-{doc}", doc, 12.0 - i) for i, doc in enumerate(lexical)],
    )


def test_a_deployment_where_vectors_are_right_tunes_toward_vectors_and_says_how_much_it_gains():
    queries = [judged(f"q{i}", f"d{i}", vector_first=True) for i in range(40)]
    result = tune_vector_prior(queries, default_prior=0.35)
    assert result.prior > 0.5
    assert result.by_prior[result.prior] == 1.0  # every relevant document first
    assert result.tuned_ndcg > result.default_ndcg and not result.worse_than_default
    assert result.held_out_queries == 40


def test_a_grid_where_no_prior_beats_the_default_keeps_the_default():
    same = [judged(f"q{i}", f"d{i}", vector_first=True) for i in range(30)]
    flat = [JudgedCandidates(q.query_id, q.relevance, q.vector, q.vector) for q in same]
    result = tune_vector_prior(flat, default_prior=0.35)
    assert result.prior == 0.35
    assert result.tuned_ndcg == result.default_ndcg


def test_a_prior_that_only_wins_on_the_queries_it_was_chosen_on_is_refused():
    # Each query has its own best prior; the default is mediocre everywhere. On any four folds the
    # best prior is one of theirs, and it scores 0 on the fold left out: worse than the default.
    priors = [0.0, 0.25, 0.5, 0.75, 1.0]
    scores = [{**{p: (1.0 if p == mine else 0.0) for p in priors}, 0.35: 0.2} for mine in priors]
    result = cross_validated(scores, fold_of=[0, 1, 2, 3, 4], default_prior=0.35)
    assert result.worse_than_default
    assert result.prior == 0.35  # over all queries nothing beats it


def test_too_few_judged_queries_are_refused():
    with pytest.raises(TooFewQueries, match=str(MIN_QUERIES)):
        tune_vector_prior([judged("q", "d", True)] * (MIN_QUERIES - 1), default_prior=0.35)
