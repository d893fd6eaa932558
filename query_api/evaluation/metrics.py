"""Ranking metrics with graded relevance, per query and averaged, as trec_eval defines them.

- recall@k: the share of a query's relevant documents (grade > 0) within the first k;
- MRR@k: 1 / the rank of the first relevant document within the first k, else 0;
- nDCG@k: DCG = sum of grade / log2(rank + 1) over the first k, divided by the DCG of the ideal
  order of the judged documents. The gain is the grade itself (linear), as in trec_eval,
  pytrec_eval and so BEIR's published figures; a known-item case's nDCG is 1 / log2(rank + 1).

``per_query_scores`` is the one place these are computed: a library of the field (ranx's
``evaluate(qrels, run, metrics, return_mean=False)``, or ir-measures' ``iter_calc``) can take its
place without any caller changing, as long as it keeps the metric names and the per-query lists.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "Judgements",
    "documents_in_order",
    "metric_names",
    "ndcg_at",
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


def per_query_scores(
    rankings: Sequence[Sequence[str]],
    judgements: Sequence[str | Judgements],
    ks: Sequence[int] = (1, 5, 10),
    cutoff: int = 10,
) -> dict[str, list[float]]:
    """Each metric of ``metric_names(ks, cutoff)`` → its value for every query, in query order
    (``rankings[i]`` is judged by ``judgements[i]``); per-query values are what a paired test
    between two runs needs."""
    if len(rankings) != len(judgements):
        raise ValueError(f"{len(rankings)} rankings for {len(judgements)} sets of judgements")
    pairs = list(zip(rankings, judgements, strict=True))
    scores = {f"recall@{k}": [recall_at(r, judged, k) for r, judged in pairs] for k in ks}
    scores["mrr"] = [reciprocal_rank(r, judged, cutoff) for r, judged in pairs]
    scores[f"ndcg@{cutoff}"] = [ndcg_at(r, judged, cutoff) for r, judged in pairs]
    return scores


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
