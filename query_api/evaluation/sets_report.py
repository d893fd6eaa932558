"""The several-set evaluation as rich tables: one per set, then the default mode's checks."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from query_api.evaluation.sets import DEFAULT_MODE, TOLERANCE, SetResult, SetsReport

__all__ = ["print_sets_report"]

COLUMNS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")
#: Short enough that the table fits a terminal of 80 columns.
HEADERS = {"recall@1": "R@1", "recall@5": "R@5", "recall@10": "R@10", "mrr": "MRR@10", "ndcg@10": "nDCG@10"}


def print_sets_report(report: SetsReport, console: Console) -> None:
    for result in report.sets.values():
        console.print(_set_table(result, report.settings["chunk_size"]))
    console.print(_checks_table(report))
    if report.path is not None:
        console.print(f"saved {report.path}")
    for result in report.sets.values():
        if result.candidates_path is not None:
            console.print(f"candidates of {result.name}: {result.candidates_path}")


def _set_table(result: SetResult, chunk_size: int) -> Table:
    table = Table(
        title=f"{result.name}: {result.cases} queries over {result.documents} documents, "
        f"chunk size {chunk_size}, hits counted per document"
    )
    table.add_column("mode", no_wrap=True)
    for column in COLUMNS:
        table.add_column(HEADERS[column], justify="right")
    for column in ("p50", "p95"):
        table.add_column(column, justify="right")
    for name, mode in result.modes.items():
        label = f"{name} (default)" if name == DEFAULT_MODE else name
        if mode.available:
            table.add_row(
                label,
                *(f"{mode.metrics[c]:.3f}" for c in COLUMNS),
                f"{mode.latency_ms['p50']:.1f}",
                f"{mode.latency_ms['p95']:.1f}",
            )
        else:
            table.add_row(label, *(["n/a"] * (len(COLUMNS) + 2)))
    unavailable = [
        f"{name}: not available, {mode.reason}" for name, mode in result.modes.items() if not mode.available
    ]
    table.caption = "; ".join(
        ["p50, p95: the server's took_ms in ms for k=100, 4 searches in flight", *unavailable]
    )
    return table


def _checks_table(report: SetsReport) -> Table:
    table = Table(title=f"does {DEFAULT_MODE} (default) reach max(vector, lexical) − {TOLERANCE}?")
    table.add_column("set")
    table.add_column("metric")
    for column in ("best single", DEFAULT_MODE, "reached"):
        table.add_column(column, justify="right")
    for result in report.sets.values():
        for metric, check in result.checks().items():
            verdict = "[green]yes[/]" if check["ok"] else "[red]no[/]"
            table.add_row(
                result.name, metric, f"{check['best_single']:.3f}", f"{check['default']:.3f}", verdict
            )
    return table
