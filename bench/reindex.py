"""Reindex: how fast a new generation is built beside the serving one, and how fresh live events
stay meanwhile.

    .venv/bin/python bench/reindex.py [--articles 2000] [--rounds 2] [--chunk-size 1100] [--rate 5]
    .venv/bin/python bench/reindex.py --articles 200 --rounds 1   # a quick check
    .venv/bin/python bench/reindex.py --shares --live-alone 20      # where the cores go

Each round starts its own Kafka broker and Chroma server on free ports, then the system as
``make up`` runs it, each part a process of its own: the changes stage (``ragstream streams``),
the consumers (``ragstream consume --consumers 1``: one consumer actor per generation, on a local
Ray) and the query API (``ragstream serve``, one uvicorn process). Then, one after the other:

  1. first ingest: ``--articles`` Wikipedia lead sections (the ingest bench's corpus) at the
     default chunking, timed from the first publish until every hop has committed every event;
  2. rebuild: a reindex to ``--chunk-size`` (``ragstream.reindex``, as ``ragstream reindex
     --no-switch`` writes it), timed from writing the generation's record until its consumer
     group has committed every change that was in the changes topic then. Meanwhile new articles
     are published at ``--rate`` per second, and each one's freshness is taken as
     bench/freshness.py takes it: from the publish until a search through the API (filtered to
     the document) finds it in the serving generation.
  3. switch: as ``ragstream reindex switch`` does it (the new group's lag 0, the coverage check,
     the API replica reporting the generation ready), then until the replica serves it; seconds.

chunks/s = the corpus's chunks at the pass's chunking (counted by the same chunker) ÷ the pass's
seconds. The rebuild's seconds start when its consumer group first has a member: before, the
consumers' process starts the generation's actor and loads its model, which the table gives as
the group's start (the first ingest's consumers started before its clock, with a warm-up event).
The default rebuild chunking (1,100 characters, overlap 100) costs the model as much per
chunk as the first ingest's 1,000 (both near all-MiniLM-L6-v2's 256-token limit), so their
chunks/s compare; the goal is rebuild ÷ first ingest ≥ 0.9 in every round, with the rebuild at
``reindex_niceness`` beside the live events. Rounds repeat the whole sequence on fresh services;
the table gives each round, then the median and min–max. Saved as JSON under ``bench/results/``.

``--shares`` also reads, every second, each process's CPU time from /proc, and gives the mean cores
each part of the stack used in each pass (each consumer actor apart, and "outside the stack" for
other work on the machine), with each consumer's batch timings in the pass read from its log.
``--live-alone S`` adds two passes after the first ingest: live articles at ``--rate`` with their
probes for S seconds, then without them for S seconds, to tell what the live articles and the
probes cost with no rebuild. Their documents join the rebuild's backlog and its chunk count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._ingest_figures import Spread
from bench._ingest_pipeline import WARM_UP_EVENT, publish_and_drain
from bench._query_report import percentiles, save_results
from bench._reindex_shares import CoreShares, batch_parts
from bench.freshness import searchable_after
from bench.query import api_process, wait_until_serving
from deploy._process import ManagedProcess, free_port
from deploy.private_stack import private_stack
from engines.chunking import Chunker
from engines.embedder import cpu_supports_bf16
from ragstream.reindex import (
    SwitchBlocked,
    check_request,
    consumers_running,
    requested_shape,
    start_generation,
    switch,
    wait_serving,
)
from ragstream.stack import LocalStack
from schemas import DocumentEvent, Settings
from schemas.generations import Generation, IndexShape
from streams.corpus import wiki_events
from streams.lag import LagReader
from streams.publisher import EventPublisher

console = Console(width=None if sys.stdout.isatty() else 140)

#: Live articles, beyond the corpus, published during a rebuild (cycled, each with a new doc_id).
LIVE_ARTICLES = 300
#: A rebuild whose group commits nothing new for this long has stalled: the round fails.
STALL_S = 300.0
POLL_S = 0.5
#: How long the switch after the rebuild may wait for its conditions, then for the replica.
SWITCH_WITHIN_S = 120.0


def chunk_count(events: list[DocumentEvent], chunk_size: int, chunk_overlap: int) -> int:
    chunker = Chunker(chunk_size, chunk_overlap)
    return sum(len(chunker.split(event.doc_id, event.content)) for event in events)


def live_event(held_out: list[DocumentEvent], number: int, prefix: str = "live") -> DocumentEvent:
    """The ``number``th live article: a held-out one under a doc_id of its own, new to the index."""
    event = held_out[number % len(held_out)]
    return event.model_copy(update={"doc_id": f"{prefix}/{number}/{event.doc_id}"})


async def publish_live(
    settings: Settings,
    api_url: str,
    held_out: list[DocumentEvent],
    rate: float,
    stop: asyncio.Event,
    prefix: str = "live",
) -> list[float | None]:
    """Publish live articles at ``rate`` per second until ``stop``; each one's publish → searchable s."""
    probes: list[asyncio.Task[float | None]] = []
    async with (
        httpx.AsyncClient(base_url=api_url, timeout=60, trust_env=False) as api,
        EventPublisher(settings.kafka, settings.events_topic) as publisher,
    ):
        started = time.perf_counter()
        while not stop.is_set():
            # A steady schedule, not "sleep after each": a slow publish must not lower the rate.
            delay = started + len(probes) / rate - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            event = live_event(held_out, len(probes), prefix)
            probes.append(asyncio.create_task(searchable_after(api, publisher, event, "vector")))
        return list(await asyncio.gather(*probes))


async def live_alone(
    settings: Settings, api_url: str, held_out: list[DocumentEvent], rate: float, seconds: float
) -> list[float | None]:
    """Live articles, as during the rebuild, for ``seconds`` with no rebuild: what they cost alone."""
    stop = asyncio.Event()
    live = asyncio.create_task(publish_live(settings, api_url, held_out, rate, stop, "live-alone"))
    await asyncio.sleep(seconds)
    stop.set()
    return await live


async def publish_unprobed(
    settings: Settings, held_out: list[DocumentEvent], rate: float, seconds: float
) -> int:
    """Live articles as ``live_alone`` publishes them, with no search for them: what indexing
    them costs without the probes. Returns how many were published."""
    published = 0
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        started = time.perf_counter()
        while published / rate < seconds:
            delay = started + published / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await publisher.publish(live_event(held_out, published, "live-unprobed"))
            published += 1
    return published


@dataclass(frozen=True)
class Rebuild:
    """A rebuild's times, from writing its record: until its group had a member (the consumers'
    process starting an actor and loading its model), and until it had caught up."""

    joined_s: float
    caught_up_s: float
    latencies_s: list[float | None]  # each live article's publish → searchable; None: never
    #: When its record was written: ``time.monotonic()`` and ``time.time()``.
    started: tuple[float, float]

    @property
    def indexing_s(self) -> float:
        return self.caught_up_s - self.joined_s


async def wait_caught_up(
    settings: Settings, generation: Generation, backlog: dict[int, int], processes: list[ManagedProcess]
) -> float:
    """Until the generation's group has committed, on every partition, the end offset that the
    changes topic had when the rebuild began; returns when its group first had a member
    (``time.perf_counter()``)."""
    own = generation.settings(settings)
    joined: float | None = None
    async with LagReader(settings.kafka) as lag:
        last, moved_at = -1, time.monotonic()
        while True:
            if joined is None and await consumers_running(settings, [own.consumer_group]):
                joined = time.perf_counter()
            read = await lag.read(own.input_topic, own.consumer_group)
            committed = {p.partition: p.committed or 0 for p in read}
            if all(committed.get(partition, 0) >= end for partition, end in backlog.items()):
                return joined if joined is not None else time.perf_counter()
            if sum(committed.values()) != last:
                last, moved_at = sum(committed.values()), time.monotonic()
            for process in processes:
                if not process.is_running():
                    raise RuntimeError(f"the {process.name} exited; its log ends:\n{process.log_tail()}")
            if time.monotonic() - moved_at > STALL_S:
                raise RuntimeError(
                    f"generation {generation.number}'s group {own.consumer_group} committed nothing new "
                    f"for {STALL_S:.0f} s (at {committed}, of {backlog}); the consumers' log ends:\n"
                    f"{processes[0].log_tail()}"
                )
            await asyncio.sleep(POLL_S)


async def rebuild(
    settings: Settings,
    shape: IndexShape,
    api_url: str,
    held_out: list[DocumentEvent],
    rate: float,
    processes: list[ManagedProcess],
) -> Rebuild:
    """Write the new generation's record as ``ragstream reindex`` does, publish live articles
    until its group has caught up on the backlog, and time it."""
    generation = await check_request(settings, shape)
    async with LagReader(settings.kafka) as lag:
        backlog = await lag.end_offsets(settings.input_topic)
    stop = asyncio.Event()
    started, started_at = time.perf_counter(), (time.monotonic(), time.time())
    await start_generation(settings, generation)
    live = asyncio.create_task(publish_live(settings, api_url, held_out, rate, stop))
    try:
        joined = await wait_caught_up(settings, generation, backlog, processes)
        caught_up = time.perf_counter()
    finally:
        stop.set()
        latencies = await live
    return Rebuild(joined - started, caught_up - started, latencies, started_at)


async def switch_over(settings: Settings) -> float | None:
    """Seconds from asking for the switch (as ``ragstream reindex switch`` does, once the
    generation's group has read the live events too) until the API replica serves it; None,
    saying why, when it did not within ``SWITCH_WITHIN_S``."""
    started = time.perf_counter()
    try:
        record = await switch(settings, SWITCH_WITHIN_S)
    except SwitchBlocked as exc:
        console.print(f"[yellow]not switched[/yellow]: {exc}")
        return None
    live, behind = await wait_serving(settings, record.generation, SWITCH_WITHIN_S)
    if behind or not live:
        console.print(f"[yellow]switched, but no replica reports serving it[/yellow]: live {live}")
        return None
    return time.perf_counter() - started


def run_round(
    args: argparse.Namespace, events: list[DocumentEvent], held_out: list[DocumentEvent]
) -> dict[str, Any]:
    base = Settings(
        collection="reindex",
        precision=args.precision,
        api_port=free_port(),
        consumers_min=1,
        consumers_max=1,
        rerank=False,
    )
    with private_stack("reindex", base=base) as services:
        settings = services.settings
        stack = LocalStack(settings, consumers=1)
        consumers, stage = stack.consumer_process(), stack.stage_process()
        api = api_process(settings, services.state)
        processes = [consumers, stage, api]
        shares: CoreShares | None = None
        where: dict[str, Any] = {}
        try:
            for process in processes:
                process.start()
            url = f"http://127.0.0.1:{settings.api_port}"
            wait_until_serving(api, url)
            asyncio.run(publish_and_drain(settings, [WARM_UP_EVENT]))
            if args.shares:
                shares = CoreShares(
                    {
                        "Kafka broker": services.broker.pid,
                        "Chroma server": services.chroma.pid,
                        "changes stage": stage.pid,
                        "query API": api.pid,
                        "bench (publisher, probes)": os.getpid(),
                    },
                    consumers.pid,
                )
                shares.start()
            load = os.getloadavg()[0]
            console.print(f"first ingest: {len(events)} articles")
            first_at = (time.monotonic(), time.time())
            first_s = asyncio.run(publish_and_drain(settings, events))
            alone: list[float | None] = []
            unprobed = 0
            if args.live_alone:
                console.print(f"live articles alone: {args.live_alone:g} s at {args.rate:g}/s")
                alone_at = (time.monotonic(), time.time())
                alone = asyncio.run(live_alone(settings, url, held_out, args.rate, args.live_alone))
                alone_s = time.monotonic() - alone_at[0]
                console.print(f"live articles alone, not searched for: {args.live_alone:g} s")
                unprobed_at = (time.monotonic(), time.time())
                unprobed = asyncio.run(publish_unprobed(settings, held_out, args.rate, args.live_alone))
                unprobed_s = time.monotonic() - unprobed_at[0]
                # All in the changes topic before the rebuild takes its end offsets as its backlog.
                asyncio.run(publish_and_drain(settings, []))
            shape = requested_shape(
                IndexShape.of(settings), chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap
            )
            console.print(f"rebuild: {shape.describe()}, {args.rate:g} live articles/s meanwhile")
            rebuilt = asyncio.run(rebuild(settings, shape, url, held_out, args.rate, processes))
            switch_s = asyncio.run(switch_over(settings))
        except BaseException:
            # Their logs go with the round's temporary folder: what they said is shown first.
            for process in processes:
                console.print(
                    f"[bold]the end of the {process.name}'s log[/bold]\n{escape(process.log_tail(60))}"
                )
            raise
        finally:
            if shares is not None:
                shares.stop()
            for process in reversed(processes):
                process.stop()
        if shares is not None:
            windows = {
                "first ingest": (first_at, first_s),
                **(
                    {"live alone": (alone_at, alone_s), "live alone, unsearched": (unprobed_at, unprobed_s)}
                    if args.live_alone
                    else {}
                ),
                "rebuild": (
                    (rebuilt.started[0] + rebuilt.joined_s, rebuilt.started[1] + rebuilt.joined_s),
                    rebuilt.indexing_s,
                ),
            }
            where = {
                name: {
                    "cores": shares.cores(at[0], at[0] + seconds),
                    "batches": batch_parts(consumers.log_file, at[1], at[1] + seconds),
                }
                for name, (at, seconds) in windows.items()
            }
    first_chunks = chunk_count(events, settings.chunk_size, settings.chunk_overlap)
    # The rebuild's backlog holds every change published before it: the live articles alone too.
    published_before = [
        WARM_UP_EVENT,
        *(live_event(held_out, n, "live-alone") for n in range(len(alone))),
        *(live_event(held_out, n, "live-unprobed") for n in range(unprobed)),
        *events,
    ]
    rebuild_chunks = chunk_count(published_before, args.chunk_size, args.chunk_overlap)
    found = [seconds * 1000 for seconds in rebuilt.latencies_s if seconds is not None]
    first_rate, rebuild_rate = first_chunks / first_s, rebuild_chunks / rebuilt.indexing_s
    return {
        "first": {"chunks": first_chunks, "seconds": first_s, "chunks_per_s": first_rate},
        "rebuild": {
            "chunks": rebuild_chunks,
            "start_s": rebuilt.joined_s,
            "seconds": rebuilt.indexing_s,
            "chunks_per_s": rebuild_rate,
            "whole_s": rebuilt.caught_up_s,
        },
        "ratio": rebuild_rate / first_rate,
        "live": {
            "published": len(rebuilt.latencies_s),
            "found": len(found),
            "fresh_ms": percentiles(found),
        },
        "switch_s": switch_s,
        "load": load,
        "live_alone": {
            "published": len(alone),
            "found": sum(seconds is not None for seconds in alone),
            "fresh_ms": percentiles([seconds * 1000 for seconds in alone if seconds is not None]),
        },
        "shares": where,
    }


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"  # NaN: too few values


def report(rounds: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    columns = (
        "round",
        "first ingest chunks/s",
        "rebuild group start s",
        "rebuild chunks/s",
        "ratio",
        "live found",
        "fresh p50 ms",
        "p99",
        "switch s",
    )
    for column in (*columns, "load avg before"):
        table.add_column(column, justify="right")
    for number, figures in enumerate(rounds, 1):
        fresh = figures["live"]["fresh_ms"]
        table.add_row(
            str(number),
            f"{figures['first']['chunks_per_s']:.1f}",
            f"{figures['rebuild']['start_s']:.1f}",
            f"{figures['rebuild']['chunks_per_s']:.1f}",
            f"{figures['ratio']:.2f}",
            f"{figures['live']['found']}/{figures['live']['published']}",
            _ms(fresh["p50"]),
            _ms(fresh["p99"]),
            "-" if figures["switch_s"] is None else f"{figures['switch_s']:.1f}",
            f"{figures['load']:.1f}",
        )

    def spread(values: list[float], digits: int) -> str:
        s = Spread.of(values)
        return f"{s.median:.{digits}f} ({s.low:.{digits}f}–{s.high:.{digits}f})"

    fresh = [figures["live"]["fresh_ms"] for figures in rounds]
    table.add_section()
    table.add_row(
        "median (min–max)",
        spread([f["first"]["chunks_per_s"] for f in rounds], 1),
        spread([f["rebuild"]["start_s"] for f in rounds], 1),
        spread([f["rebuild"]["chunks_per_s"] for f in rounds], 1),
        spread([f["ratio"] for f in rounds], 2),
        "",
        spread([f["p50"] for f in fresh], 0),
        spread([f["p99"] for f in fresh], 0),
        "",
        "",
    )
    console.print(table)
    missed = [number for number, figures in enumerate(rounds, 1) if figures["ratio"] < 0.9]
    verdict = f"missed in round(s) {missed}" if missed else "met in every round"
    console.print(f"goal rebuild ÷ first ingest ≥ 0.9: {verdict}")


def report_shares(rounds: list[dict[str, Any]]) -> None:
    """``--shares``: per round, the mean cores each part used in each pass, and each consumer
    actor's batches in it, part by part."""
    for number, figures in enumerate(rounds, 1):
        alone = figures["live_alone"]
        if alone["published"]:
            console.print(
                f"round {number}, live articles alone: {alone['found']}/{alone['published']} found, "
                f"fresh p50 {_ms(alone['fresh_ms']['p50'])} ms, p99 {_ms(alone['fresh_ms']['p99'])} ms"
            )
        where = figures["shares"]
        if not where:
            continue
        passes = list(where)
        table = Table(title=f"round {number}: mean cores used, by part")
        table.add_column("part")
        for name in passes:
            table.add_column(name, justify="right")
        parts = sorted({p for name in passes for p in where[name]["cores"]})
        parts.sort(key=lambda p: -max(where[name]["cores"].get(p, 0.0) for name in passes))
        for part in parts:
            table.add_row(part, *(f"{where[name]['cores'].get(part, 0.0):.2f}" for name in passes))
        table.add_section()
        table.add_row("all", *(f"{sum(where[name]['cores'].values()):.2f}" for name in passes))
        console.print(table)
        for name in passes:
            for pid, actor in where[name]["batches"].items():
                spent = " ".join(f"{part} {s:.1f}" for part, s in actor["parts"].items() if s >= 0.05)
                console.print(
                    f"  {name}, consumer pid {pid}: {actor['batches']} batches, {actor['events']} events, "
                    f"{actor['chunks']} chunks embedded; seconds: {spent}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=1100, help="the rebuild's chunk size")
    parser.add_argument("--chunk-overlap", type=int, default=100, help="the rebuild's chunk overlap")
    parser.add_argument("--rate", type=float, default=5, help="live articles per second during the rebuild")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=Settings().precision)
    parser.add_argument(
        "--live-alone",
        type=float,
        default=0.0,
        metavar="S",
        help="after the first ingest, publish live articles for S seconds with no rebuild, to see "
        "what they cost alone (their documents join the rebuild's backlog and its chunk count)",
    )
    parser.add_argument(
        "--shares",
        action="store_true",
        help="also sample each process's CPU every second, and read each consumer's batch timings "
        "from its log, for each pass (printed, and saved with the results)",
    )
    args = parser.parse_args()
    # Resolved here as the consumers resolve it, so that the table says what ran.
    if args.precision == "auto":
        args.precision = "bf16" if cpu_supports_bf16() else "fp32"

    articles = list(wiki_events(args.articles + LIVE_ARTICLES))
    events, held_out = articles[: args.articles], articles[args.articles :]
    defaults = Settings()
    first = chunk_count(events, defaults.chunk_size, defaults.chunk_overlap)
    again = chunk_count(events, args.chunk_size, args.chunk_overlap)
    console.print(
        f"corpus: {len(events)} Wikipedia articles → {first} chunks at {defaults.chunk_size}/"
        f"{defaults.chunk_overlap}, {again} at {args.chunk_size}/{args.chunk_overlap}; {args.precision}"
    )
    rounds = []
    for number in range(1, args.rounds + 1):
        console.rule(f"round {number} of {args.rounds}")
        rounds.append(run_round(args, events, held_out))
        console.print(
            f"first ingest {rounds[-1]['first']['chunks_per_s']:.1f} chunks/s, rebuild "
            f"{rounds[-1]['rebuild']['chunks_per_s']:.1f} chunks/s (ratio {rounds[-1]['ratio']:.2f})"
        )
    title = (
        f"reindex: {len(events)} articles, rebuilt at chunk size {args.chunk_size} "
        f"(overlap {args.chunk_overlap}) with {args.rate:g} live articles/s, {args.precision}, "
        f"{args.rounds} round(s)"
    )
    report(rounds, title)
    report_shares(rounds)
    saved = save_results("reindex", {"args": vars(args), "rounds": rounds})
    console.print(f"saved to {saved}")


if __name__ == "__main__":
    main()
