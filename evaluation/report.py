"""The evaluation report as rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from evaluation.from_feedback import FeedbackEvaluationReport
from evaluation.run import EvaluationReport
from evaluation.runner import SWEEP_KS, ModeResult

__all__ = ["print_feedback_report", "print_report"]

COLUMNS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")


def print_report(report: EvaluationReport, console: Console) -> None:
    title = (
        f"retrieval: {report.cases} queries over {report.articles} Wikipedia articles, "
        f"chunk size {report.settings['chunk_size']}, k=10 documents"
    )
    console.print(_modes_table(title, report.modes))
    console.print(
        f"{report.shared_query_cases} of {report.cases} cases share their query text with another case "
        "(generic descriptions); MRR is MRR@10"
    )
    console.print(_k_table(report.modes))
    for size, results in report.chunk_sweep.items():
        console.print(_modes_table(f"chunk size {size}", results))
    if report.fusion_sweep:
        fusion = Table(title="fusion sweep (hybrid, reciprocal rank fusion)")
        for column in ("lexical weight", "vector weight", "candidates", "rrf k", *COLUMNS):
            fusion.add_column(column, justify="right")
        for f in report.fusion_sweep:
            fusion.add_row(
                f"{f.lexical_weight:g}",
                f"{f.vector_weight:g}",
                str(f.candidates),
                str(f.rrf_k),
                *(f"{f.metrics[c]:.3f}" for c in COLUMNS),
            )
        console.print(fusion)
        best = report.best_fusion()
        if best is not None:
            console.print(
                f"best hybrid setting: lexical weight {best.lexical_weight:g}, vector weight "
                f"{best.vector_weight:g}, candidates {best.candidates}"
            )
    for metric, check in report.hybrid_checks().items():
        verdict = "[green]yes[/]" if check["default_ok"] else "[red]no[/]"
        line = (
            f"hybrid ≥ max(vector, lexical) on {metric}: {verdict} "
            f"(default {check['hybrid_default']:.3f} vs {check['best_single']:.3f})"
        )
        if "tuned_ok" in check:
            tuned = "[green]yes[/]" if check["tuned_ok"] else "[red]no[/]"
            line += f"; best tuned {check['hybrid_best_tuned']:.3f}: {tuned}"
        console.print(line)
    if report.path is not None:
        console.print(f"saved {report.path}")


def print_feedback_report(report: FeedbackEvaluationReport, console: Console) -> None:
    counts = report.counts
    title = (
        f"retrieval on feedback: {report.cases} confirmed cases from {report.topic}, "
        f"index {report.collection!r}, k=10 documents"
    )
    console.print(_modes_table(title, report.modes))
    console.print(
        f"{counts['feedback']} feedback records → {counts['confirmed_cases']} confirmed (query, document) "
        f"pairs; confirming a pair again: {counts['duplicates']}, confirming nothing: "
        f"{counts['unconfirmed']}, unreadable: {counts['unreadable']}; pairs left out because the "
        f"document is not indexed: {counts['not_indexed']}"
    )
    if report.shared_query_cases:
        console.print(f"{report.shared_query_cases} cases share their query with another case")
    console.print(_k_table(report.modes))
    if report.path is not None:
        console.print(f"saved {report.path}")


def _k_table(results: dict[str, ModeResult]) -> Table:
    table = Table(title="k sweep: recall@k per mode")
    table.add_column("mode")
    for k in SWEEP_KS:
        table.add_column(f"@{k}", justify="right")
    for name, result in results.items():
        if result.available:
            table.add_row(name, *(f"{result.recall_at_k[k]:.3f}" for k in SWEEP_KS))
    return table


def _modes_table(title: str, results: dict[str, ModeResult]) -> Table:
    table = Table(title=title)
    table.add_column("mode")
    for column in COLUMNS:
        table.add_column("MRR@10" if column == "mrr" else column, justify="right")
    table.add_column("seconds", justify="right")
    for name, result in results.items():
        if result.available:
            table.add_row(name, *(f"{result.metrics[c]:.3f}" for c in COLUMNS), f"{result.seconds:.0f}")
        else:
            table.add_row(name, *(["n/a"] * len(COLUMNS)), "-")
    unavailable = [f"{name}: not available, {r.reason}" for name, r in results.items() if not r.available]
    if unavailable:
        table.caption = "; ".join(unavailable)
    return table
