"""Freshness: how long from publishing a document until a search through the API finds it, while
a search load runs against the same API.

    .venv/bin/python bench/freshness.py [--seconds 30] [--rate 5] [--search-rate 25] [--chunks 100000]
    .venv/bin/python bench/freshness.py --niceness 10 0 --rounds 3   # with and without yielding
    .venv/bin/python bench/freshness.py --chunks 5000 --seconds 5 --rounds 1   # a quick check

Starts its own Kafka broker and Chroma server on free ports and preloads ``--chunks`` chunks of
real text from cached embeddings, as bench/query.py does (chunks of at most 64 characters, so the
corpus reaches 100k); then the changes stage (unless ``--topology events``), the query API as
``ragstream serve`` runs it, and, for each phase, one consumer actor (Ray) at the phase's
``consumer_niceness``. A phase publishes real documents (Wikipedia lead sections held out of the
preload, chunked at the default chunk size as a deployment would) at ``--rate`` per second, and
for each one polls the API every 20 ms from the publish until a search (filtered to that doc_id)
finds it; meanwhile bench/_query_load.py sends ``--search-rate`` hybrid searches per second (Poisson
arrivals, open loop). Phases alternate the ``--niceness`` values, ``--rounds`` times, so that
each variant meets the same machine. The probes are searches too: they alone make the consumer
yield for a while after each publish.

Goals on a developer machine, in the same run: publish → searchable p50 <= 300 ms, p99 <= 1 s;
hybrid search p50 <= 15 ms, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import ray
from rich.console import Console
from rich.table import Table

from schemas.kafka_connection import KafkaConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._query_index import cached_embeddings, split_corpus
from bench._query_report import percentiles, save_results
from bench.query import Phase, api_process, preloaded_stack, run_phase, wait_until_serving
from consumers.actors import ConsumerGroup
from engines.chunking import Chunker
from ragstream.stack import LocalStack
from schemas import DocumentEvent, Settings
from streams.publisher import EventPublisher
from streams.topic_records import read_topic_records

console = Console(width=None if sys.stdout.isatty() else 150)

POLL_INTERVAL_S = 0.02
#: An event not searchable after this long counts as missing.
GIVE_UP_S = 30.0
#: The search load runs this much longer than the publishing, over the last events' wait.
LOAD_TAIL_S = 3.0
#: The preload's chunk size: the corpus holds ~107k chunks of at most 64 characters.
PRELOAD_CHUNK_SIZE = 64


async def searchable_after(
    api: httpx.AsyncClient, publisher: EventPublisher, event: DocumentEvent, mode: str
) -> float | None:
    """Seconds from the publish call until a search finds ``event``; None if it never does.

    Polls ``GET /v1/documents/{id}`` (a metadata lookup) until the document is there, then
    ``/v1/search`` until a search finds it. Polling the search itself every 20 ms would embed the
    query hundreds of times a second and take the CPU this measures away from the pipeline.
    """
    body = {"query": event.content[:200], "k": 1, "mode": mode, "filter": {"doc_id": event.doc_id}}
    started = time.perf_counter()
    await publisher.publish(event)
    while time.perf_counter() - started < GIVE_UP_S:
        response = await api.get(f"/v1/documents/{event.doc_id}")
        if response.status_code == 200:
            break
        if response.status_code != 404:
            response.raise_for_status()
        await asyncio.sleep(POLL_INTERVAL_S)
    while time.perf_counter() - started < GIVE_UP_S:
        response = await api.post("/v1/search", json=body)
        if response.status_code == 503:  # Chroma slow to answer under load: not found yet
            await asyncio.sleep(POLL_INTERVAL_S)
            continue
        response.raise_for_status()
        if response.json()["hits"]:
            return time.perf_counter() - started
        await asyncio.sleep(POLL_INTERVAL_S)
    return None


async def publish_steadily(
    api: httpx.AsyncClient, publisher: EventPublisher, events: list[DocumentEvent], rate: float, mode: str
) -> list[float | None]:
    """Each event's publish → searchable seconds, published at ``rate`` per second."""
    tasks = []
    started = time.perf_counter()
    for index, event in enumerate(events):
        # A steady schedule, not "sleep after each": a slow publish must not lower the rate.
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(searchable_after(api, publisher, event, mode)))
    return list(await asyncio.gather(*tasks))


async def measure_phase(
    settings: Settings,
    url: str,
    events: list[DocumentEvent],
    queries: list[str],
    args: argparse.Namespace,
    pids: dict[str, int],
) -> dict[str, Any]:
    """One phase: the warm-up event, then the search load and the publishing side by side."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as api,
        EventPublisher(settings.kafka, settings.events_topic) as publisher,
    ):
        # Warm-up: the consumer's first write pays for joining the group and lazy initialisation.
        warm = await searchable_after(api, publisher, events[0], args.mode)
        load = None
        if args.search_rate > 0:
            measuring = asyncio.Event()
            phase = Phase(
                "hybrid load", "hybrid", args.clients, args.search_rate, 2.0, args.seconds + LOAD_TAIL_S
            )
            # run_phase reads only ``k`` of the bench's arguments.
            load = asyncio.create_task(
                run_phase(url, queries, argparse.Namespace(k=10), pids, phase, measuring)
            )
            await measuring.wait()
        latencies = await publish_steadily(api, publisher, events[1:], args.rate, args.mode)
        searches = await load if load is not None else None
        indexed_at = {}
        for event in events[1:]:
            response = await api.get(f"/v1/documents/{event.doc_id}")
            if response.status_code == 200:
                indexed_at[event.doc_id] = response.json()["indexed_at"]
    return {"warm_s": warm, "latencies_s": latencies, "searches": searches, "indexed_at": indexed_at}


async def record_times(bootstrap_servers: str, topic: str) -> dict[str, float]:
    """doc_id → unix seconds at which its (last) record was produced to ``topic``."""
    return {
        record.key.decode(): record.timestamp / 1000
        for record in await read_topic_records(KafkaConnection(bootstrap_servers), topic)
        if record.key is not None and record.value is not None
    }


async def hop_breakdown(
    settings: Settings, events: list[DocumentEvent], indexed_at: dict[str, float]
) -> dict[str, list[float]]:
    """Per event, ms spent in each hop: from the Kafka record timestamps and the chunks' indexed_at
    (set when the indexer plans the batch, before embedding)."""
    published = await record_times(settings.bootstrap_servers, settings.events_topic)
    hops: dict[str, list[float]] = {}
    upstream = published
    if settings.consumer_input == "changes":
        emitted = await record_times(settings.bootstrap_servers, settings.changes_topic)
        hops["events → stage output"] = [
            (emitted[e.doc_id] - published[e.doc_id]) * 1000 for e in events if e.doc_id in emitted
        ]
        upstream = emitted
    hops["→ indexer planned it"] = [
        (indexed_at[e.doc_id] - upstream[e.doc_id]) * 1000
        for e in events
        if e.doc_id in indexed_at and e.doc_id in upstream
    ]
    return hops


def phase_events(held_out: list[DocumentEvent], phase: int) -> list[DocumentEvent]:
    """The held-out articles as documents of this phase's own: new doc_ids, so each is new to the
    index (every chunk embedded) and the changes stage does not drop it as already seen."""
    return [event.model_copy(update={"doc_id": f"{event.doc_id}~{phase}"}) for event in held_out]


def run_phases(args: argparse.Namespace, base: Settings, corpus: Any, vectors: Any) -> list[dict[str, Any]]:
    """Start the stack, then each phase with a consumer of its own; returns one summary per phase."""
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="ragstream-freshness-") as state_dir,
        preloaded_stack(base, Path(state_dir), corpus, vectors) as stack,
    ):
        console.print(f"index loaded in {stack.load_s:.0f} s")
        serving = stack.settings
        # The documents published live are chunked as a deployment would chunk them.
        defaults = Settings.model_fields
        indexing = serving.model_copy(
            update={
                "chunk_size": defaults["chunk_size"].default,
                "chunk_overlap": defaults["chunk_overlap"].default,
            }
        )
        api = api_process(serving, Path(state_dir))
        stage = LocalStack(indexing).stage_process()
        try:
            api.start()
            if args.topology == "changes":
                stage.start()
            url = f"http://127.0.0.1:{serving.api_port}"
            wait_until_serving(api, url)
            plan = [(r, n) for r in range(args.rounds) for n in args.niceness]
            for index, (round_, niceness) in enumerate(plan):
                console.print(
                    f"phase {index + 1}/{len(plan)}: round {round_ + 1}, consumer_niceness {niceness}"
                )
                settings = indexing.model_copy(update={"consumer_niceness": niceness})
                events = phase_events(corpus.held_out, index)
                group = ConsumerGroup(settings, 1)
                try:
                    group.start()
                    group.wait_ready()
                    pids = {
                        "query API": api.pid or 0,
                        "consumer": ray.get(group.actors[0].pid.remote()),
                    }
                    start = index * len(corpus.queries) // len(plan)
                    queries = corpus.queries[start:] + corpus.queries[:start]
                    measured = asyncio.run(measure_phase(settings, url, events, queries, args, pids))
                finally:
                    group.stop()
                hops = asyncio.run(hop_breakdown(settings, events[1:], measured["indexed_at"]))
                results.append(summarize_phase(round_, niceness, measured, hops))
                print_phases(results[-1:])
        finally:
            stage.stop()
            api.stop()
    return results


def summarize_phase(
    round_: int, niceness: int, measured: dict[str, Any], hops: dict[str, list[float]]
) -> dict[str, Any]:
    latencies = measured["latencies_s"]
    found = [value * 1000 for value in latencies if value is not None]
    searches = measured["searches"] or {}
    ok = [
        s * 1000
        for s, status in zip(searches.get("latencies_s", []), searches.get("statuses", []), strict=True)
        if status == 200
    ]
    return {
        "round": round_ + 1,
        "niceness": niceness,
        "events": len(latencies),
        "found": len(found),
        "fresh": percentiles(found),
        "searches": len(searches.get("latencies_s", [])),
        "search_errors": len(searches.get("latencies_s", [])) - len(ok),
        "search": percentiles(ok),
        "cpu_cores": searches.get("cpu_cores", {}),
        "hops": {name: percentiles(values) for name, values in hops.items()},
    }


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"  # NaN: too few values


def print_phases(phases: list[dict[str, Any]]) -> None:
    table = Table(title="publish → searchable, and the concurrent hybrid searches, per phase")
    columns = (
        "round",
        "niceness",
        "found",
        "fresh p50",
        "p95",
        "p99",
        "max",
        "searches",
        "search p50",
        "p99",
    )
    for column in (*columns, "→ planned p50/p99", "consumer cores", "API cores"):
        table.add_column(column, justify="right")
    for phase in phases:
        planned = phase["hops"].get("→ indexer planned it", percentiles([]))
        cores = phase["cpu_cores"]
        table.add_row(
            str(phase["round"]),
            str(phase["niceness"]),
            f"{phase['found']}/{phase['events']}",
            *(_ms(phase["fresh"][cut]) for cut in ("p50", "p95", "p99", "max")),
            f"{phase['searches']}"
            + (f" ({phase['search_errors']} failed)" if phase["search_errors"] else ""),
            f"{phase['search']['p50']:.1f}",
            f"{phase['search']['p99']:.1f}",
            f"{_ms(planned['p50'])}/{_ms(planned['p99'])}",
            f"{cores.get('consumer', float('nan')):.2f}",
            f"{cores.get('query API', float('nan')):.2f}",
        )
    console.print(table)


def print_summary(phases: list[dict[str, Any]]) -> None:
    """Median and spread (min–max over the rounds) of each figure, per niceness."""
    table = Table(title="per consumer_niceness: median of the rounds (min–max), ms")
    for column in ("niceness", "rounds", "fresh p50", "fresh p95", "fresh p99", "search p50", "search p99"):
        table.add_column(column, justify="right")
    for niceness in dict.fromkeys(phase["niceness"] for phase in phases):
        mine = [phase for phase in phases if phase["niceness"] == niceness]

        def spread(key: str, cut: str, rows: list[dict[str, Any]] = mine) -> str:
            values = [row[key][cut] for row in rows]
            return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

        table.add_row(
            str(niceness),
            str(len(mine)),
            spread("fresh", "p50"),
            spread("fresh", "p95"),
            spread("fresh", "p99"),
            spread("search", "p50"),
            spread("search", "p99"),
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="publishing seconds per phase")
    parser.add_argument("--rate", type=float, default=5, help="events per second")
    parser.add_argument(
        "--mode", choices=("vector", "lexical", "hybrid"), default="vector", help="the probes'"
    )
    parser.add_argument("--search-rate", type=float, default=25, help="hybrid searches/s meanwhile; 0 = none")
    parser.add_argument("--clients", type=int, default=16, help="connections of the search load")
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the preloaded index")
    parser.add_argument(
        "--niceness", type=int, nargs="+", default=[10, 0], help="consumer_niceness of each variant"
    )
    parser.add_argument("--rounds", type=int, default=3, help="times each variant is measured, interleaved")
    parser.add_argument(
        "--topology",
        choices=("changes", "events"),
        default="changes",
        help="changes: through the changes stage, as deployed; events: consumers read the events",
    )
    args = parser.parse_args()

    count = int(args.seconds * args.rate)
    base = Settings(
        collection="bench-freshness",
        chunk_size=PRELOAD_CHUNK_SIZE,
        chunk_overlap=0,
        consumer_input=args.topology,
        rerank=False,
    )
    corpus = split_corpus(Chunker(base.chunk_size, base.chunk_overlap), args.chunks, held_out=count + 1)
    console.print(
        f"{len(corpus.chunks)} chunks preloaded from {len(corpus.indexed)} articles; "
        f"{len(corpus.held_out)} held out to publish; {len(corpus.queries)} distinct queries"
    )
    vectors, _ = cached_embeddings(base, corpus.chunks, console)
    phases = run_phases(args, base, corpus, vectors)
    console.print(
        f"{args.rate:g} events/s for {args.seconds:g} s per phase (probes: {args.mode}), "
        f"{args.search_rate:g} hybrid searches/s over {len(corpus.chunks)} chunks, via {args.topology}"
    )
    print_phases(phases)
    print_summary(phases)
    path = save_results("freshness", {"args": vars(args), "chunks": len(corpus.chunks), "phases": phases})
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
