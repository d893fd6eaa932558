"""Run evaluation cases through the query API, in process, and score the rankings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from query_api.evaluation.cases import EvalCase
from query_api.evaluation.metrics import documents_in_order, summarize
from query_api.models import SearchMode
from schemas import Settings

if TYPE_CHECKING:
    from query_api.query_batcher import TextEncoder

__all__ = ["MODES", "ModeResult", "RetrievalMode", "evaluate_modes"]

#: Chunks asked for per query; deduplicated to documents, this leaves well over 20 documents.
CHUNK_DEPTH = 50
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


@dataclass
class ModeResult:
    name: str
    available: bool
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    recall_at_k: dict[int, float] = field(default_factory=dict)
    mean_documents: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "metrics": self.metrics,
            "recall_at_k": {str(k): v for k, v in self.recall_at_k.items()},
            "mean_documents_returned": self.mean_documents,
            "seconds": self.seconds,
        }


def evaluate_modes(
    settings: Settings,
    embedder: TextEncoder,
    cases: Sequence[EvalCase],
    modes: Sequence[RetrievalMode] = MODES,
    concurrency: int = 4,
) -> dict[str, ModeResult]:
    """Every case through ``POST /v1/search`` in each mode, against one app started on ``settings``."""
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
            rankings = await _rankings(
                client, spec, cases, min(CHUNK_DEPTH, settings.hybrid_candidates), concurrency
            )
            relevant = [case.relevant_doc_id for case in cases]
            recall = summarize(rankings, relevant, ks=SWEEP_KS)
            results[spec.name] = ModeResult(
                spec.name,
                available=True,
                metrics=summarize(rankings, relevant, ks=HEADLINE_KS),
                recall_at_k={k: recall[f"recall@{k}"] for k in SWEEP_KS},
                mean_documents=sum(len(r) for r in rankings) / len(rankings),
                seconds=time.perf_counter() - started,
            )
    return results


async def _rankings(
    client: httpx.AsyncClient, spec: RetrievalMode, cases: Sequence[EvalCase], depth: int, concurrency: int
) -> list[list[str]]:
    gate = asyncio.Semaphore(concurrency)

    async def rank(case: EvalCase) -> list[str]:
        body = {"query": case.query, "k": depth, "mode": spec.mode, "rerank": spec.rerank}
        async with gate:
            response = await client.post("/v1/search", json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"{spec.name} search for {case.query!r} failed: {response.status_code} {response.text}"
            )
        return documents_in_order(hit["doc_id"] for hit in response.json()["hits"])

    return list(await asyncio.gather(*(rank(case) for case in cases)))
