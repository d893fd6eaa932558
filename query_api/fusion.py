"""Fusing the retrievers' ranked lists into one: by their scores (the default), or by ranks alone.

``convex_fusion``: each retriever's scores for the query are min-max normalised to [0, 1], and
a chunk scores the weighted mean of them, a retriever that did not return it counting 0. The
weights are set per query: a retriever's share is how far its best hit stands out from its other
candidates (in standard deviations: a retriever sure of its first hit sets it apart), pulled
halfway back to a fixed prior, so that no single query can hand all the weight to one
retriever. Cosine similarities and BM25 scores live on unrelated scales, and which retriever is
right differs by collection and by query; a fixed weight that suits one set loses on another
(``bench/fusion_study.py``, ``docs/retrieval-quality.md``).

``reciprocal_rank_fusion`` (Cormack et al., 2009) scores an item ``sum(weight / (k + rank))``
over the lists it is in: ranks need no calibration, but they drop how sure each retriever was.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["STANDOUT_POWER", "FusedItem", "convex_fusion", "reciprocal_rank_fusion", "standout"]

#: The retrievers' standouts are raised to this power before they are turned into shares; in the
#: fusion study every power from 1 to 3 reached the better retriever on every set.
STANDOUT_POWER = 2.0


@dataclass(frozen=True)
class FusedItem:
    id: str
    score: float
    #: retriever name → 1-based rank of the item in that retriever's list
    ranks: dict[str, int]


def _check_weights(names: Sequence[str], weights: Mapping[str, float]) -> None:
    missing = set(names) - set(weights)
    if missing:
        raise ValueError(f"no weight for retrievers {sorted(missing)}")
    if any(weights[name] < 0 for name in names):
        raise ValueError(f"weights must not be negative: {dict(weights)}")
    if sum(weights[name] for name in names) == 0:
        raise ValueError("at least one retriever needs a positive weight")


def standout(scores: Sequence[float]) -> float:
    """How many standard deviations the best score stands above the mean of a list's scores
    (0 for fewer than two scores, or scores all equal)."""
    if len(scores) < 2:
        return 0.0
    mean = math.fsum(scores) / len(scores)
    spread = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
    return (max(scores) - mean) / spread if spread > 0 else 0.0


def convex_fusion(
    hits: Mapping[str, Sequence[tuple[str, float]]],
    priors: Mapping[str, float],
    limit: int | None = None,
    power: float = STANDOUT_POWER,
) -> list[FusedItem]:
    """Fuse each retriever's ``(id, score)`` list (best first; higher scores better), best first;
    with ``limit``, only the first ``limit`` (the same as the whole list cut there).

    ``priors`` are the retrievers' weights before a query is seen (normalised to sum to 1); one of
    0 leaves that retriever out, so the fusion then reproduces the other's order. Scores lie in
    [0, 1]: 1.0 is a chunk first in every list consulted. Ties go to the item more retrievers
    returned, then to its better best rank, then to the smaller id, so every replica agrees.
    """
    _check_weights(list(hits), priors)
    names = [name for name in hits if priors[name] > 0]
    total_prior = math.fsum(priors[name] for name in names)
    prior = {name: priors[name] / total_prior for name in names}
    confidence = {name: max(standout([s for _, s in hits[name]]), 0.0) ** power for name in names}
    total_confidence = math.fsum(confidence.values())
    share = {
        name: confidence[name] / total_confidence if total_confidence > 0 else prior[name] for name in names
    }
    weight = {name: (share[name] + prior[name]) / 2 for name in names}

    # Plain dicts and one pass per list: a search fuses two lists of 100 on the event loop.
    ranks: dict[str, dict[str, int]] = {}
    scores: dict[str, float] = {}
    for name in names:
        found = hits[name]
        if not found:
            continue
        low = min(score for _, score in found)
        high = max(score for _, score in found)
        scale = weight[name] / (high - low) if high > low else 0.0
        for rank, (item_id, score) in enumerate(found, start=1):
            # All scores equal: the retriever ranks its hits alike, each above what it missed.
            value = (score - low) * scale if scale else weight[name]
            item_ranks = ranks.get(item_id)
            if item_ranks is None:
                ranks[item_id] = {name: rank}
                scores[item_id] = value
            elif name not in item_ranks:  # a list naming an item twice counts its better rank
                item_ranks[name] = rank
                scores[item_id] += value
    for item_id, total in scores.items():
        scores[item_id] = min(max(total, 0.0), 1.0)  # rounding must not step outside [0, 1]

    def order(item_id: str) -> tuple[float, int, int, str]:
        item_ranks = ranks[item_id]
        return (-scores[item_id], -len(item_ranks), min(item_ranks.values()), item_id)

    head = sorted(scores, key=order) if limit is None else heapq.nsmallest(limit, scores, key=order)
    return [FusedItem(item_id, scores[item_id], ranks[item_id]) for item_id in head]


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
    _check_weights(list(rankings), weights)
    best_possible = sum(weights[name] for name in rankings) / (k + 1)

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
