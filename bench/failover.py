"""Failover under load: searches at a steady rate against 2 API replicas on Ray Serve while
documents are ingested, and one part of the system killed with -9 in the middle.

    .venv/bin/python bench/failover.py [--scenarios replica proxy node stage] [--chunks 100000]
        [--rate 25] [--seconds 60] [--kill-at 20] [--ingest-rate 5] [--ingress replicas|proxy]

One stack for every scenario: bench/query.py's Kafka and Chroma, with ``--chunks`` chunks of real
text (Wikipedia lead sections) loaded as the consumers write them. Per scenario, the rest starts
afresh as ``make up`` starts it (``ragstream.stack.LocalStack``): a Ray cluster of two raylets on
this host, the changes stage with its two workers, one consumer actor, and the API as 2 replicas,
listening on the API's port themselves or (``--ingress proxy``) behind Serve's proxies (one per
node, sharing the port), starting from view snapshots once one is written. Then an open loop of
``--rate`` hybrid searches/s (Poisson arrivals; bench/_query_load.py, in a process of its own)
runs for ``--seconds`` while ``--ingest-rate`` documents/s are published, and at ``--kill-at``
seconds one part gets SIGKILL:

- ``replica``: one replica's process; Serve starts another.
- ``proxy`` (with ``--ingress proxy``): the head node's Serve proxy actor; the worker node's proxy
  takes every new connection, and Serve's controller starts another on the head.
- ``node``: the worker raylet and every process of its node (replicas and consumers there are
  started again on the head).
- ``stage``: one of the two changes-stage workers; the other takes its partitions.

The client retries once, 0.2 s later, after a dropped connection, a 502/503/504 or the 500 that
Serve's proxy answers for a request whose replica died: the least an application behind a load
balancer does. Failures of first tries are counted too. Per scenario
it prints the requests, failures without and with the retry, latency over the run and in the 10 s
after the kill, how long until the killed part served again (a replica not seen before answers;
for the stage, events reach docs.changes again), and the longest wait of an event published
after the kill for docs.changes. JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import ray
from aiokafka import AIOKafkaConsumer
from ray import serve
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._query_index import BenchCorpus, cached_embeddings, split_corpus
from bench._query_report import percentiles, save_results
from bench._stack_sampler import StackSampler
from bench.query import Phase, ingest_steadily, preloaded_stack, run_phase
from deploy._process import ManagedProcess
from engines.chunking import Chunker
from ragstream.api_replicas import running_replicas
from ragstream.stack import LocalStack
from schemas import Settings

console = Console(width=None if sys.stdout.isatty() else 130)

SCENARIOS = ("replica", "proxy", "node", "stage")
#: Latency "during the failover" is that of searches sent this long after the kill.
WINDOW_S = 10.0
GOAL_FAILOVER_P99_MS = 200.0
GOAL_BACK_S = 30.0
TAIL_GRACE_S = 10.0


def command_of(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


class Victims:
    """Finds the process each scenario kills, on the running stack."""

    def __init__(self, stack: LocalStack, stage: ManagedProcess) -> None:
        self.stack = stack
        self.stage = stage

    def on_node(self, index: int, prefix: str) -> list[int]:
        node = self.stack.ray().nodes[index]
        return sorted(pid for pid in node.pids() if command_of(pid).startswith(prefix))

    def replicas(self) -> dict[int, list[int]]:
        return {
            index: self.on_node(index, "ray::ServeReplica:") for index in range(self.stack.settings.ray_nodes)
        }

    def kill(self, scenario: str) -> str:
        """SIGKILL the scenario's part; says what was killed."""
        if scenario == "node":
            replicas = self.replicas()
            self.stack.ray().kill_node(1)
            return f"worker node with {len(replicas.get(1, []))} of the replicas"
        if scenario == "replica":
            # The head's replica: each node's proxy routes to a replica on its own node first, so
            # the head proxy's share of the requests feels its loss.
            replicas = self.replicas()
            pid = min(replicas[0] or replicas[1])
        elif scenario == "proxy":
            pid = self.on_node(0, "ray::ProxyActor")[0]
        else:
            workers = children_of(self.stage.pid or 0)
            if len(workers) < 2:
                raise RuntimeError(f"expected two stage workers, found {workers}")
            pid = min(workers)
        command = command_of(pid)
        os.kill(pid, signal.SIGKILL)
        return f"{command.split()[0] if command else '?'} (pid {pid})"


async def until_snapshot(settings: Settings, timeout: float) -> None:
    assert settings.snapshot_dir is not None
    folder = settings.snapshot_dir / settings.chunks_topic
    deadline = time.monotonic() + timeout
    while not any(path.is_dir() and not path.name.startswith(".") for path in folder.glob("*")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no snapshot in {folder} after {timeout:.0f} s")
        await asyncio.sleep(1)


async def replicas_back(since: float, count: int, timeout: float, settle_s: float = 10.0) -> float | None:
    """Seconds from ``since`` until Serve has ``count`` replicas running again after it had
    fewer; 0.0 when it never had fewer within ``settle_s``; None if they are not back within
    ``timeout``."""
    deadline = since + timeout
    seen_fewer = False
    while time.monotonic() < deadline:
        running = await asyncio.to_thread(running_replicas)
        seen_fewer = seen_fewer or running < count
        if seen_fewer and running >= count:
            return time.monotonic() - since
        if not seen_fewer and time.monotonic() - since > settle_s:
            return 0.0
        await asyncio.sleep(0.25)
    return None


class ChangesTail:
    """When each event reaches docs.changes: the stage's output, read from its end as it grows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.arrived: dict[tuple[str, int], float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.changes_topic,
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.monotonic()
                for records in batch.values():
                    for record in records:
                        if record.value is None:
                            continue
                        event = orjson.loads(record.value)
                        self.arrived.setdefault((event["doc_id"], int(event["version"])), now)
        finally:
            await consumer.stop()


def startup_lines(stack: LocalStack, since_wall: float) -> list[str]:
    """What each API replica that became ready after ``since_wall`` (epoch seconds) logged about
    its start-up (query_api.startup_timeline), from the Ray nodes' worker logs."""
    found = []
    for node in stack.ray().nodes:
        for path in node.temp_dir.glob("session_*/logs/worker-*"):
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").splitlines()
                found += [
                    line.strip()
                    for line in lines
                    if "serving: ready" in line and _logged_at(line) >= since_wall
                ]
    # A line may be in a worker's .out and .err files alike.
    return sorted(set(found))


def _logged_at(line: str) -> float:
    """The epoch seconds of a log line's ISO timestamp (UTC), or 0 without one."""
    stamp = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", line)
    if stamp is None:
        return 0.0
    return datetime.fromisoformat(stamp[0]).replace(tzinfo=UTC).timestamp()


def cpu_table(sampler: StackSampler, since: float, until: float) -> list[dict[str, Any]]:
    """Mean CPU cores per part of the stack over [since, until], busiest first."""
    rows = sampler.summary(since, until)
    return sorted(
        ({"part": row["part"], "cpu_cores": row["cpu_cores"]} for row in rows if row["cpu_cores"] >= 0.01),
        key=lambda row: -row["cpu_cores"],
    )


async def run_scenario(
    scenario: str,
    settings: Settings,
    corpus: BenchCorpus,
    args: argparse.Namespace,
    first: int,
    services: dict[str, int],
) -> dict[str, Any]:
    """Start the stack's processes, load it, kill the scenario's part, stop it all again.
    ``first``: where in the ingestion's sequence of revisions this scenario starts; ``services``:
    the broker's and Chroma's pids by name."""
    stack = LocalStack(settings, consumers=1)
    stack.ray().start()
    processes = stack.worker_processes()
    stage, api = processes["changes stage"], processes["API"]
    back: asyncio.Task[float | None] | None = None
    sampling: asyncio.Task[None] | None = None
    try:
        started = time.monotonic()
        for process in processes.values():
            process.start()
        url = stack.api_url
        await asyncio.to_thread(
            api.wait_until,
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
            900,
            "API replicas",
        )
        ready_s = time.monotonic() - started
        console.print(f"{scenario}: 2 replicas serving after {ready_s:.0f} s")
        ray.init(address=stack.ray().address, logging_level=logging.WARNING)
        # Replicas started later (replacements) start from the snapshot the first ones leave.
        await until_snapshot(settings, timeout=300)
        victims = Victims(stack, stage)
        placement = {node: len(pids) for node, pids in victims.replicas().items()}
        roots = services | {
            "changes stage supervisor": stage.pid,
            "driver: ragstream consume": processes["consumers"].pid,
            "driver: ragstream serve": api.pid,
        }
        ray_pids = lambda: set[int]().union(*(node.pids() for node in stack.ray().nodes))  # noqa: E731
        sampler = StackSampler(roots, stage.pid, ray_pids)
        sampling = asyncio.create_task(sampler.run())

        stop, stop_tail, measuring = asyncio.Event(), asyncio.Event(), asyncio.Event()
        published: dict[tuple[str, int], float] = {}
        tail = ChangesTail(settings)
        tailing = asyncio.create_task(tail.run(stop_tail))
        ingest = asyncio.create_task(
            ingest_steadily(settings, corpus.held_out, args.ingest_rate, stop, published, first)
        )
        phase = Phase(scenario, "hybrid", args.clients, args.rate, 3.0, args.seconds, retry_once=True)
        load = asyncio.create_task(run_phase(url, corpus.queries, args, {}, phase, measuring))
        await measuring.wait()
        measured_from = time.monotonic()
        await asyncio.sleep(args.kill_at)
        killed_at, killed_wall = time.monotonic(), time.time()
        killed = await asyncio.to_thread(victims.kill, scenario)
        console.print(f"{scenario}: killed {killed} at {killed_at - measured_from:.1f} s")
        back = asyncio.create_task(replicas_back(killed_at, settings.api_replicas, args.back_timeout))
        result = await load
        replicas_back_s = await back
        stop.set()
        await ingest
        # The last events published get their time to reach docs.changes.
        await asyncio.sleep(TAIL_GRACE_S)
        stop_tail.set()
        await tailing
        measured = report(
            scenario, result, killed, killed_at - measured_from, measured_from, published, tail.arrived
        )
        # Where the 2 cores went while the killed part was replaced (or, if it never was, the
        # failover window).
        until = killed_at + (replicas_back_s or WINDOW_S)
        return measured | {
            "ready_s": ready_s,
            "replicas_per_node": placement,
            "replicas_running_again_s": replicas_back_s,
            "cpu_cores_until_back": cpu_table(sampler, killed_at, max(until, killed_at + 2.0)),
            "cpu_cores_before_kill": cpu_table(sampler, killed_at - 10.0, killed_at),
            "replacement_startup": startup_lines(stack, killed_wall),
        }
    finally:
        if sampling is not None:
            sampler.stop()
            await sampling
        if back is not None:
            back.cancel()
        # Serve keeps its controller's handle past ray.shutdown(); the next scenario's cluster
        # is another one, so the handle must go with this one.
        serve.context._set_global_client(None)
        ray.shutdown()
        for process in reversed(list(processes.values())):
            process.stop()
        stack.ray().stop()


def report(
    scenario: str,
    result: dict[str, Any],
    killed: str,
    kill_s: float,
    measured_from: float,
    published: dict[tuple[str, int], float],
    arrived: dict[tuple[str, int], float],
) -> dict[str, Any]:
    sent = result["sent_at_s"]
    ok = [status == 200 for status in result["statuses"]]
    latencies = [s * 1000 for s, good in zip(result["latencies_s"], ok, strict=True) if good]
    window = [
        s * 1000
        for s, t, good in zip(result["latencies_s"], sent, ok, strict=True)
        if good and kill_s <= t < kill_s + WINDOW_S
    ]
    first_failed = [t for t, status in zip(sent, result["first_statuses"], strict=True) if status != 200]
    # Indexing: how long each event published after the kill waited for docs.changes.
    kill_at = measured_from + kill_s
    waits = [arrived.get(key, float("inf")) - at for key, at in published.items() if at >= kill_at]
    after = sorted(t for t in arrived.values() if t >= kill_at)
    # Until searches answer again at the first try (a part whose loss they never felt: 0).
    unanswered_s = (max(first_failed) - kill_s) if first_failed else 0.0
    return {
        "scenario": scenario,
        "killed": killed,
        "kill_s": kill_s,
        "requests": len(ok),
        "failed_first_try": len(first_failed),
        "failed_after_retry": ok.count(False),
        "first_try_statuses": sorted({s for s in result["first_statuses"] if s != 200}),
        "latency_ms": percentiles(latencies),
        "failover_latency_ms": percentiles(window),
        "unanswered_s": unanswered_s,
        "changes_again_s": after[0] - kill_at if after else None,
        "events_after_kill": len(waits),
        "samples": {key: result[key] for key in ("sent_at_s", "latencies_s", "statuses", "replicas")},
        "longest_wait_for_changes_s": max(waits) if waits else None,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    table = Table(title="failover under load: hybrid searches, 2 replicas on Ray Serve, ingestion running")
    for column in (
        "scenario",
        "killed",
        "requests",
        "failed (1st try)",
        "failed (1 retry)",
        "p50 / p99 ms",
        f"p99 ms, {WINDOW_S:g} s after",
        "searches failing s",
        "2 replicas again s",
        "changes flow again s",
        "event → changes, longest s",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "killed") else "right")
    for row in results:
        wait = row["longest_wait_for_changes_s"]
        table.add_row(
            row["scenario"],
            row["killed"],
            str(row["requests"]),
            f"{row['failed_first_try']} {row['first_try_statuses'] or ''}",
            str(row["failed_after_retry"]),
            f"{row['latency_ms']['p50']:.1f} / {row['latency_ms']['p99']:.1f}",
            f"{row['failover_latency_ms']['p99']:.1f}",
            f"{row['unanswered_s']:.1f}",
            _seconds(row["replicas_running_again_s"]),
            _seconds(row["changes_again_s"]),
            _seconds(wait),
        )
    console.print(table)
    console.print(
        f"goals: 0 failed with one retry; p99 ≤ {GOAL_FAILOVER_P99_MS:g} ms in the failover window; "
        f"a killed replica serving again in ≤ {GOAL_BACK_S:g} s; events flowing again in ≤ 5 s"
    )


def print_where_the_time_went(row: dict[str, Any]) -> None:
    table = Table(title=f"{row['scenario']}: CPU cores per part, 10 s before the kill and until replaced")
    table.add_column("part")
    table.add_column("before the kill", justify="right")
    table.add_column("until replaced", justify="right")
    before = {r["part"]: r["cpu_cores"] for r in row["cpu_cores_before_kill"]}
    after = {r["part"]: r["cpu_cores"] for r in row["cpu_cores_until_back"]}
    for part in sorted(before.keys() | after.keys(), key=lambda p: -after.get(p, 0.0)):
        table.add_row(part, f"{before.get(part, 0.0):.2f}", f"{after.get(part, 0.0):.2f}")
    table.add_row("all", f"{sum(before.values()):.2f}", f"{sum(after.values()):.2f}")
    console.print(table)
    for line in row["replacement_startup"]:
        console.print(f"replica start-up after the kill: {line}")


def _seconds(value: float | None) -> str:
    return "never" if value is None or value == float("inf") else f"{value:.1f}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Settings(
        collection="bench-failover",
        chunk_size=args.chunk_size,
        chunk_overlap=0,
        rerank=False,
        api_replicas=2,
        api_ingress=args.ingress,
        ray_nodes=2,
        lexical_startup_timeout_s=900,
    )
    corpus = split_corpus(Chunker(args.chunk_size, 0), args.chunks, args.held_out)
    vectors, _ = cached_embeddings(base, corpus.chunks, console)
    results = []
    # Ray's sockets live under the state folder, whose path must stay short.
    with tempfile.TemporaryDirectory(prefix="rs-fo-", dir="/tmp") as folder:
        state = Path(folder)
        with preloaded_stack(base, state, corpus, vectors) as stack:
            console.print(f"index of {len(corpus.chunks)} chunks loaded in {stack.load_s:.0f} s")
            services = {"Kafka broker (JVM)": stack.kafka_pid, "Chroma server": stack.chroma_pid}
            for number, scenario in enumerate(args.scenarios):
                settings = stack.settings.model_copy(
                    update={
                        "state_dir": state / scenario[:2],
                        "snapshot_dir": state / "snapshots",
                        "api_port": stack.settings.api_port,
                    }
                )
                # Each scenario its own revisions: the stage drops events it has already seen.
                first = (number + 1) * len(corpus.held_out) * 1000
                results.append(asyncio.run(run_scenario(scenario, settings, corpus, args, first, services)))
                print_table(results[-1:])
                print_where_the_time_went(results[-1])
    return {"args": vars(args), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--rate", type=float, default=25, help="searches/s offered (Poisson arrivals)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60, help="measured seconds per scenario")
    parser.add_argument("--kill-at", type=float, default=20, help="seconds into the measured part")
    parser.add_argument("--ingest-rate", type=float, default=5, help="documents/s published meanwhile")
    parser.add_argument(
        "--back-timeout", type=float, default=120, help="longest wait for the replicas to run again"
    )
    parser.add_argument(
        "--ingress",
        choices=["replicas", "proxy"],
        default=Settings().api_ingress,
        help="how HTTP reaches the replicas (RAGSTREAM_API_INGRESS)",
    )
    args = parser.parse_args()
    if args.ingress != "proxy" and "proxy" in args.scenarios:
        parser.error("the proxy scenario needs --ingress proxy: replicas serving HTTP run no proxy")
    report_ = run(args)
    print_table(report_["results"])
    path = save_results("failover", report_)
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
