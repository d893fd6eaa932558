"""Run evaluation cases through the query API, in process, and score the rankings."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from evaluation.cases import EvalCase
from evaluation.ranking_metrics import documents_in_order, per_query_scores
from query_api.models import SearchMode
from schemas import Settings

if TYPE_CHECKING:
    from query_api.query_embedding import TextEncoder

__all__ = ["MODES", "RETRIEVER_MODES", "ChunkHit", "ModeResult", "RetrievalMode", "evaluate_modes"]

#: The most hits one search returns (``SearchRequest.k``).
API_MAX_K = 100
#: Cut-offs of the k sweep; the headline metrics use 1, 5 and 10.
SWEEP_KS = (1, 3, 5, 10, 20)
HEADLINE_KS = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalMode:
    name: str
    mode: SearchMode
    rerank: bool = False


MODES = (
    RetrievalMode("vector", "vector"),
    RetrievalMode("lexical", "lexical"),
    RetrievalMode("hybrid", "hybrid"),
    RetrievalMode("hybrid+rerank", "hybrid", rerank=True),
)
#: The single retrievers that hybrid mode fuses.
RETRIEVER_MODES = ("vector", "lexical")


@dataclass(frozen=True)
class ChunkHit:
    chunk_id: str
    doc_id: str
    score: float


@dataclass
class ModeResult:
    name: str
    available: bool
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    recall_at_k: dict[int, float] = field(default_factory=dict)
    mean_documents: float = 0.0
    seconds: float = 0.0
    #: the server's ``took_ms`` of each search: p50, p95 and mean.
    latency_ms: dict[str, float] = field(default_factory=dict)
    #: Per query, in case order (kept out of the report's JSON: the candidate dump holds them).
    hits: list[list[ChunkHit]] = field(default_factory=list, repr=False)
    per_query: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "metrics": self.metrics,
            "recall_at_k": {str(k): v for k, v in self.recall_at_k.items()},
            "mean_documents_returned": self.mean_documents,
            "seconds": self.seconds,
            "latency_ms": self.latency_ms,
        }


def evaluate_modes(
    settings: Settings,
    embedder: TextEncoder,
    cases: Sequence[EvalCase],
    modes: Sequence[RetrievalMode] = MODES,
    concurrency: int = 4,
) -> dict[str, ModeResult]:
    """Every case through ``POST /v1/search`` in each mode, against one app started on ``settings``.

    Each search asks for the hybrid candidate depth (at most the API's 100), so that a vector or
    lexical result is exactly the list hybrid mode fuses: the same retriever, equally deep.
    """
    return asyncio.run(_evaluate(settings, embedder, cases, modes, concurrency))


async def _evaluate(
    settings: Settings,
    embedder: TextEncoder,
    cases: Sequence[EvalCase],
    modes: Sequence[RetrievalMode],
    concurrency: int,
) -> dict[str, ModeResult]:
    from query_api import create_app

    # The app lives in this process and is reached by no one else: it needs no API keys, and with
    # them it would refuse the evaluation's own requests.
    app = create_app(settings.model_copy(update={"api_keys": ()}), embedder=embedder)
    depth = min(API_MAX_K, settings.hybrid_candidates)
    results: dict[str, ModeResult] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://eval") as client,
    ):
        for spec in modes:
            if spec.rerank and settings.rerank_model is None:
                results[spec.name] = ModeResult(
                    spec.name, available=False, reason="no reranker configured (RAGSTREAM_RERANK_MODEL)"
                )
                continue
            started = time.perf_counter()
            answers = await _answers(client, spec, cases, depth, concurrency)
            results[spec.name] = _scored(spec.name, cases, answers, time.perf_counter() - started)
    return results


def _scored(
    name: str, cases: Sequence[EvalCase], answers: list[tuple[list[ChunkHit], float]], seconds: float
) -> ModeResult:
    hits = [found for found, _ in answers]
    rankings = [documents_in_order(hit.doc_id for hit in found) for found in hits]
    judgements = [case.relevance for case in cases]
    recall = per_query_scores(rankings, judgements, ks=SWEEP_KS)
    per_query = per_query_scores(rankings, judgements, ks=HEADLINE_KS)
    took = sorted(took_ms for _, took_ms in answers)
    return ModeResult(
        name,
        available=True,
        metrics={metric: statistics.fmean(values) for metric, values in per_query.items()},
        recall_at_k={k: statistics.fmean(recall[f"recall@{k}"]) for k in SWEEP_KS},
        mean_documents=statistics.fmean(len(r) for r in rankings),
        seconds=seconds,
        latency_ms={
            "p50": statistics.median(took),
            "p95": took[min(len(took) - 1, int(0.95 * len(took)))],
            "mean": statistics.fmean(took),
        },
        hits=hits,
        per_query=per_query,
    )


async def _answers(
    client: httpx.AsyncClient, spec: RetrievalMode, cases: Sequence[EvalCase], depth: int, concurrency: int
) -> list[tuple[list[ChunkHit], float]]:
    """Each case's chunk hits, best first, and the server's time for the search."""
    gate = asyncio.Semaphore(concurrency)

    async def answer(case: EvalCase) -> tuple[list[ChunkHit], float]:
        body = {"query": case.query, "k": depth, "mode": spec.mode, "rerank": spec.rerank}
        async with gate:
            response = await client.post("/v1/search", json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"{spec.name} search for {case.query!r} failed: {response.status_code} {response.text}"
            )
        payload = response.json()
        found = [ChunkHit(hit["id"], hit["doc_id"], float(hit["score"])) for hit in payload["hits"]]
        return found, float(payload["took_ms"])

    return list(await asyncio.gather(*(answer(case) for case in cases)))
