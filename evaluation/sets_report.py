"""The several-set evaluation as rich tables (one per set, then the default mode's checks), or as
the Markdown page the docs keep (``ragstream eval --beir … --markdown PATH``)."""

from __future__ import annotations

import statistics
from datetime import datetime

from rich.console import Console
from rich.table import Table

from evaluation.runner import RETRIEVER_MODES
from evaluation.sets import DEFAULT_MODE, SIGNIFICANCE, TOLERANCE, SetResult, SetsReport

__all__ = ["print_sets_report", "sets_markdown"]

COLUMNS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")
#: Short enough that the table fits a terminal of 80 columns.
HEADERS = {"recall@1": "R@1", "recall@5": "R@5", "recall@10": "R@10", "mrr": "MRR@10", "ndcg@10": "nDCG@10"}
SIGNIFICANCE_NOTE = (
    f"*: differs from {DEFAULT_MODE} (default) by a paired test over the queries "
    f"(Fisher's randomisation, p < {SIGNIFICANCE})"
)


def print_sets_report(report: SetsReport, console: Console) -> None:
    for result in report.sets.values():
        console.print(_set_table(result, report.settings["chunk_size"]))
    console.print(_checks_table(report))
    mean = _mean_check(report)
    if mean:
        console.print(mean)
    if report.path is not None:
        console.print(f"saved {report.path}")
    for result in report.sets.values():
        if result.candidates_path is not None:
            console.print(f"candidates of {result.name}: {result.candidates_path}")


def _label(name: str) -> str:
    return f"{name} (default)" if name == DEFAULT_MODE else name


def _cell(result: SetResult, mode: str, metric: str) -> str:
    """A mode's value, starred where it differs significantly from the default mode's."""
    value = f"{result.modes[mode].metrics[metric]:.3f}"
    if mode != DEFAULT_MODE and result.significant(mode, DEFAULT_MODE, metric):
        return value + "*"
    return value


def _set_title(result: SetResult, chunk_size: int) -> str:
    return (
        f"{result.name}: {result.cases} queries over {result.documents} documents, "
        f"chunk size {chunk_size}, hits counted per document"
    )


def _set_table(result: SetResult, chunk_size: int) -> Table:
    table = Table(title=_set_title(result, chunk_size))
    table.add_column("mode", no_wrap=True)
    for column in COLUMNS:
        table.add_column(HEADERS[column], justify="right")
    for column in ("p50", "p95"):
        table.add_column(column, justify="right")
    for name, mode in result.modes.items():
        if mode.available:
            table.add_row(
                _label(name),
                *(_cell(result, name, c) for c in COLUMNS),
                f"{mode.latency_ms['p50']:.1f}",
                f"{mode.latency_ms['p95']:.1f}",
            )
        else:
            table.add_row(_label(name), *(["n/a"] * (len(COLUMNS) + 2)))
    unavailable = [
        f"{name}: not available, {mode.reason}" for name, mode in result.modes.items() if not mode.available
    ]
    table.caption = "; ".join(
        [
            "p50, p95: the server's took_ms in ms for k=100, 4 searches in flight",
            SIGNIFICANCE_NOTE,
            *unavailable,
        ]
    )
    return table


def _best_single(result: SetResult, metric: str) -> str:
    return max(RETRIEVER_MODES, key=lambda name: result.modes[name].metrics[metric])


def _check_rows(report: SetsReport) -> list[tuple[str, str, str, str, str, bool]]:
    """(set, metric, best single with its value, default's value, p-value between them, reached)."""
    rows = []
    for result in report.sets.values():
        for metric, check in result.checks().items():
            best = _best_single(result, metric)
            pair = result.significance.get(f"{DEFAULT_MODE} vs {best}", {}).get(metric)
            p_value = f"{pair['p_value']:.3f}" if pair else "n/a"
            rows.append(
                (
                    result.name,
                    metric,
                    f"{best} {check['best_single']:.3f}",
                    f"{check['default']:.3f}",
                    p_value,
                    bool(check["ok"]),
                )
            )
    return rows


def _checks_table(report: SetsReport) -> Table:
    table = Table(title=f"does {DEFAULT_MODE} (default) reach max(vector, lexical) − {TOLERANCE}?")
    table.add_column("set")
    table.add_column("metric")
    for column in ("best single", DEFAULT_MODE, "p", "reached"):
        table.add_column(column, justify="right")
    for set_name, metric, best, default, p_value, ok in _check_rows(report):
        table.add_row(set_name, metric, best, default, p_value, "[green]yes[/]" if ok else "[red]no[/]")
    table.caption = "p: paired test between the default and the better single retriever"
    return table


def _mean_check(report: SetsReport) -> str | None:
    """The default's mean nDCG@10 over the sets against the better single retriever's mean."""
    if len(report.sets) < 2:
        return None
    means = {
        name: statistics.fmean(result.modes[name].metrics["ndcg@10"] for result in report.sets.values())
        for name in (*RETRIEVER_MODES, DEFAULT_MODE)
    }
    best = max(RETRIEVER_MODES, key=lambda name: means[name])
    return (
        f"mean nDCG@10 over {len(report.sets)} sets: {DEFAULT_MODE} {means[DEFAULT_MODE]:.3f}, "
        f"{best} (the better single) {means[best]:.3f}, difference {means[DEFAULT_MODE] - means[best]:+.3f}"
    )


def sets_markdown(report: SetsReport, command: str) -> str:
    """The report as a Markdown page: how it was made, one table per set, then the checks."""
    settings = report.settings
    started = datetime.fromisoformat(report.started_at)
    fusion = settings.get("hybrid_fusion", "rrf")
    fusion_text = (
        f"convex, vector prior {settings['hybrid_vector_prior']:g}"
        if fusion == "convex"
        else f"RRF k {settings['rrf_k']}, weights vector {settings['hybrid_vector_weight']:g} "
        f"lexical {settings['hybrid_lexical_weight']:g}"
    )
    lines = [
        "# Retrieval quality",
        "",
        "<!-- Written by the command below; edit the command, not this page. -->",
        "",
        f"Measured {started:%Y-%m-%d} (run `{report.run_id}`) by",
        "",
        f"    {command}",
        "",
        f"Model {settings['model']}, chunk size {settings['chunk_size']}, each retriever "
        f"{settings['hybrid_candidates']} candidates deep, hybrid fusion: {fusion_text}. Each set is "
        "published through the pipeline and searched through `POST /v1/search`; hits are counted per "
        f"document. {SIGNIFICANCE_NOTE}.",
        "",
    ]
    for result in report.sets.values():
        lines += [f"## {_set_title(result, settings['chunk_size'])}", ""]
        lines.append("| mode | " + " | ".join(HEADERS[c] for c in COLUMNS) + " | p50 ms | p95 ms |")
        lines.append("| --- |" + " ---: |" * (len(COLUMNS) + 2))
        for name, mode in result.modes.items():
            if mode.available:
                cells = [_cell(result, name, c) for c in COLUMNS]
                latency = [f"{mode.latency_ms['p50']:.1f}", f"{mode.latency_ms['p95']:.1f}"]
                lines.append(f"| {_label(name)} | " + " | ".join(cells + latency) + " |")
            else:
                lines.append(f"| {_label(name)} | n/a: {mode.reason} |" + " |" * (len(COLUMNS) + 1))
        lines.append("")
    lines += [
        f"## Does {DEFAULT_MODE} (default) reach max(vector, lexical) − {TOLERANCE}?",
        "",
        "| set | metric | best single | default | p | reached |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for set_name, metric, best, default, p_value, ok in _check_rows(report):
        lines.append(f"| {set_name} | {metric} | {best} | {default} | {p_value} | {'yes' if ok else 'no'} |")
    mean = _mean_check(report)
    if mean:
        lines += ["", mean[0].upper() + mean[1:] + "."]
    return "\n".join(lines) + "\n"
