"""Edit burst: how soon a burst of one-paragraph edits over ``PUT /v1/documents`` is searchable.

    .venv/bin/python bench/edit_burst.py [--articles 2000] [--edits 100] [--rounds 3]

Starts its own Kafka broker and Chroma server on free ports, loads ``--articles`` Wikipedia lead
sections as the consumers write them (embeddings cached under ``bench/results/cache/``, as
bench/query.py does), then the changes stage, the query API as ``ragstream serve`` runs it, and
one consumer actor (Ray), all with default settings. Each round PUTs ``--edits`` of the articles,
one after another, each with one paragraph changed (a sentence with a word of its own added), and
then waits, for each edit, with a lexical search for that word that carries the write's
``consistent_with`` token and is filtered to its document: the API answers it only once the
index includes the write. Reports when the last edit of the burst was searchable after the
first and after the last publish. Goal: within 2 s of the last publish.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._query_index import BenchCorpus, cached_embeddings
from bench._query_report import percentiles, save_results
from bench.query import api_process, preloaded_stack, wait_until_serving
from consumers.actors import ConsumerGroup
from engines.chunking import Chunker
from ragstream.stack import LocalStack
from schemas import DocumentEvent, Settings
from streams.corpus import wiki_events

console = Console(width=None if sys.stdout.isatty() else 150)

#: A search that waits for a write answers 504 after read_your_writes_timeout_s; it is sent again
#: until this long has passed since the burst began.
GIVE_UP_S = 60.0


def edited(event: DocumentEvent, marker: str) -> dict[str, Any]:
    """The body of a PUT that changes one paragraph of ``event``: a sentence added to its middle
    paragraph, which carries ``marker``, a word no other text has."""
    paragraphs = event.content.split("\n")
    middle = len(paragraphs) // 2
    paragraphs[middle] = f"{paragraphs[middle]} This paragraph was revised as {marker}."
    return {
        "content": "\n".join(paragraphs),
        "content_type": event.content_type,
        "source": event.source,
        "metadata": dict(event.metadata),
    }


async def searchable(
    api: httpx.AsyncClient, doc_id: str, marker: str, token: str, started: float
) -> float | None:
    """Seconds from ``started`` until a search that waits for the write finds ``marker``."""
    body = {
        "query": marker,
        "k": 1,
        "mode": "lexical",
        "filter": {"doc_id": doc_id},
        "consistent_with": token,
    }
    while time.perf_counter() - started < GIVE_UP_S:
        response = await api.post("/v1/search", json=body)
        if response.status_code == 504:  # not indexed within the API's wait: ask again
            continue
        response.raise_for_status()
        if response.json()["hits"]:
            return time.perf_counter() - started
        await asyncio.sleep(0.02)
    return None


async def burst(api: httpx.AsyncClient, events: list[DocumentEvent]) -> dict[str, Any]:
    """PUT every edit in turn, then wait for each to be searchable."""
    markers = [f"revision{uuid.uuid4().hex[:10]}" for _ in events]
    started = time.perf_counter()
    receipts = []
    for event, marker in zip(events, markers, strict=True):
        response = await api.put(f"/v1/documents/{event.doc_id}", json=edited(event, marker))
        response.raise_for_status()
        receipts.append(response.json())
    published_s = time.perf_counter() - started
    waits = [
        searchable(api, event.doc_id, marker, receipt["token"], started)
        for event, marker, receipt in zip(events, markers, receipts, strict=True)
    ]
    found = await asyncio.gather(*waits)
    done = [value for value in found if value is not None]
    last = max(done) if len(done) == len(found) else float("nan")
    return {
        "edits": len(events),
        "found": len(done),
        "publish_s": published_s,
        "after_first_s": last,
        "after_last_s": last - published_s,
        "each_ms": percentiles([value * 1000 for value in done]),
    }


async def measure(url: str, corpus: list[DocumentEvent], args: argparse.Namespace) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as api:
        # Warm-up: the consumer's first batch pays for joining the group and lazy initialisation.
        await burst(api, corpus[-1:])
        results = []
        stride = len(corpus) // (args.edits * args.rounds)
        for round_ in range(args.rounds):
            events = corpus[round_ :: args.rounds][: args.edits * stride : stride]
            # Before each burst, also the first: the readiness probes are searches, and the
            # consumer yields to searches for search_activity_window_s after the last one.
            await asyncio.sleep(args.pause)
            result = await burst(api, events)
            console.print(
                f"round {round_ + 1}: {result['found']}/{result['edits']} searchable, published in "
                f"{result['publish_s']:.2f} s, the last searchable {result['after_first_s']:.2f} s after "
                f"the first publish, {result['after_last_s']:.2f} s after the last"
            )
            results.append(result)
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    table = Table(
        title=f"{args.edits} one-paragraph edits over PUT /v1/documents, {args.articles} articles indexed"
    )
    for column in (
        "round",
        "searchable",
        "publish s",
        "last after first s",
        "last after last s",
        "each p50 ms",
        "each p99 ms",
    ):
        table.add_column(column, justify="right")
    for index, result in enumerate(results):
        table.add_row(
            str(index + 1),
            f"{result['found']}/{result['edits']}",
            f"{result['publish_s']:.2f}",
            f"{result['after_first_s']:.2f}",
            f"{result['after_last_s']:.2f}",
            f"{result['each_ms']['p50']:.0f}",
            f"{result['each_ms']['p99']:.0f}",
        )
    after_last = [result["after_last_s"] for result in results]
    table.add_row(
        "median",
        "",
        "",
        f"{statistics.median(r['after_first_s'] for r in results):.2f}",
        f"{statistics.median(after_last):.2f} ({min(after_last):.2f}–{max(after_last):.2f})",
        "",
        "",
    )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=2000, help="articles indexed before the bursts")
    parser.add_argument("--edits", type=int, default=100, help="edits per burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts, each editing other articles")
    parser.add_argument("--pause", type=float, default=3.0, help="quiet seconds before each burst")
    args = parser.parse_args()

    base = Settings(collection="edit-burst", rerank=False)
    articles = list(wiki_events(args.articles))
    chunker = Chunker(base.chunk_size, base.chunk_overlap)
    chunks = [chunk for event in articles for chunk in chunker.split(event.doc_id, event.content)]
    corpus = BenchCorpus(indexed=articles, chunks=chunks, held_out=[], queries=[], articles=len(articles))
    vectors, _ = cached_embeddings(base, chunks, console)
    with (
        tempfile.TemporaryDirectory(prefix="ragstream-edit-burst-") as state_dir,
        preloaded_stack(base, Path(state_dir), corpus, vectors) as stack,
    ):
        settings = stack.settings
        console.print(f"{len(articles)} articles ({len(chunks)} chunks) loaded in {stack.load_s:.0f} s")
        api = api_process(settings, Path(state_dir))
        stage = LocalStack(settings).stage_process()
        group = ConsumerGroup(settings, 1)
        try:
            api.start()
            stage.start()
            group.start()
            group.wait_ready()
            url = f"http://127.0.0.1:{settings.api_port}"
            wait_until_serving(api, url)
            results = asyncio.run(measure(url, articles, args))
        finally:
            group.stop()
            stage.stop()
            api.stop()
    report(results, args)
    path = save_results("edit-burst", {"args": vars(args), "chunks": len(chunks), "rounds": results})
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
