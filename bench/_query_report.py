"""The query bench's figures: percentiles per phase, CPU per process, and what each part of a
search costs on its own."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chromadb
from rich.console import Console
from rich.table import Table

from bench._query_index import BenchCorpus
from engines.chroma import open_collection
from engines.embedder import Embedder
from engines.onnx_embedder import OnnxEmbedder
from query_api.query_model import load_query_model
from schemas import Settings

GOAL_P50_MS, GOAL_P99_MS = 15.0, 50.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def save_results(kind: str, report: dict[str, Any]) -> Path:
    """``report`` as JSON under ``bench/results/``, named by ``kind``, the time and a random tag."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    path = RESULTS_DIR / f"{kind}-{run_id}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``values`` (ms), NaN when there are too few to cut."""
    if len(values) < 2:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(values)}


async def component_costs(settings: Settings, queries: list[str]) -> dict[str, Any]:
    """Each part of a search timed alone, one query at a time, from this process (ms percentiles).

    The same query model and threads as the API (and torch's, as the consumers run it, beside
    it), and the same Chroma requests its vector leg makes: ``n_results`` = k in vector mode, the
    candidate depth in hybrid mode.
    """
    embedder = await asyncio.to_thread(load_query_model, settings)
    torch_embedder = await asyncio.to_thread(
        Embedder, settings.model, settings.precision, settings.embed_batch_size, settings.query_threads
    )
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    collection = await open_collection(client, settings.collection)
    depth = settings.hybrid_candidates
    runtime = f"ONNX Runtime {embedder.precision}" if isinstance(embedder, OnnxEmbedder) else "torch"
    embed_name = f"embed the query ({runtime}, as the API)"
    timings: dict[str, list[float]] = {
        embed_name: [],
        f"embed the query (torch {torch_embedder.precision})": [],
        "Chroma query, 10 hits with documents + metadata": [],
        f"Chroma query, {depth} hits with documents + metadata": [],
        f"Chroma query, {depth} hits, distances only": [],
    }
    for query in queries[:5]:  # the first calls pay for lazy initialisation
        embedder.encode([query])
        torch_embedder.encode([query])
    for query in queries:
        started = time.perf_counter()
        torch_embedder.encode([query])
        timings[f"embed the query (torch {torch_embedder.precision})"].append(
            (time.perf_counter() - started) * 1000
        )
        started = time.perf_counter()
        vectors = embedder.encode([query])
        timings[embed_name].append((time.perf_counter() - started) * 1000)
        for name, n_results, include in (
            ("Chroma query, 10 hits with documents + metadata", 10, ["documents", "metadatas", "distances"]),
            (
                f"Chroma query, {depth} hits with documents + metadata",
                depth,
                ["documents", "metadatas", "distances"],
            ),
            (f"Chroma query, {depth} hits, distances only", depth, ["distances"]),
        ):
            started = time.perf_counter()
            await collection.query(query_embeddings=vectors, n_results=n_results, include=include)  # type: ignore[arg-type]
            timings[name].append((time.perf_counter() - started) * 1000)
    return {"queries": len(queries), "ms": {name: percentiles(values) for name, values in timings.items()}}


def summarize(
    args: argparse.Namespace, corpus: BenchCorpus, measured: dict[str, Any], cache_name: str
) -> dict[str, Any]:
    phases = {}
    for name, result in measured["phases"].items():
        ok = [s == 200 for s in result["statuses"]]
        latencies = [value * 1000 for value, good in zip(result["latencies_s"], ok, strict=True) if good]
        handler = [value for value, good in zip(result["took_ms"], ok, strict=True) if good]
        phases[name] = {
            "mode": result["mode"],
            "clients": result["clients"],
            "offered_rps": result["rate"],
            "requests": len(ok),
            "errors": ok.count(False),
            "throughput_rps": len(latencies) / result["seconds"],
            "latency_ms": percentiles(latencies),
            "handler_ms": percentiles(handler),
            "steps_ms": step_percentiles(result.get("server_timing", [])),
            "cpu_cores": result["cpu_cores"],
            "gc": result.get("gc"),
        }
    return {
        "args": vars(args),
        "corpus": {
            "articles": corpus.articles,
            "preloaded_articles": len(corpus.indexed),
            "preloaded_chunks": len(corpus.chunks),
            "held_out_articles": len(corpus.held_out),
            "distinct_queries": len(corpus.queries),
            "embedding_cache": cache_name,
        },
        "load_s": measured["load_s"],
        "ingest": measured["ingest"],
        "phases": phases,
        "components": measured["components"],
    }


def step_percentiles(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Percentiles of each step the API reported in Server-Timing."""
    names = list(dict.fromkeys(name for timing in timings for name in timing))
    return {name: percentiles([timing[name] for timing in timings if name in timing]) for name in names}


def _steps_table(report: dict[str, Any]) -> Table:
    phases = report["phases"]
    names = list(dict.fromkeys(name for phase in phases.values() for name in phase["steps_ms"]))
    table = Table(
        title="inside the API, per step (Server-Timing), p50 / p99 ms; embed and vector "
        "run alongside lexical in hybrid"
    )
    table.add_column("phase", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for phase_name, phase in phases.items():
        cells = []
        for name in names:
            cut = phase["steps_ms"].get(name)
            cells.append(f"{cut['p50']:.1f} / {cut['p99']:.1f}" if cut else "")
        table.add_row(phase_name, *cells)
    return table


def _latency_table(report: dict[str, Any], open_loop: bool) -> Table:
    args, corpus = report["args"], report["corpus"]
    where = (
        f"over {corpus['preloaded_chunks']} chunks, k={args['k']}, ingesting {args['ingest_rate']:g} docs/s"
    )
    if open_loop:
        title = (
            f"/v1/search {where}: latency at an offered load (Poisson arrivals, {args['clients']} clients)"
        )
    else:
        title = f"/v1/search {where}: closed loop (each client sends again as soon as answered)"
    table = Table(title=title)
    columns = ["phase", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("in handler p50 / p99 ms", justify="right")
    if open_loop:
        table.add_column("goal", justify="right")
    for name, phase in report["phases"].items():
        if bool(phase["offered_rps"]) != open_loop:
            continue
        lat, handler = phase["latency_ms"], phase["handler_ms"]
        row = [
            name,
            str(phase["requests"]),
            str(phase["errors"]),
            f"{phase['throughput_rps']:.0f}",
            f"{lat['p50']:.1f}",
            f"{lat['p95']:.1f}",
            f"{lat['p99']:.1f}",
            f"{lat['max']:.0f}",
            f"{handler['p50']:.1f} / {handler['p99']:.1f}",
        ]
        if open_loop:
            row.append("met" if _goal_met(phase) else "missed")
        table.add_row(*row)
    return table


def _goal_met(phase: dict[str, Any]) -> bool:
    lat = phase["latency_ms"]
    return phase["errors"] == 0 and lat["p50"] <= GOAL_P50_MS and lat["p99"] <= GOAL_P99_MS


def _cpu_table(report: dict[str, Any]) -> Table:
    phases = {name: phase for name, phase in report["phases"].items() if "(1 client)" not in name}
    table = Table(title="CPU used during each measured phase, in cores (the machine has 2)")
    table.add_column("process")
    for name in phases:
        table.add_column(name, justify="right")
    processes = list(next(iter(phases.values()))["cpu_cores"]) if phases else []
    named = [p for p in processes if p != "machine"]
    for process in named:
        table.add_row(process, *(f"{phase['cpu_cores'][process]:.2f}" for phase in phases.values()))
    # What the bench did not start: Ray's daemons, and anyone else's work on a shared machine.
    table.add_row(
        "everything else",
        *(
            f"{phase['cpu_cores']['machine'] - sum(phase['cpu_cores'][p] for p in named):.2f}"
            for phase in phases.values()
        ),
    )
    table.add_row("whole machine", *(f"{phase['cpu_cores']['machine']:.2f}" for phase in phases.values()))
    return table


def _gc_table(report: dict[str, Any]) -> Table:
    phases = {name: phase for name, phase in report["phases"].items() if phase.get("gc")}
    table = Table(title="the API's garbage collection during each measured phase (/metrics)")
    table.add_column("")
    for name in phases:
        table.add_column(name, justify="right")
    table.add_row("full collections", *(f"{phase['gc']['full']:.0f}" for phase in phases.values()))
    table.add_row(
        "paused, all generations", *(f"{phase['gc']['seconds'] * 1000:.0f} ms" for phase in phases.values())
    )
    table.add_row("pauses over 100 ms", *(f"{phase['gc']['long']:.0f}" for phase in phases.values()))
    return table


def _component_table(report: dict[str, Any]) -> Table:
    components = report["components"]
    table = Table(title=f"parts of a search alone, one at a time ({components['queries']} queries)")
    for column in ("part", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "part" else "left")
    for name, cuts in components["ms"].items():
        table.add_row(name, f"{cuts['p50']:.1f}", f"{cuts['p95']:.1f}", f"{cuts['p99']:.1f}")
    return table


def print_report(console: Console, report: dict[str, Any]) -> None:
    phases = report["phases"].values()
    console.print(_latency_table(report, open_loop=False))
    if any(phase["offered_rps"] for phase in phases):
        console.print(_latency_table(report, open_loop=True))
    console.print(_steps_table(report))
    console.print(_cpu_table(report))
    console.print(_gc_table(report))
    console.print(_component_table(report))
    ingest = report["ingest"]
    console.print(
        f"ingestion meanwhile: {ingest['documents_published']} documents published, "
        f"{ingest['chunks_embedded']} chunks embedded by the consumer"
    )
    goal = f"p50 ≤ {GOAL_P50_MS:g} ms, p99 ≤ {GOAL_P99_MS:g} ms"
    closed = report["phases"].get("hybrid")
    if closed is not None and closed["throughput_rps"]:
        # Little's law: with every client always waiting, latency = clients / throughput.
        floor = closed["clients"] / closed["throughput_rps"] * 1000
        console.print(
            f"hybrid, closed loop: {closed['throughput_rps']:.0f} requests/s at most; with "
            f"{closed['clients']} clients always waiting, mean latency = clients / req/s ≈ {floor:.0f} ms"
        )
    offered = [p for p in phases if p["mode"] == "hybrid" and p["offered_rps"]]
    if offered:
        met = [p["offered_rps"] for p in offered if _goal_met(p)]
        best = f"up to {max(met):g} requests/s offered" if met else "at none of the rates offered"
        console.print(
            f"goal for hybrid ({goal}) met {best} (rates tried: {[p['offered_rps'] for p in offered]})"
        )
