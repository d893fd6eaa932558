"""``ragstream tune``: choose hybrid search's fusion for this deployment from judged queries, and
publish it to the control topic that every API replica follows (versioned, with rollback).

Judged queries come from the confirmed feedback (the default) or from a candidates file that
``ragstream eval`` wrote for a set. The choice and the refusal are ``evaluation.tuning``'s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from schemas import Settings
from schemas.search_tuning import EVERY_TENANT, TunedFusion, tuning_key

if TYPE_CHECKING:
    from evaluation.tuning import JudgedCandidates, TuningResult

console = Console()


def tune(
    candidates: Annotated[
        Path | None,
        typer.Option(
            help="judged queries from a candidates file of `ragstream eval` "
            "(bench/results/eval-candidates-*.json.gz); default: the confirmed feedback",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="tune this tenant's searches (from its own feedback); default: every tenant's"),
    ] = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="publish the tuned prior; every API replica uses it at once")
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="go back to the version before the published one")
    ] = False,
    show: Annotated[bool, typer.Option("--show", help="show what is published, and exit")] = False,
) -> None:
    """Choose hybrid search's vector prior from judged queries: show it against the default on
    held-out queries, and with --publish make every API replica use it (refused if worse)."""
    from streams.control import read_control_state

    settings = Settings()
    if show or rollback:
        tuned = asyncio.run(read_control_state(settings)).tuned
        if show:
            _show(tuned, settings)
        else:
            _rollback(settings, tenant, tuned.get(tenant or EVERY_TENANT))
        return
    if settings.hybrid_fusion != "convex":
        _fail("tuning sets the convex fusion's vector prior; RAGSTREAM_HYBRID_FUSION is rrf")
    result, source = _tuned(settings, candidates, tenant)
    _print_result(result)
    if result.worse_than_default:
        _fail(
            f"refused: on held-out queries the tuned prior scores {result.tuned_ndcg:.4f} nDCG@10, "
            f"the default {result.default_ndcg:.4f}; nothing was published"
        )
    if not publish:
        console.print("not published: run again with --publish to make every replica use it")
        return
    # Read just before writing: the new version follows whatever is published now.
    current = asyncio.run(read_control_state(settings)).tuned.get(tenant or EVERY_TENANT)
    record = TunedFusion(
        version=1,
        vector_prior=result.prior,
        tenant=tenant,
        tuned_at=time.time(),
        source=source,
        held_out_queries=result.held_out_queries,
        default_ndcg=result.default_ndcg,
        tuned_ndcg=result.tuned_ndcg,
    ).replacing(current)
    _publish(settings, tenant, record)
    prior = record.vector_prior
    console.print(f"[green]published[/] version {record.version}: vector prior {prior} for {_scope(tenant)}")


def _tuned(settings: Settings, candidates: Path | None, tenant: str | None) -> tuple[TuningResult, str]:
    from evaluation.tuning import TooFewQueries, tune_vector_prior

    queries, source = _judged(settings, candidates, tenant)
    console.print(f"{len(queries)} judged queries from {source}")
    try:
        return tune_vector_prior(queries, settings.hybrid_vector_prior), source
    except TooFewQueries as exc:
        _fail(str(exc))


def _judged(
    settings: Settings, candidates: Path | None, tenant: str | None
) -> tuple[list[JudgedCandidates], str]:
    from evaluation.candidates import load_candidates
    from evaluation.from_feedback import indexed_feedback_cases
    from evaluation.runner import MODES, RETRIEVER_MODES, evaluate_modes
    from evaluation.tuning import JudgedCandidates

    if candidates is not None:
        dump = load_candidates(candidates)
        queries = [
            JudgedCandidates(q.query_id or q.query, q.relevance, q.hits["vector"], q.hits["lexical"])
            for q in dump.queries
        ]
        return queries, f"candidates {candidates.name} ({dump.name})"
    from query_api.query_model import load_query_model

    cases = indexed_feedback_cases(settings, tenant)
    if not cases:
        _fail(f"no confirmed feedback on indexed documents in {settings.feedback_topic}")
    retrievers = [mode for mode in MODES if mode.name in RETRIEVER_MODES]
    # The BM25 view is replayed in memory: an index directory from the environment may be the API's.
    query_settings = settings.model_copy(update={"lexical_index_dir": None})
    found = evaluate_modes(query_settings, load_query_model(settings), cases, retrievers)
    queries = [
        JudgedCandidates(case.query_id or case.query, case.relevance, vector, lexical)
        for case, vector, lexical in zip(cases, found["vector"].hits, found["lexical"].hits, strict=True)
    ]
    return queries, "feedback"


def _rollback(settings: Settings, tenant: str | None, current: TunedFusion | None) -> None:
    if current is None:
        _fail(f"nothing is published for {_scope(tenant)}: searches use RAGSTREAM_HYBRID_VECTOR_PRIOR")
    before = current.rolled_back()
    _publish(settings, tenant, before)
    if before is None:
        console.print(
            f"rolled back version {current.version}: {_scope(tenant)} uses the configured prior again"
        )
    else:
        console.print(
            f"rolled back version {current.version}: {_scope(tenant)} uses version {before.version} "
            f"(vector prior {before.vector_prior}) again"
        )


def _publish(settings: Settings, tenant: str | None, record: TunedFusion | None) -> None:
    from streams.control import publish_control
    from streams.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    asyncio.run(publish_control(settings, [(tuning_key(tenant), record.to_json() if record else None)]))


def _print_result(result: TuningResult) -> None:
    table = Table(title="nDCG@10 of hybrid search by vector prior")
    table.add_column("vector prior", justify="right")
    table.add_column("nDCG@10", justify="right")
    shown = sorted(result.by_prior, key=lambda prior: -result.by_prior[prior])[:5]
    for prior in sorted({*shown, result.default_prior, result.prior}):
        marks = [
            word
            for word, same in (("default", result.default_prior), ("tuned", result.prior))
            if same == prior
        ]
        table.add_row(f"{prior:.2f} {' '.join(marks)}", f"{result.by_prior[prior]:.4f}")
    console.print(table)
    console.print(
        f"held out ({result.held_out_queries} queries, 5-fold): default {result.default_ndcg:.4f}, "
        f"tuned {result.tuned_ndcg:.4f} nDCG@10"
    )


def _show(tuned: dict[str, TunedFusion], settings: Settings) -> None:
    if not tuned:
        console.print(f"nothing published: every search uses vector prior {settings.hybrid_vector_prior}")
        return
    table = Table(title="published fusion parameters")
    for column in (
        "scope",
        "version",
        "vector prior",
        "held-out nDCG@10 default → tuned",
        "source",
        "tuned at",
    ):
        table.add_column(column)
    for scope, record in sorted(tuned.items()):
        table.add_row(
            "every tenant" if scope == EVERY_TENANT else scope,
            str(record.version),
            f"{record.vector_prior:.2f}",
            f"{record.default_ndcg:.4f} → {record.tuned_ndcg:.4f} ({record.held_out_queries} queries)",
            record.source,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(record.tuned_at)),
        )
    console.print(table)


def _scope(tenant: str | None) -> str:
    return f"tenant {tenant!r}" if tenant else "every tenant"


def _fail(message: str) -> NoReturn:
    console.print(f"[red]{message}[/]")
    raise typer.Exit(1)
