"""Ranking metrics with graded relevance, per query and averaged, as trec_eval defines them.

- recall@k: the share of a query's relevant documents (grade > 0) within the first k;
- MRR@k: 1 / the rank of the first relevant document within the first k, else 0;
- nDCG@k: DCG = sum of grade / log2(rank + 1) over the first k, divided by the DCG of the ideal
  order of the judged documents. The gain is the grade itself (linear), as in trec_eval,
  pytrec_eval and so BEIR's published figures; a known-item case's nDCG is 1 / log2(rank + 1).

``per_query_scores`` is the one place the evaluation computes them, with ranx (the field's own
implementation, checked against the hand-written definitions below in the tests), and
``paired_tests`` says whether two modes' per-query scores differ by more than chance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

__all__ = [
    "Judgements",
    "documents_in_order",
    "metric_names",
    "ndcg_at",
    "paired_tests",
    "per_query_scores",
    "recall_at",
    "reciprocal_rank",
    "summarize",
]

#: document id → graded relevance of one query (grades above 0 are relevant).
Judgements = Mapping[str, int]


def documents_in_order(doc_ids: Iterable[str]) -> list[str]:
    """Chunk hits' document ids → documents, each at the rank of its best chunk."""
    return list(dict.fromkeys(doc_ids))


def _judgements(relevant: str | Judgements) -> Judgements:
    return {relevant: 1} if isinstance(relevant, str) else relevant


def recall_at(ranking: Sequence[str], relevant: str | Judgements, k: int) -> float:
    judged = _judgements(relevant)
    wanted = {doc_id for doc_id, grade in judged.items() if grade > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranking[:k])) / len(wanted)


def reciprocal_rank(ranking: Sequence[str], relevant: str | Judgements, k: int = 10) -> float:
    """1/rank of the first relevant document within the first k, else 0 (averaged: MRR@k)."""
    judged = _judgements(relevant)
    for rank, doc_id in enumerate(ranking[:k], start=1):
        if judged.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranking: Sequence[str], relevant: str | Judgements, k: int = 10) -> float:
    judged = _judgements(relevant)
    gains = sorted((grade for grade in judged.values() if grade > 0), reverse=True)
    ideal = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(gains[:k], start=1))
    if ideal == 0:
        return 0.0
    dcg = sum(
        judged.get(doc_id, 0) / math.log2(rank + 1)
        for rank, doc_id in enumerate(ranking[:k], start=1)
        if judged.get(doc_id, 0) > 0
    )
    return dcg / ideal


def metric_names(ks: Sequence[int] = (1, 5, 10), cutoff: int = 10) -> list[str]:
    return [*(f"recall@{k}" for k in ks), "mrr", f"ndcg@{cutoff}"]


def _ranx_inputs(
    rankings: Sequence[Sequence[str]], judgements: Sequence[str | Judgements]
) -> tuple[Any, Any, list[int]]:
    """ranx's Qrels and Run of the queries that have a relevant document, and their indexes.

    ranx orders queries by id, so ids are zero-padded indexes; a ranking's scores only carry its
    order (ranx sorts by them), and a query with nothing relevant scores 0 without ranx (ranx
    refuses an empty judgement)."""
    from ranx import Qrels, Run  # numba-compiled: imported only when the evaluation runs

    if len(rankings) != len(judgements):
        raise ValueError(f"{len(rankings)} rankings for {len(judgements)} sets of judgements")
    kept = [i for i, relevant in enumerate(judgements) if any(g > 0 for g in _judgements(relevant).values())]
    width = len(str(len(rankings)))
    qrels = {
        f"q{i:0{width}d}": {doc: grade for doc, grade in _judgements(judgements[i]).items() if grade > 0}
        for i in kept
    }
    run = {
        f"q{i:0{width}d}": {doc: float(len(rankings[i]) - rank) for rank, doc in enumerate(rankings[i])}
        for i in kept
        if rankings[i]
    }
    return Qrels(qrels), Run(run), kept


def _ranx_metrics(ks: Sequence[int], cutoff: int) -> dict[str, str]:
    """Our metric names → ranx's (its ``ndcg`` has linear gains, as trec_eval's)."""
    return {
        **{f"recall@{k}": f"recall@{k}" for k in ks},
        "mrr": f"mrr@{cutoff}",
        f"ndcg@{cutoff}": f"ndcg@{cutoff}",
    }


def per_query_scores(
    rankings: Sequence[Sequence[str]],
    judgements: Sequence[str | Judgements],
    ks: Sequence[int] = (1, 5, 10),
    cutoff: int = 10,
) -> dict[str, list[float]]:
    """Each metric of ``metric_names(ks, cutoff)`` → its value for every query, in query order
    (``rankings[i]`` is judged by ``judgements[i]``); per-query values are what a paired test
    between two runs needs."""
    from ranx import evaluate

    qrels, run, kept = _ranx_inputs(rankings, judgements)
    names = _ranx_metrics(ks, cutoff)
    scores = {name: [0.0] * len(rankings) for name in names}
    if not kept:
        return scores
    found = evaluate(qrels, run, list(names.values()), return_mean=False, make_comparable=True)
    if len(names) == 1:
        found = {next(iter(names.values())): found}
    for name, ranx_name in names.items():
        for index, value in zip(kept, found[ranx_name], strict=True):
            scores[name][index] = float(value)
    return scores


def paired_tests(
    rankings: Mapping[str, Sequence[Sequence[str]]],
    judgements: Sequence[str | Judgements],
    metrics: Sequence[str] = ("ndcg@10", "recall@5"),
    test: str = "fisher",
    max_p: float = 0.05,
) -> dict[str, dict[str, dict[str, float | bool]]]:
    """For each pair of modes (``"a vs b"``) and metric: the p-value of a paired test over the
    queries (ranx ``compare``; Fisher's randomisation test by default, seeded, so reruns agree)
    and whether it is below ``max_p``. Only queries with a relevant document take part."""
    from ranx import compare

    known = _ranx_metrics((1, 5, 10), 10)
    ranx_names = {name: known.get(name, name) for name in metrics}
    runs = []
    qrels = None
    for mode, mode_rankings in rankings.items():
        qrels, run, _ = _ranx_inputs(mode_rankings, judgements)
        run.name = mode
        runs.append(run)
    if qrels is None or len(runs) < 2:
        return {}
    report = compare(
        qrels, runs, list(ranx_names.values()), stat_test=test, max_p=max_p, make_comparable=True
    ).to_dict()
    tests: dict[str, dict[str, dict[str, float | bool]]] = {}
    for first, second in combinations(rankings, 2):
        pair = {}
        for name, ranx_name in ranx_names.items():
            p_value = float(report[first]["comparisons"][second][ranx_name])
            pair[name] = {"p_value": p_value, "significant": p_value < max_p}
        tests[f"{first} vs {second}"] = pair
    return tests


def summarize(
    rankings: Sequence[Sequence[str]],
    judgements: Sequence[str | Judgements],
    ks: Sequence[int] = (1, 5, 10),
    cutoff: int = 10,
) -> dict[str, float]:
    """Mean recall@k for each k, MRR@cutoff and nDCG@cutoff over all queries."""
    if not rankings:
        raise ValueError("no rankings to summarize")
    scores = per_query_scores(rankings, judgements, ks, cutoff)
    return {name: sum(values) / len(values) for name, values in scores.items()}
