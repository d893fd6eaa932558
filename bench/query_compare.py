"""Query latency of several versions of the API, side by side, on one stack and in one run.

    .venv/bin/python bench/query_compare.py REV [REV ...] [--rounds 3] [--rates 25 50]
    .venv/bin/python bench/query_compare.py HEAD~1 .     # the last commit against the working tree
    .venv/bin/python bench/query_compare.py . .@2        # one uvicorn process against 2 Serve replicas

A version is a revision, or ``REV@N``: that revision's API as N replicas on Ray Serve
(``ragstream serve --replicas N``, on a local Ray the API process starts), instead of one uvicorn
process. ``+NAME=VALUE`` after it sets a variable in the API's environment (e.g.
``.@2+RAGSTREAM_API_INGRESS=proxy``: the replicas behind Serve's HTTP proxy; ``RAY_SERVE_*``
variables ``ragstream serve`` hands on to Serve's processes).

Latency on a shared 2-core machine moves more between runs, even between phases of one run, than
most changes move it. So this starts the stack of ``bench/query.py`` once (Kafka, Chroma, 100k
real chunks preloaded, a consumer ingesting 2 docs/s throughout) and then runs the API of each
version in turn, in rounds: A B A B ..., each API started afresh from that version's tree (a
temporary git worktree; ``.`` is the working tree as it is), with the same phases: one client
alone, then hybrid searches at each offered rate (Poisson arrivals over 32 clients). Whatever the
machine does meanwhile falls on every version alike, and the rounds show how much a figure moves
by itself. Prints p50 / p95 / p99 per version, phase and round, then each version's median of
them and its Server-Timing steps; saves it all as JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._query_index import BenchCorpus, cached_embeddings, split_corpus
from bench._query_report import GOAL_P50_MS, GOAL_P99_MS, percentiles, save_results, step_percentiles
from bench.query import Phase, api_process, ingest_steadily, preloaded_stack, run_phase, wait_until_serving
from consumers.actors import ConsumerGroup
from engines.chunking import Chunker
from schemas import Settings

console = Console(width=None if sys.stdout.isatty() else 130)
REPO = Path(__file__).resolve().parents[1]


def replicas_of(versions: list[str]) -> dict[str, int]:
    """``REV@N`` → N API replicas on Ray Serve; a bare ``REV`` → 0, one uvicorn process."""
    counts = {}
    for version in versions:
        replicas = version.split("+")[0].partition("@")[2]
        counts[version] = int(replicas) if replicas else 0
    return counts


def environments_of(versions: list[str]) -> dict[str, dict[str, str]]:
    """``REV…+NAME=VALUE+…`` → the variables to set in that version's API process."""
    environments = {}
    for version in versions:
        pairs = [part.partition("=") for part in version.split("+")[1:]]
        environments[version] = {name: value for name, _, value in pairs}
    return environments


def checkouts(versions: list[str], folder: Path) -> dict[str, Path]:
    """Each version's tree: ``.`` is the working tree, any other revision a worktree under
    ``folder``; a version ``REV@N`` is named with its replicas and shares REV's tree."""
    trees: dict[str, Path] = {}
    made: dict[str, Path] = {}
    for version in versions:
        served, *variables = version.split("+")
        revision, _, replicas = served.partition("@")
        suffix = f" @ {replicas} Serve replicas" if replicas else ""
        suffix += "".join(f" {variable}" for variable in variables)
        if revision == ".":
            trees[f"working tree{suffix}"] = REPO
            continue
        commit = subprocess.run(
            ["git", "rev-parse", "--short", revision], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        tree = folder / commit
        if commit not in made:
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), commit],
                cwd=REPO,
                capture_output=True,
                check=True,
            )
            made[commit] = tree
        name = f"{revision} ({commit})" if revision != commit else commit
        trees[name + suffix] = tree
    return trees


def phases(args: argparse.Namespace) -> list[Phase]:
    alone = Phase("1 client", "hybrid", 1, 0.0, 1.0, args.single_seconds)
    rated = [Phase(f"{rate:g}/s", "hybrid", args.clients, rate, 3.0, args.seconds) for rate in args.rates]
    return [alone, *rated]


async def measure_versions(
    settings: Settings,
    state: Path,
    trees: dict[str, Path],
    replicas: dict[str, int],
    environments: dict[str, dict[str, str]],
    corpus: BenchCorpus,
    args: argparse.Namespace,
    pids: dict[str, int],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """version → phase → one result per round."""
    queries = corpus.queries
    results: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in trees}
    stop = asyncio.Event()
    ingest = asyncio.create_task(ingest_steadily(settings, corpus.held_out, args.ingest_rate, stop))
    url = f"http://127.0.0.1:{settings.api_port}"
    start = 0
    try:
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                api = api_process(settings, state, replicas[name], environments[name])
                api.cwd = tree  # its code: ``python -m ragstream`` imports from the working directory
                api.start()
                try:
                    await asyncio.to_thread(wait_until_serving, api, url)
                    for phase in phases(args):
                        # Every phase its own stretch of the queries: none meets another's first.
                        start = (start + 997) % len(queries)
                        ordered = queries[start:] + queries[:start]
                        measured = pids | {"query API": api.pid or 0}
                        result = await run_phase(url, ordered, args, measured, phase)
                        summary = summarize(result)
                        results[name].setdefault(phase.name, []).append(summary)
                        cut = summary["latency_ms"]
                        console.print(
                            f"round {round_ + 1} · {name} · {phase.name}: "
                            f"p50 {cut['p50']:.1f}  p95 {cut['p95']:.1f}  p99 {cut['p99']:.1f} ms"
                        )
                finally:
                    api.stop()
                    # Serve's processes may outlive ``ragstream serve`` by seconds: the next version
                    # must not be answered by this one's while its own replicas still start.
                    await asyncio.to_thread(until_nothing_listens, settings.api_port)
    finally:
        stop.set()
        await ingest
    return results


def until_nothing_listens(port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} still taken {timeout_s:.0f} s after the API stopped")
        time.sleep(0.2)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    ok = [status == 200 for status in result["statuses"]]
    latencies = [value * 1000 for value, good in zip(result["latencies_s"], ok, strict=True) if good]
    return {
        "requests": len(ok),
        "errors": ok.count(False),
        "latency_ms": percentiles(latencies),
        "steps_ms": step_percentiles(result.get("server_timing", [])),
        "cpu_cores": result["cpu_cores"],
    }


def print_tables(results: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    table = Table(
        title="hybrid /v1/search latency per version, ms: each round p50 / p95 / p99, then the median"
    )
    table.add_column("version")
    table.add_column("phase", justify="right")
    rounds = max(len(runs) for phases in results.values() for runs in phases.values())
    for round_ in range(rounds):
        table.add_column(f"round {round_ + 1}", justify="right")
    table.add_column("median", justify="right")
    table.add_column("goal", justify="right")
    for name, by_phase in results.items():
        for phase, runs in by_phase.items():
            cells = [_cut(run["latency_ms"]) for run in runs]
            median = _median([run["latency_ms"] for run in runs])
            met = median["p50"] <= GOAL_P50_MS and median["p99"] <= GOAL_P99_MS
            goal = "" if phase == "1 client" else "met" if met else "missed"
            table.add_row(name, phase, *cells, *[""] * (rounds - len(runs)), _cut(median), goal)
    console.print(table)
    steps = Table(title="inside the API (Server-Timing), median over rounds of p50 / p99, ms")
    runs_of = [run for by_phase in results.values() for runs in by_phase.values() for run in runs]
    names = list(dict.fromkeys(step for run in runs_of for step in run["steps_ms"]))
    steps.add_column("version")
    steps.add_column("phase", justify="right")
    for step in names:
        steps.add_column(step, justify="right")
    for name, by_phase in results.items():
        for phase, runs in by_phase.items():
            cells = []
            for step in names:
                cuts = [run["steps_ms"][step] for run in runs if step in run["steps_ms"]]
                middle = _median(cuts) if cuts else None
                cells.append(f"{middle['p50']:.1f} / {middle['p99']:.1f}" if middle else "")
            steps.add_row(name, phase, *cells)
    console.print(steps)


def _median(cuts: list[dict[str, float]]) -> dict[str, float]:
    """Each percentile's median over rounds."""
    return {q: statistics.median(cut[q] for cut in cuts) for q in ("p50", "p95", "p99")}


def _cut(cut: dict[str, float]) -> str:
    return f"{cut['p50']:.1f} / {cut['p95']:.1f} / {cut['p99']:.1f}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Settings(
        collection="bench-query",
        chunk_size=args.chunk_size,
        chunk_overlap=0,
        consumer_niceness=10,
        rerank=False,
        consumer_input="events",
    )
    corpus = split_corpus(Chunker(args.chunk_size, 0), args.chunks, args.held_out)
    vectors, _ = cached_embeddings(base, corpus.chunks, console)
    with tempfile.TemporaryDirectory(prefix="ragstream-compare-") as folder:
        state = Path(folder)
        trees = checkouts(args.revisions, state / "trees")
        replicas = dict(zip(trees, replicas_of(args.revisions).values(), strict=True))
        environments = dict(zip(trees, environments_of(args.revisions).values(), strict=True))
        try:
            with preloaded_stack(base, state, corpus, vectors) as stack:
                console.print(f"index loaded in {stack.load_s:.0f} s; versions: {', '.join(trees)}")
                group = ConsumerGroup(stack.settings, 1)
                try:
                    group.start()
                    group.wait_ready()
                    pids = {
                        "Chroma": stack.chroma_pid,
                        "Kafka": stack.kafka_pid,
                        "consumer 0": ray.get(group.actors[0].pid.remote()),
                    }
                    measured = measure_versions(
                        stack.settings, state, trees, replicas, environments, corpus, args, pids
                    )
                    results = asyncio.run(measured)
                finally:
                    group.stop()
        finally:
            for tree in trees.values():
                if tree != REPO and tree.exists():
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    return {
        "args": vars(args),
        "versions": {name: str(tree) for name, tree in trees.items()},
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "revisions",
        nargs="+",
        help="git revisions to compare; . = the working tree; REV@N = REV's API as N Serve replicas; "
        "+NAME=VALUE sets a variable in that API's environment",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rates", type=float, nargs="+", default=[25, 50], help="offered requests/s")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds per rate")
    parser.add_argument("--single-seconds", type=float, default=10, help="measured seconds of one client")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--ingest-rate", type=float, default=2, help="documents/s ingested meanwhile")
    args = parser.parse_args()
    report = run(args)
    print_tables(report["results"])
    path = save_results("query-compare", report)
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
