"""Evaluation on several data sets at once: the built-in Wikipedia set and any BEIR-layout sets.

Each set is indexed on its own by the real pipeline (its own events topic, consumer group, chunk
log and collection: ``EvalIndexes``), the way a deployment holding only those documents would
be, then every mode is searched through the API. Per set the report says whether the default
mode reaches the better single retriever, within ``TOLERANCE``, and the candidates of every query
are dumped for offline fusion studies (``candidates.py``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation.beir import BeirSet
from evaluation.candidates import save_candidates
from evaluation.cases import EvalCase, build_cases
from evaluation.index import EvalIndexes, evaluation_services
from evaluation.ranking_metrics import documents_in_order, paired_tests
from evaluation.results import new_run_id, save_json, settings_summary
from evaluation.runner import API_MAX_K, MODES, RETRIEVER_MODES, ModeResult, evaluate_modes
from query_api.models import SearchRequest
from schemas import DocumentEvent, Settings

if TYPE_CHECKING:
    from query_api.query_embedding import TextEncoder

__all__ = [
    "CHECKED_METRICS",
    "SIGNIFICANCE",
    "TESTED_METRICS",
    "TOLERANCE",
    "EvalSet",
    "SetResult",
    "SetsReport",
    "beir_eval_set",
    "run_sets_evaluation",
    "wikipedia_eval_set",
]

#: How far below the better single retriever the default mode may be and still pass.
TOLERANCE = 0.005
#: The metrics the default mode is checked on, per set.
CHECKED_METRICS = ("ndcg@10", "recall@5")
#: The mode a search gets when it names none.
DEFAULT_MODE = str(SearchRequest.model_fields["mode"].default)
#: The metrics tested for a significant difference between modes, and the threshold.
TESTED_METRICS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class EvalSet:
    name: str
    events: list[DocumentEvent]
    cases: list[EvalCase]
    #: what the report should say about the set beyond its counts (origin, left-out judgements)
    notes: dict[str, Any] = field(default_factory=dict)


def wikipedia_eval_set(articles: int | None = None, queries: int | None = None, seed: int = 0) -> EvalSet:
    """The built-in set: Wikipedia short descriptions, each finding its own article."""
    from streams.corpus import wiki_articles, wiki_events

    chosen = wiki_articles()[:articles]
    cases = build_cases(chosen, queries, seed)
    if not cases:
        raise ValueError("no article among those chosen has a short description to query with")
    return EvalSet("wikipedia", list(wiki_events(articles)), cases, {"source": "built-in sample"})


def beir_eval_set(beir: BeirSet, queries: int | None = None, seed: int = 0) -> EvalSet:
    """A BEIR set; with ``queries``, a sample of its cases drawn with ``seed``."""
    cases = beir.cases
    if queries is not None and queries < len(cases):
        cases = random.Random(seed).sample(cases, queries)
    notes = {"source": str(beir.path), "judged_documents_not_in_corpus": beir.judged_missing}
    return EvalSet(beir.name, list(beir.events()), cases, notes)


@dataclass
class SetResult:
    name: str
    documents: int
    cases: int
    notes: dict[str, Any]
    modes: dict[str, ModeResult]
    ingest_seconds: float
    candidates_path: Path | None = None
    #: "a vs b" → metric → p-value of a paired test over the queries, and whether p < SIGNIFICANCE
    significance: dict[str, dict[str, dict[str, float | bool]]] = field(default_factory=dict)

    def significant(self, mode: str, other: str, metric: str) -> bool:
        """Whether ``mode`` and ``other`` differ on ``metric`` by the paired test."""
        pair = self.significance.get(f"{mode} vs {other}") or self.significance.get(f"{other} vs {mode}")
        return bool(pair and pair[metric]["significant"])

    def checks(self) -> dict[str, dict[str, float | bool]]:
        """Per checked metric: the better single retriever, the default mode, and whether the
        default reaches the better one within ``TOLERANCE``."""
        checks: dict[str, dict[str, float | bool]] = {}
        for metric in CHECKED_METRICS:
            best = max(self.modes[name].metrics[metric] for name in RETRIEVER_MODES)
            default = self.modes[DEFAULT_MODE].metrics[metric]
            checks[metric] = {"best_single": best, "default": default, "ok": default >= best - TOLERANCE}
        return checks

    def to_json(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "cases": self.cases,
            "notes": self.notes,
            "ingest_seconds": self.ingest_seconds,
            "modes": {name: result.to_json() for name, result in self.modes.items()},
            "default_mode": DEFAULT_MODE,
            "default_checks": self.checks(),
            "candidates": str(self.candidates_path) if self.candidates_path else None,
            "significance": {"test": "Fisher's randomisation, paired over queries", "max_p": SIGNIFICANCE}
            | self.significance,
        }


@dataclass
class SetsReport:
    run_id: str
    started_at: str
    settings: dict[str, Any]
    sets: dict[str, SetResult] = field(default_factory=dict)
    path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": "sets",
            "run_id": self.run_id,
            "started_at": self.started_at,
            "settings": self.settings,
            "default_mode": DEFAULT_MODE,
            "tolerance": TOLERANCE,
            "sets": {name: result.to_json() for name, result in self.sets.items()},
        }


def _significance(
    modes: dict[str, ModeResult], cases: Sequence[EvalCase]
) -> dict[str, dict[str, dict[str, float | bool]]]:
    """Paired tests between the default mode and each retriever it fuses, and between those two."""
    compared = [name for name in (DEFAULT_MODE, *RETRIEVER_MODES) if name in modes and modes[name].available]
    rankings = {
        name: [documents_in_order(hit.doc_id for hit in found) for found in modes[name].hits]
        for name in compared
    }
    return paired_tests(rankings, [case.relevance for case in cases], TESTED_METRICS, max_p=SIGNIFICANCE)


def run_sets_evaluation(
    sets: Sequence[EvalSet],
    base: Settings,
    results_dir: Path = Path("bench/results"),
    consumers: int = 1,
    own_services: bool = True,
    embedder: TextEncoder | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> SetsReport:
    """Index and evaluate each set in turn; ``own_services`` starts a private Kafka broker and
    Chroma server, else those named in ``base`` are used (with new topics and collections).
    The report is written as ``eval-sets-<run id>.json`` under ``results_dir`` after each set,
    so that an interrupted run keeps the sets it finished."""
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"two sets share a name: {names}")
    started_at = datetime.now(UTC)
    run_id = new_run_id(started_at)
    with evaluation_services(base, own_services) as settings:
        report = SetsReport(run_id, started_at.isoformat(), settings_summary(settings))
        if embedder is None:
            from query_api.query_model import load_query_model

            # The API's own query model, so that the figures are the API's.
            embedder = load_query_model(settings)
        for eval_set in sets:
            say(f"{eval_set.name}: {len(eval_set.events)} documents, {len(eval_set.cases)} queries")
            indexes = EvalIndexes(settings, f"{run_id}-{eval_set.name}", consumers, say=say)
            asyncio.run(indexes.publish(eval_set.events))
            set_settings = indexes.build(settings.chunk_size)
            modes = evaluate_modes(set_settings, embedder, eval_set.cases, MODES)
            result = SetResult(
                eval_set.name,
                len(eval_set.events),
                len(eval_set.cases),
                eval_set.notes,
                modes,
                indexes.ingest_seconds[settings.chunk_size],
                significance=_significance(modes, eval_set.cases),
            )
            result.candidates_path = save_candidates(
                eval_set.name,
                run_id,
                settings_summary(set_settings),
                min(API_MAX_K, set_settings.hybrid_candidates),
                eval_set.cases,
                modes,
                results_dir,
            )
            report.sets[eval_set.name] = result
            report.path = save_json(report.to_json(), results_dir, f"eval-sets-{run_id}")
    return report
