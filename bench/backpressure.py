"""Backpressure: a backlog far larger than the consumers can index at once, drained with flat memory.

    .venv/bin/python bench/backpressure.py [--factor 10] [--consumers 1]

Starts its own Kafka broker and Chroma server. Measures how many events the consumers index in
a short warm-up (and, after it, their RSS at rest with the model loaded), publishes
``factor`` × that per-minute rate as one burst (real Wikipedia text,
each article republished under several ids), then samples every few seconds while they drain:
the consumer processes' resident memory (RSS) and the total lag. Prints both over time, and
RSS against its value at idle with the model loaded. Goal: RSS ≤ 1.2 × idle, lag falling
monotonically once the burst is in, no event lost (committed = end offset on every partition).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path

import ray
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from consumers.actors import ConsumerGroup
from deploy.drain import wait_drained
from deploy.private_stack import private_stack
from schemas import DocumentEvent, Settings
from streams.corpus import wiki_events
from streams.hops import HopLag, drained
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

console = Console()

#: The warm-up's 500 events take a minute or two; a consumer that stalls must not hang the bench.
WARMUP_TIMEOUT_S = 1800


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def events_for(count: int, round_: str) -> list[DocumentEvent]:
    articles = list(wiki_events())
    return [
        articles[i % len(articles)].model_copy(
            update={"doc_id": f"{round_}/{i}", "event_id": f"{round_}-{i}"}
        )
        for i in range(count)
    ]


async def publish(settings: Settings, events: list[DocumentEvent]) -> None:
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        await publisher.publish_in_batches(events, batch_size=1000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--factor", type=float, default=10.0, help="backlog = factor × events indexed per minute"
    )
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--sample-every", type=float, default=5.0)
    args = parser.parse_args()

    with private_stack("bench") as services:
        settings = Settings(
            bootstrap_servers=services.settings.bootstrap_servers,
            chroma_port=services.settings.chroma_port,
            collection="backpressure",
            # The consumers alone: their memory and lag are what this measures.
            consumer_input="events",
        )
        group = ConsumerGroup(settings, args.consumers)
        try:
            asyncio.run(ensure_topics(settings))
            group.start()
            group.wait_ready()
            pids = ray.get([actor.pid.remote() for actor in group.actors])
            warmup = events_for(500, "warmup")
            started = time.perf_counter()
            asyncio.run(publish(settings, warmup))
            asyncio.run(wait_drained(settings, timeout=WARMUP_TIMEOUT_S, check=group.check))
            per_minute = len(warmup) / (time.perf_counter() - started) * 60
            # Idle = at rest with the model loaded and warmed up (its first batches allocate
            # working buffers once); everything the burst adds on top is what backpressure bounds.
            time.sleep(3)
            idle = sum(rss_mib(pid) for pid in pids)
            backlog = int(per_minute * args.factor)
            console.print(
                f"idle RSS {idle:.0f} MiB; {per_minute:.0f} events/min; publishing a backlog of {backlog}"
            )

            asyncio.run(publish(settings, events_for(backlog, "burst")))
            samples: list[tuple[float, int, float]] = []
            burst_started = time.perf_counter()

            def sample(lags: list[HopLag]) -> None:
                lag, rss = sum(hop.lag for hop in lags), sum(rss_mib(pid) for pid in pids)
                samples.append((time.perf_counter() - burst_started, lag, rss))
                console.print(f"t={samples[-1][0]:6.0f}s  lag={lag:7d}  RSS={rss:7.0f} MiB")

            # Four times the drain that the warm-up's rate predicts, and ten minutes more.
            timeout = 4 * 60 * args.factor + 600
            last = asyncio.run(
                wait_drained(
                    settings, timeout=timeout, poll_s=args.sample_every, check=group.check, on_lag=sample
                )
            )
            complete = drained(last)
        finally:
            group.stop()

    table = Table(title=f"backpressure: backlog {backlog} events ({args.factor:g} min of indexing)")
    for column in ("figure", "value"):
        table.add_column(column)
    peak = max(rss for _, _, rss in samples)
    lags = [lag for _, lag, _ in samples]
    table.add_row("idle RSS (model loaded)", f"{idle:.0f} MiB")
    table.add_row("peak RSS while draining", f"{peak:.0f} MiB ({peak / idle:.2f} × idle)")
    table.add_row("lag monotonically falling", str(all(b <= a for a, b in itertools.pairwise(lags))))
    table.add_row("drain time", f"{samples[-1][0]:.0f} s")
    table.add_row("committed = end offset on every partition", str(complete))
    console.print(table)


if __name__ == "__main__":
    main()
