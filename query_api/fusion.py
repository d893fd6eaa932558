"""Weighted reciprocal rank fusion: merging ranked lists by rank alone, whatever their scores mean.

RRF (Cormack et al., 2009) scores an item ``sum(weight / (k + rank))`` over the lists it is in.
Cosine similarities and BM25 scores live on unrelated scales; ranks do not, which is why RRF
needs no score calibration.
"""

from __future__ import annotations

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
    rankings: Mapping[str, Sequence[str]], weights: Mapping[str, float], k: int = 60
) -> list[FusedItem]:
    """Fuse ranked id lists (best first, one per retriever), best first.

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

    ranks: dict[str, dict[str, int]] = {}
    for name, ids in rankings.items():
        for rank, item_id in enumerate(ids, start=1):
            # A list naming an item twice counts its better rank.
            ranks.setdefault(item_id, {}).setdefault(name, rank)
    fused = [
        FusedItem(
            item_id,
            sum(weights[name] / (k + rank) for name, rank in item_ranks.items()) / best_possible,
            item_ranks,
        )
        for item_id, item_ranks in ranks.items()
    ]
    fused.sort(key=lambda item: (-item.score, min(item.ranks.values()), item.id))
    return fused
