"""Weighted reciprocal rank fusion: merging ranked lists by rank alone, whatever their scores mean.

RRF (Cormack et al., 2009) scores an item ``sum(weight / (k + rank))`` over the lists it is in.
Cosine similarities and BM25 scores live on unrelated scales; ranks do not, which is why RRF
needs no score calibration.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["FusedItem", "reciprocal_rank_fusion"]


@dataclass(frozen=True)
class FusedItem:
    id: str
    score: float
    #: retriever name → 1-based rank of the item in that retriever's list
    ranks: dict[str, int]


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[str]],
    weights: Mapping[str, float],
    k: int = 60,
    limit: int | None = None,
) -> list[FusedItem]:
    """Fuse ranked id lists (best first, one per retriever), best first; with ``limit``, only the
    first ``limit`` of them (the same as the whole list cut there).

    Scores are divided by the best possible score (first in every list), so 1.0 means that and
    scores stay comparable when weights or ``k`` change. Ties go to the item with the better best
    rank, then to the smaller id, so that every replica orders them alike.
    """
    if k < 1:
        raise ValueError(f"the RRF constant k must be at least 1, got {k}")
    missing = set(rankings) - set(weights)
    if missing:
        raise ValueError(f"no weight for retrievers {sorted(missing)}")
    if any(weights[name] < 0 for name in rankings):
        raise ValueError(f"weights must not be negative: {dict(weights)}")
    best_possible = sum(weights[name] for name in rankings) / (k + 1)
    if best_possible == 0:
        raise ValueError("at least one retriever needs a positive weight")

    # Plain dicts and one pass per list: a search fuses two lists of 100 on the event loop.
    ranks: dict[str, dict[str, int]] = {}
    sums: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    for name, ids in rankings.items():
        weight = weights[name]
        for rank, item_id in enumerate(ids, start=1):
            item_ranks = ranks.get(item_id)
            if item_ranks is None:
                ranks[item_id] = {name: rank}
                sums[item_id] = weight / (k + rank)
                best_rank[item_id] = rank
            elif name not in item_ranks:  # a list naming an item twice counts its better rank
                item_ranks[name] = rank
                sums[item_id] += weight / (k + rank)
                best_rank[item_id] = min(best_rank[item_id], rank)

    scores = {item_id: total / best_possible for item_id, total in sums.items()}

    def order(item_id: str) -> tuple[float, int, str]:
        return (-scores[item_id], best_rank[item_id], item_id)

    head = sorted(scores, key=order) if limit is None else heapq.nsmallest(limit, scores, key=order)
    return [FusedItem(item_id, scores[item_id], ranks[item_id]) for item_id in head]
