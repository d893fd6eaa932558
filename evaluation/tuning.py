"""Choosing the convex fusion's vector prior for one deployment from judged queries.

Each judged query's vector and lexical hits are fused offline with every prior of a grid, exactly
as hybrid search fuses them (``query_api.fusion.convex_fusion`` over the same lists), and scored by
nDCG@10. Which prior to use is the one best over all queries; whether to use it at all is decided
by cross-validation: the queries are split into folds, each fold is scored with the prior chosen
on the others, and the tuned prior is refused if those held-out scores are worse than the
default's. Ties go to the prior closest to the default, so a flat grid changes nothing.
"""

from __future__ import annotations

import statistics
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evaluation.ranking_metrics import documents_in_order, ndcg_at
from evaluation.runner import ChunkHit
from query_api.fusion import convex_fusion

__all__ = [
    "FOLDS",
    "MIN_QUERIES",
    "PRIORS",
    "JudgedCandidates",
    "TooFewQueries",
    "TuningResult",
    "cross_validated",
    "fused_ndcg",
    "tune_vector_prior",
]

#: The vector priors tried: 0 (BM25 alone) to 1 (vectors alone) in steps of 0.05.
PRIORS = tuple(round(step * 0.05, 2) for step in range(21))
FOLDS = 5
#: Fewer judged queries than this say too little to move a default.
MIN_QUERIES = 20
_CUTOFF = 10


@dataclass(frozen=True)
class JudgedCandidates:
    """One judged query: its relevant documents and what each retriever found for it."""

    query_id: str
    relevance: Mapping[str, int]
    vector: Sequence[ChunkHit]
    lexical: Sequence[ChunkHit]


@dataclass(frozen=True)
class TuningResult:
    prior: float
    default_prior: float
    #: Mean nDCG@10 over all queries, per prior of the grid.
    by_prior: dict[float, float]
    #: Cross-validated: every query scored with the prior chosen without it, and with the default.
    held_out_queries: int
    tuned_ndcg: float
    default_ndcg: float

    @property
    def worse_than_default(self) -> bool:
        return self.tuned_ndcg < self.default_ndcg


class TooFewQueries(ValueError):
    """Not enough judged queries to tune on."""


def tune_vector_prior(
    queries: Sequence[JudgedCandidates],
    default_prior: float,
    priors: Sequence[float] = PRIORS,
    folds: int = FOLDS,
) -> TuningResult:
    """The prior that fuses ``queries`` best, and how it and ``default_prior`` do on held-out folds."""
    if len(queries) < MIN_QUERIES:
        raise TooFewQueries(f"{len(queries)} judged queries; tuning needs at least {MIN_QUERIES}")
    grid = sorted({*priors, default_prior})
    scores = [{prior: fused_ndcg(query, prior) for prior in grid} for query in queries]
    fold_of = [zlib.crc32(query.query_id.encode()) % folds for query in queries]
    return cross_validated(scores, fold_of, default_prior)


def cross_validated(
    scores: Sequence[Mapping[float, float]], fold_of: Sequence[int], default_prior: float
) -> TuningResult:
    """From each query's score per prior (every row has the same priors, the default among them)
    and its fold: the prior best over all queries, and each fold scored with the prior best on the
    other folds, next to the default's scores of the same queries."""
    grid = sorted(scores[0])
    tuned_held_out: list[float] = []
    default_held_out: list[float] = []
    for fold in sorted(set(fold_of)):
        training = [row for row, f in zip(scores, fold_of, strict=True) if f != fold]
        held_out = [row for row, f in zip(scores, fold_of, strict=True) if f == fold]
        if not training:
            continue
        chosen = _best(training, grid, default_prior)
        tuned_held_out += [row[chosen] for row in held_out]
        default_held_out += [row[default_prior] for row in held_out]
    return TuningResult(
        prior=_best(scores, grid, default_prior),
        default_prior=default_prior,
        by_prior={prior: statistics.fmean(row[prior] for row in scores) for prior in grid},
        held_out_queries=len(tuned_held_out),
        tuned_ndcg=statistics.fmean(tuned_held_out) if tuned_held_out else 0.0,
        default_ndcg=statistics.fmean(default_held_out) if default_held_out else 0.0,
    )


def fused_ndcg(query: JudgedCandidates, prior: float) -> float:
    """nDCG@10 of the documents of hybrid search's fusion of ``query``'s hits with ``prior``."""
    doc_of = {hit.chunk_id: hit.doc_id for hit in (*query.vector, *query.lexical)}
    fused = convex_fusion(
        {
            "vector": [(hit.chunk_id, hit.score) for hit in query.vector],
            "lexical": [(hit.chunk_id, hit.score) for hit in query.lexical],
        },
        {"vector": prior, "lexical": 1.0 - prior},
    )
    return ndcg_at(documents_in_order(doc_of[item.id] for item in fused), query.relevance, _CUTOFF)


def _best(rows: Sequence[Mapping[float, float]], grid: Sequence[float], default_prior: float) -> float:
    means = {prior: statistics.fmean(row[prior] for row in rows) for prior in grid}
    top = max(means.values())
    return min((prior for prior in grid if means[prior] == top), key=lambda prior: abs(prior - default_prior))
