"""The evaluation grown from real use: confirmed feedback as cases, against the live index.

Reads the whole feedback topic, turns confirmed ratings into cases (see ``feedback_cases``),
leaves out cases whose document is no longer indexed (no retriever could find it), and scores
every mode through the query API, in process, on the configured Kafka, Chroma and collection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.chroma_client import open_chroma
from evaluation.cases import EvalCase, shared_query_count
from evaluation.feedback_cases import FeedbackCases, cases_from_feedback
from evaluation.results import new_run_id, save_json, settings_summary
from evaluation.runner import MODES, ModeResult, evaluate_modes
from schemas import Settings

if TYPE_CHECKING:
    from query_api.query_embedding import TextEncoder
    from streams.feedback import FeedbackLog

__all__ = ["FeedbackEvaluationReport", "NoFeedbackCases", "indexed_feedback_cases", "run_feedback_evaluation"]

#: Documents asked about per Chroma request when checking which are still indexed.
LOOKUP_BATCH = 200


class NoFeedbackCases(ValueError):
    """The feedback topic holds no confirmed case whose document is indexed."""

    def __init__(self, message: str, counts: dict[str, int]) -> None:
        super().__init__(message)
        self.counts = counts


@dataclass
class FeedbackEvaluationReport:
    run_id: str
    started_at: str
    topic: str
    collection: str
    settings: dict[str, Any]
    counts: dict[str, int]
    shared_query_cases: int
    modes: dict[str, ModeResult]
    unreadable: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def cases(self) -> int:
        return self.counts["cases"]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": "feedback",
            "run_id": self.run_id,
            "started_at": self.started_at,
            "feedback_topic": self.topic,
            "collection": self.collection,
            "settings": self.settings,
            "counts": {**self.counts, "cases_sharing_their_query": self.shared_query_cases},
            "unreadable_records": self.unreadable,
            "modes": {name: result.to_json() for name, result in self.modes.items()},
        }


def run_feedback_evaluation(
    settings: Settings,
    results_dir: Path = Path("bench/results"),
    embedder: TextEncoder | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> FeedbackEvaluationReport:
    """Evaluate every mode on the cases confirmed in ``settings.feedback_topic``; the report is
    also written as ``eval-feedback-<run id>.json`` under ``results_dir``. Raises
    ``NoFeedbackCases`` when there is nothing to evaluate."""
    started_at = datetime.now(UTC)
    run_id = new_run_id(started_at)
    log, selected, cases = _confirmed_cases(settings)
    counts = _counts(selected, cases, len(log.unreadable))
    say(
        f"{counts['feedback']} feedback records in {settings.feedback_topic}: {len(selected.cases)} "
        f"confirmed cases, {counts['not_indexed']} of them naming a document no longer indexed"
    )
    if not cases:
        raise NoFeedbackCases(
            f"no confirmed feedback to evaluate in {settings.feedback_topic!r} "
            f"({counts['feedback']} records: {counts['unconfirmed']} confirm no document, "
            f"{counts['not_indexed']} cases name documents not in {settings.collection!r}); a case "
            "needs correct_doc_id, or a rating of 1 that names a doc_id",
            counts,
        )
    if embedder is None:
        from query_api.query_model import load_query_model

        # The API's own query model, so that the figures are the API's.
        embedder = load_query_model(settings)
    say(f"querying {len(cases)} cases in each mode")
    # The BM25 view is replayed in memory: an index directory from the environment may belong to
    # the running API.
    query_settings = settings.model_copy(update={"lexical_index_dir": None})
    report = FeedbackEvaluationReport(
        run_id=run_id,
        started_at=started_at.isoformat(),
        topic=settings.feedback_topic,
        collection=settings.collection,
        settings=settings_summary(settings),
        counts=counts,
        shared_query_cases=shared_query_count(cases),
        modes=evaluate_modes(query_settings, embedder, cases, MODES),
        unreadable=list(log.unreadable),
    )
    report.path = save_json(report.to_json(), results_dir, f"eval-feedback-{run_id}")
    return report


def indexed_feedback_cases(settings: Settings, tenant: str | None = None) -> list[EvalCase]:
    """The confirmed cases of the feedback topic whose document is still indexed; with
    ``tenant``, only those of feedback given with that tenant's keys."""
    return _confirmed_cases(settings, tenant)[2]


def _confirmed_cases(
    settings: Settings, tenant: str | None = None
) -> tuple[FeedbackLog, FeedbackCases, list[EvalCase]]:
    """The feedback topic as read, the cases it confirms (``tenant``'s only, when given), and
    those of them whose document is still indexed."""
    from streams.feedback import read_feedback

    log = asyncio.run(read_feedback(settings.kafka, settings.feedback_topic))
    selected = cases_from_feedback(event for event in log.events if tenant is None or event.tenant == tenant)
    indexed = asyncio.run(_indexed_doc_ids(settings, {case.relevant_doc_id for case in selected.cases}))
    return log, selected, [case for case in selected.cases if case.relevant_doc_id in indexed]


def _counts(selected: FeedbackCases, cases: Sequence[EvalCase], unreadable: int) -> dict[str, int]:
    return {
        "feedback": selected.feedback,
        "unreadable": unreadable,
        "unconfirmed": selected.unconfirmed,
        "duplicates": selected.duplicates,
        "confirmed_cases": len(selected.cases),
        "not_indexed": len(selected.cases) - len(cases),
        "cases": len(cases),
    }


async def _indexed_doc_ids(settings: Settings, doc_ids: set[str]) -> set[str]:
    """Those of ``doc_ids`` that have at least one chunk in the collection."""

    from engines.chroma import open_collection

    if not doc_ids:
        return set()
    client = await open_chroma(settings)
    collection = await open_collection(client, settings.collection)
    wanted = sorted(doc_ids)
    found: set[str] = set()
    for start in range(0, len(wanted), LOOKUP_BATCH):
        batch = wanted[start : start + LOOKUP_BATCH]
        # Every indexed document has a chunk with index 0: one record per document is enough.
        where: Any = {"$and": [{"doc_id": {"$in": batch}}, {"chunk_index": 0}]}
        result = await collection.get(where=where, include=["metadatas"])
        found.update(str(meta["doc_id"]) for meta in result["metadatas"] or [] if meta)
    return found
