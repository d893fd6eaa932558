"""Ranking metrics for a query with exactly one relevant document.

With one relevant document the ideal DCG is 1 (it sits at rank 1), so nDCG@k is simply
``1 / log2(rank + 1)`` when the document is within the first k, else 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = [
    "documents_in_order",
    "ndcg_at",
    "rank_of",
    "recall_at",
    "reciprocal_rank",
    "summarize",
]


def documents_in_order(doc_ids: Iterable[str]) -> list[str]:
    """Chunk hits' document ids → documents, each at the rank of its best chunk."""
    return list(dict.fromkeys(doc_ids))


def rank_of(ranking: Sequence[str], relevant: str) -> int | None:
    """1-based rank of the relevant document, None when it was not returned."""
    try:
        return ranking.index(relevant) + 1
    except ValueError:
        return None


def recall_at(ranking: Sequence[str], relevant: str, k: int) -> float:
    rank = rank_of(ranking, relevant)
    return 1.0 if rank is not None and rank <= k else 0.0


def reciprocal_rank(ranking: Sequence[str], relevant: str, k: int = 10) -> float:
    """1/rank within the first k, else 0 (averaged over queries: MRR@k)."""
    rank = rank_of(ranking, relevant)
    return 1.0 / rank if rank is not None and rank <= k else 0.0


def ndcg_at(ranking: Sequence[str], relevant: str, k: int = 10) -> float:
    rank = rank_of(ranking, relevant)
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def summarize(
    rankings: Sequence[Sequence[str]],
    relevant: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    cutoff: int = 10,
) -> dict[str, float]:
    """Mean recall@k for each k, MRR@cutoff and nDCG@cutoff over all queries."""
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings for {len(relevant)} relevant documents")
    if not rankings:
        raise ValueError("no rankings to summarize")
    count = len(rankings)
    pairs = list(zip(rankings, relevant, strict=True))
    summary = {f"recall@{k}": sum(recall_at(r, doc, k) for r, doc in pairs) / count for k in ks}
    summary["mrr"] = sum(reciprocal_rank(r, doc, cutoff) for r, doc in pairs) / count
    summary[f"ndcg@{cutoff}"] = sum(ndcg_at(r, doc, cutoff) for r, doc in pairs) / count
    return summary
