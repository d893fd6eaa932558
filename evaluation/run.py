"""One evaluation run: build the cases, index the corpus, score every mode, sweep, save JSON."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluation.cases import build_cases, shared_query_count
from evaluation.index import EvalIndexes, evaluation_services
from evaluation.results import new_run_id, save_json, settings_summary
from evaluation.runner import MODES, ModeResult, RetrievalMode, evaluate_modes
from schemas import Settings

__all__ = ["EvaluationOptions", "EvaluationReport", "run_evaluation"]

#: What hybrid must not lose to the better single retriever on.
HEADLINE_METRICS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")
PLAIN_MODES = tuple(mode for mode in MODES if not mode.rerank)
HYBRID = (RetrievalMode("hybrid", "hybrid"),)


@dataclass(frozen=True)
class EvaluationOptions:
    articles: int | None = None
    queries: int | None = None
    seed: int = 0
    sweep: bool = False
    chunk_sizes: tuple[int, ...] = (300, 600, 1000)
    lexical_weights: tuple[float, ...] = (0.5, 1.0, 2.0)
    candidate_depths: tuple[int, ...] = (50, 100)
    consumers: int = 1
    results_dir: Path = Path("bench/results")


@dataclass
class FusionResult:
    lexical_weight: float
    vector_weight: float
    candidates: int
    rrf_k: int
    metrics: dict[str, float]


@dataclass
class EvaluationReport:
    run_id: str
    started_at: str
    options: EvaluationOptions
    settings: dict[str, Any]
    articles: int
    cases: int
    shared_query_cases: int
    modes: dict[str, ModeResult]
    ingest_seconds: dict[int, float] = field(default_factory=dict)
    chunk_sweep: dict[int, dict[str, ModeResult]] = field(default_factory=dict)
    fusion_sweep: list[FusionResult] = field(default_factory=list)
    path: Path | None = None

    def best_fusion(self) -> FusionResult | None:
        """The fusion setting that reaches the better single retriever on most headline metrics,
        the higher sum of them breaking ties."""
        floors = {
            m: max(self.modes["vector"].metrics[m], self.modes["lexical"].metrics[m])
            for m in HEADLINE_METRICS
        }

        def merit(f: FusionResult) -> tuple[int, float]:
            met = sum(f.metrics[m] >= floor for m, floor in floors.items())
            return met, sum(f.metrics[m] for m in HEADLINE_METRICS)

        return max(self.fusion_sweep, key=merit, default=None)

    def hybrid_checks(self) -> dict[str, dict[str, float | bool]]:
        """For each headline metric: does hybrid reach the better of vector and lexical alone?"""
        checks: dict[str, dict[str, float | bool]] = {}
        best = self.best_fusion()
        for metric in HEADLINE_METRICS:
            floor = max(self.modes["vector"].metrics[metric], self.modes["lexical"].metrics[metric])
            hybrid = self.modes["hybrid"].metrics[metric]
            check: dict[str, float | bool] = {
                "best_single": floor,
                "hybrid_default": hybrid,
                "default_ok": hybrid >= floor,
            }
            if best is not None:
                check["hybrid_best_tuned"] = best.metrics[metric]
                check["tuned_ok"] = best.metrics[metric] >= floor
            checks[metric] = check
        return checks

    def to_json(self) -> dict[str, Any]:
        options = asdict(self.options)
        options["results_dir"] = str(self.options.results_dir)
        best = self.best_fusion()
        return {
            "source": "wikipedia",
            "run_id": self.run_id,
            "started_at": self.started_at,
            "options": options,
            "settings": self.settings,
            "counts": {
                "articles": self.articles,
                "cases": self.cases,
                "cases_sharing_their_query": self.shared_query_cases,
            },
            "ingest_seconds": {str(k): v for k, v in self.ingest_seconds.items()},
            "modes": {name: result.to_json() for name, result in self.modes.items()},
            "chunk_sweep": {
                str(size): {name: result.to_json() for name, result in results.items()}
                for size, results in self.chunk_sweep.items()
            },
            "fusion_sweep": [asdict(result) for result in self.fusion_sweep],
            "best_fusion": asdict(best) if best is not None else None,
            "hybrid_checks": self.hybrid_checks(),
        }


def run_evaluation(
    options: EvaluationOptions,
    base: Settings,
    own_services: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> EvaluationReport:
    """Evaluate retrieval on the Wikipedia sample corpus; ``own_services`` starts a private Kafka
    broker and Chroma server, else those named in ``base`` are used (with new topics and
    collections). The report is also written as JSON under ``options.results_dir``."""
    from query_api.query_model import load_query_model
    from streams.corpus import wiki_articles, wiki_events

    started_at = datetime.now(UTC)
    run_id = new_run_id(started_at)
    articles = wiki_articles()[: options.articles]
    cases = build_cases(articles, options.queries, options.seed)
    if not cases:
        raise ValueError("no article among those chosen has a short description to query with")
    say(f"{len(articles)} articles, {len(cases)} cases ({shared_query_count(cases)} share their query)")

    with evaluation_services(base, own_services) as settings:
        indexes = EvalIndexes(settings, run_id, options.consumers, say=say)
        asyncio.run(indexes.publish(list(wiki_events(options.articles))))
        main_settings = indexes.build(settings.chunk_size)
        # The API's own query model, so that the figures are the API's.
        embedder = load_query_model(settings)
        say(f"querying {len(cases)} cases in each mode")
        report = EvaluationReport(
            run_id=run_id,
            started_at=started_at.isoformat(),
            options=options,
            settings=settings_summary(main_settings),
            articles=len(articles),
            cases=len(cases),
            shared_query_cases=shared_query_count(cases),
            modes=evaluate_modes(main_settings, embedder, cases, MODES),
        )
        report.ingest_seconds = dict(indexes.ingest_seconds)
        # Saved before the sweep too, so that an interrupted sweep still leaves the headline.
        report.path = _save(report, options.results_dir)
        if options.sweep:
            for size in options.chunk_sizes:
                if size == settings.chunk_size:
                    report.chunk_sweep[size] = {m.name: report.modes[m.name] for m in PLAIN_MODES}
                    continue
                report.chunk_sweep[size] = evaluate_modes(indexes.build(size), embedder, cases, PLAIN_MODES)
            for depth in options.candidate_depths:
                for weight in options.lexical_weights:
                    tuned = main_settings.model_copy(
                        update={"hybrid_lexical_weight": weight, "hybrid_candidates": depth}
                    )
                    started = time.perf_counter()
                    metrics = evaluate_modes(tuned, embedder, cases, HYBRID)["hybrid"].metrics
                    say(
                        f"fusion: lexical weight {weight}, candidates {depth}, "
                        f"{time.perf_counter() - started:.0f} s"
                    )
                    report.fusion_sweep.append(
                        FusionResult(weight, tuned.hybrid_vector_weight, depth, tuned.rrf_k, metrics)
                    )
        report.ingest_seconds = dict(indexes.ingest_seconds)
    report.path = _save(report, options.results_dir)
    return report


def _save(report: EvaluationReport, results_dir: Path) -> Path:
    return save_json(report.to_json(), results_dir, f"eval-{report.run_id}")
