"""Snapshots of a replica's views: what a restored view answers, which snapshots are refused,
how many are kept; and a view started from a snapshot and the log's tail (real broker)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from query_api.chunk_log_view import ChunkLogView
from query_api.lexical import LexicalIndex
from query_api.snapshot import SnapshotStore, ViewShape
from query_api.vector_index import VectorChange, VectorIndex
from schemas.chunk_log import chunk_record, embedding_header
from schemas.kafka_connection import KafkaConnection

DIMENSION = 16
TOPIC = "snap.chunks"
WORDS = [
    f"{stem}{suffix}"
    for stem in ("alder", "basalt", "cobalt", "dune", "ember", "fjord", "garnet")
    for suffix in ("", "s", "ing", "ite", "ward")
]
QUERIES = ["alder basalt", "cobalt", "dunes embering", "fjordward garnet", "garnetite alder cobalts"]


# --- views built from changes --------------------------------------------------------------------


class Change:
    """A chunk as the chunk log holds it (``text`` None: a tombstone), with its vector."""

    def __init__(self, chunk_id: str, text: str | None, tenant: str | None = None) -> None:
        self.chunk_id, self.text, self.tenant = chunk_id, text, tenant
        metadata: dict[str, Any] = {"doc_id": f"doc/{chunk_id}", "version": 1}
        if tenant is not None:
            metadata["tenant"] = tenant
        self.record = chunk_record(chunk_id, text, metadata) if text is not None else None
        # Its own vector for each version of a chunk: equal vectors would tie, in any order.
        rng = np.random.default_rng(zlib.crc32(f"{chunk_id}\x00{text}".encode()))
        self.vector = rng.standard_normal(DIMENSION).astype(np.float32)


def history(chunks: int, seed: int) -> list[Change]:
    """Chunks of random words, some a tenant's; then edits and deletions of some of them.

    Every text is eight words long: tantivy counts deleted chunks in the average length until it
    merges them, so with texts of several lengths BM25 scores would depend on the batches the
    log was applied in (see ``LexicalIndex._term_queries``)."""
    rng = random.Random(seed)
    changes = [
        Change(f"c{i}", " ".join(rng.choices(WORDS, k=8)), rng.choice([None, None, "acme", "globex"]))
        for i in range(chunks)
    ]
    for i in rng.sample(range(chunks), chunks // 5):
        changes.append(Change(f"c{i}", " ".join(rng.choices(WORDS, k=8)), rng.choice([None, "acme"])))
    changes.extend(Change(f"c{i}", None) for i in rng.sample(range(chunks), chunks // 10))
    return changes


def apply(index: LexicalIndex, vectors: VectorIndex, changes: list[Change]) -> None:
    index.apply([(c.chunk_id, c.record) for c in changes])
    vectors.apply([VectorChange(c.chunk_id, c.record is None, c.vector, c.tenant) for c in changes])


def answers(index: LexicalIndex, vectors: VectorIndex) -> dict[str, Any]:
    """What searches show: BM25 hits with their scores and records, nearest chunks overall and
    per tenant."""
    probes = np.random.default_rng(99).standard_normal((4, DIMENSION)).astype(np.float32)
    return {
        "chunks": index.num_chunks,
        "lexical": [[(h.id, round(h.score, 5), h.text) for h in index.search(q, 10)] for q in QUERIES],
        "vector": [[(c.id, c.score) for c in row] for row in vectors.nearest(probes, 10)],
        "acme": [[c.id for c in row] for row in vectors.nearest(probes, 5, tenant="acme")],
        "globex": [[c.id for c in row] for row in vectors.nearest(probes, 5, tenant="globex")],
    }


@pytest.fixture
def views() -> Iterator[tuple[LexicalIndex, VectorIndex]]:
    index, vectors = LexicalIndex(), VectorIndex()
    apply(index, vectors, history(400, seed=1))
    yield index, vectors
    index.close()


def store(root: Path, keep: int = 2, **shape: Any) -> SnapshotStore:
    return SnapshotStore(root, keep, ViewShape(**{"topic": TOPIC, "vectors": True, **shape}))


def snapshot(root: Path, index: LexicalIndex, vectors: VectorIndex, offsets: dict[int, int]) -> Path:
    snapshots = store(root)
    return snapshots.finish(snapshots.capture(index, vectors, offsets))


def restored(
    root: Path, bounds: dict[int, tuple[int, int]] | None = None, **shape: Any
) -> tuple[dict[int, int] | None, LexicalIndex, VectorIndex]:
    index, vectors = LexicalIndex(), VectorIndex()
    found = store(root, **shape).restore(index, vectors, bounds or {0: (0, 1000), 1: (0, 1000)})
    return (found[1] if found is not None else None), index, vectors


# --- round trip ----------------------------------------------------------------------------------


def test_a_restored_view_answers_every_search_as_the_original(
    views: tuple[LexicalIndex, VectorIndex], tmp_path: Path
) -> None:
    index, vectors = views
    snapshot(tmp_path, index, vectors, {0: 120, 1: 80})

    offsets, copy, copy_vectors = restored(tmp_path)

    assert offsets == {0: 120, 1: 80}
    assert answers(copy, copy_vectors) == answers(index, vectors)
    # Both go on from there alike: edits and deletions of restored chunks, new chunks.
    more = history(60, seed=2)
    apply(index, vectors, more)
    apply(copy, copy_vectors, more)
    assert answers(copy, copy_vectors) == answers(index, vectors)
    copy.close()
    # The restored index shared the snapshot's files (hard links) and never wrote into them.
    assert restored(tmp_path)[0] == {0: 120, 1: 80}


def test_a_view_without_vectors_restores_its_bm25_index_from_a_snapshot_with_them(
    views: tuple[LexicalIndex, VectorIndex], tmp_path: Path
) -> None:
    index, vectors = views
    folder = snapshot(tmp_path, index, vectors, {0: 5})
    copy = LexicalIndex()
    assert store(tmp_path, vectors=False).restore(copy, None, {0: (0, 5)}) == (folder, {0: 5})
    assert [copy.search(q, 10) for q in QUERIES] == [index.search(q, 10) for q in QUERIES]
    copy.close()


# --- snapshots that are refused ------------------------------------------------------------------


@pytest.fixture
def two_snapshots(views: tuple[LexicalIndex, VectorIndex], tmp_path: Path) -> tuple[Path, Path]:
    """An older snapshot at offsets {0: 10, 1: 10}, and a newer one at {0: 20, 1: 20}."""
    index, vectors = views
    older = snapshot(tmp_path, index, vectors, {0: 10, 1: 10})
    apply(index, vectors, history(30, seed=3))
    return older, snapshot(tmp_path, index, vectors, {0: 20, 1: 20})


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            lambda s: flip_a_byte(s / "vectors" / "graph.hnsw"),
            "vectors/graph.hnsw does not match its checksum",
        ),
        (lambda s: flip_a_byte(s / "chunks" / "records"), "chunks/records does not match its checksum"),
        (lambda s: (s / "chunks" / "keys").unlink(), "chunks/keys is missing"),
        (lambda s: shutil.rmtree(s / "lexical"), "is missing"),
        (lambda s: (s / "chunks" / "ids").write_bytes(b"short"), "chunks/ids has 5 bytes"),
        (lambda s: (s / "manifest.json").write_bytes(b'{"body": '), "unreadable manifest"),
        (lambda s: (s / "manifest.json").unlink(), "no manifest"),
        (lambda s: flip_a_byte(s / "manifest.json"), "manifest"),
    ],
    ids=[
        "graph",
        "records",
        "missing-file",
        "missing-index",
        "truncated",
        "cut-manifest",
        "no-manifest",
        "manifest-bit",
    ],
)
def test_a_damaged_snapshot_is_skipped_for_the_next_older_one(
    two_snapshots: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Any,
    reason: str,
) -> None:
    _, newer = two_snapshots
    damage(newer)
    with caplog.at_level(logging.WARNING):
        offsets, index, _ = restored(tmp_path)
    assert offsets == {0: 10, 1: 10}
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and newer.name in skipped[0] and reason in skipped[0]
    index.close()


def test_with_every_snapshot_damaged_the_view_stays_empty_for_a_full_replay(
    two_snapshots: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for folder in two_snapshots:
        flip_a_byte(folder / "chunks" / "records")
    with caplog.at_level(logging.INFO):
        offsets, index, vectors = restored(tmp_path)
    assert offsets is None and index.num_chunks == 0 and vectors.num_vectors == 0
    assert "replaying the whole chunk log" in caplog.text
    index.close()


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ({"dimension": DIMENSION * 2}, f"vectors have {DIMENSION} dimensions, not {DIMENSION * 2}"),
        ({"topic": "other.chunks"}, "of chunk log 'snap.chunks'"),
        ({"per_tenant": False}, "per tenant"),
    ],
)
def test_an_incompatible_snapshot_is_skipped(
    two_snapshots: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    shape: Any,
    reason: str,
) -> None:
    offsets, index, _ = restored(tmp_path, **shape)
    assert offsets is None and index.num_chunks == 0
    assert caplog.text.count("skipped: incompatible") == 2 and reason in caplog.text
    index.close()


def test_a_snapshot_beyond_the_log_s_end_is_not_used(
    two_snapshots: tuple[Path, Path], tmp_path: Path
) -> None:
    # A topic recreated since: its partition 1 ends before the newer snapshot's offset.
    offsets, index, _ = restored(tmp_path, bounds={0: (0, 25), 1: (0, 15)})
    assert offsets == {0: 10, 1: 10}
    index.close()
    offsets, index, _ = restored(tmp_path, bounds={0: (0, 25)})  # partition 1 is gone
    assert offsets is None
    index.close()


def test_a_snapshot_removed_while_it_is_read_falls_back_to_the_older_one(
    two_snapshots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, newer = two_snapshots
    load = VectorIndex.load

    def removed_by_another_replica_first(directory: Path, saved: dict[str, Any]) -> VectorIndex:
        if newer in directory.parents:
            shutil.rmtree(newer)
        return load(directory, saved)

    monkeypatch.setattr(VectorIndex, "load", removed_by_another_replica_first)
    offsets, index, _ = restored(tmp_path)
    assert offsets == {0: 10, 1: 10}
    index.close()


# --- writing: atomic, the newest kept ------------------------------------------------------------


def test_the_newest_snapshots_are_kept_and_older_ones_removed(
    views: tuple[LexicalIndex, VectorIndex], tmp_path: Path
) -> None:
    index, vectors = views
    written = [snapshot(tmp_path, index, vectors, {0: n}) for n in range(4)]
    assert store(tmp_path).snapshots() == [written[3], written[2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written[2:])


def test_a_replica_never_removes_a_snapshot_newer_than_its_own(
    views: tuple[LexicalIndex, VectorIndex], tmp_path: Path
) -> None:
    index, vectors = views
    mine = store(tmp_path, keep=1)
    captured = mine.capture(index, vectors, {0: 1})
    # Another replica sharing the folder writes two while this one is still writing.
    theirs = [snapshot(tmp_path, index, vectors, {0: n}) for n in (2, 3)]
    written = mine.finish(captured)
    assert written.name > theirs[1].name  # named by when they were finished
    assert store(tmp_path).snapshots() == [written]


def test_an_abandoned_snapshot_leaves_nothing_a_reader_would_see(
    views: tuple[LexicalIndex, VectorIndex], tmp_path: Path
) -> None:
    index, vectors = views
    snapshots = store(tmp_path)
    captured = snapshots.capture(index, vectors, {0: 1})
    assert captured.folder.name.startswith(".tmp-") and snapshots.snapshots() == []
    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError):
        snapshots.finish(captured, stop)
    assert list(tmp_path.iterdir()) == []
    assert restored(tmp_path)[0] is None


def test_searches_and_changes_go_on_while_the_vectors_are_written_and_miss_the_snapshot(
    views: tuple[LexicalIndex, VectorIndex], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, vectors = views
    before = answers(index, vectors)
    go = tmp_path / "go"
    write_files = VectorIndex._write_files

    def held_until_go(self: VectorIndex, directory: Path) -> None:
        while not go.exists():  # in the forked child: holds its write until the parent is done
            time.sleep(0.01)
        write_files(self, directory)

    monkeypatch.setattr(VectorIndex, "_write_files", held_until_go)
    snapshots = store(tmp_path / "snapshots")
    captured = snapshots.capture(index, vectors, {0: 1})
    assert captured.vectors_written is not None

    more = history(60, seed=3)
    apply(index, vectors, more)
    after = answers(index, vectors)
    assert after != before
    assert os.waitpid(captured.vectors_written.pid, os.WNOHANG) == (0, 0)  # still writing
    go.touch()
    snapshots.finish(captured)

    assert answers(index, vectors) == after
    offsets, copy, copy_vectors = restored(tmp_path / "snapshots")
    assert offsets == {0: 1} and answers(copy, copy_vectors) == before
    copy.close()


def test_a_failed_write_of_the_vectors_leaves_no_snapshot(
    views: tuple[LexicalIndex, VectorIndex], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, vectors = views

    def disk_full(self: VectorIndex, directory: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VectorIndex, "_write_files", disk_full)
    snapshots = store(tmp_path)
    captured = snapshots.capture(index, vectors, {0: 1})
    with pytest.raises(OSError, match=r"the process writing the vector index to .* ended with status 1"):
        snapshots.finish(captured)
    assert list(tmp_path.iterdir()) == []
    assert restored(tmp_path)[0] is None


def test_every_file_of_a_snapshot_is_in_its_manifest(
    views: tuple[LexicalIndex, VectorIndex], tmp_path: Path
) -> None:
    index, vectors = views
    folder = snapshot(tmp_path, index, vectors, {0: 1})
    body = orjson.loads((folder / "manifest.json").read_bytes())["body"]
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(body["files"]) == on_disk
    assert {"vectors/graph.hnsw", "vectors/tenant-0/graph.hnsw", "chunks/records"} <= on_disk
    assert body["chunks"] == index.num_chunks and body["offsets"] == {"0": 1}


# --- a view started from a snapshot, on the real broker ------------------------------------------


async def compacted_topic(bootstrap_servers: str, partitions: int = 3) -> str:
    """A new compacted topic, as the chunk log is; returns its name."""
    topic = f"snapshot-{uuid.uuid4().hex[:8]}.chunks"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        config = {"cleanup.policy": "compact"}
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
    finally:
        await admin.close()
    return topic


async def produce(bootstrap_servers: str, topic: str, changes: list[Change]) -> None:
    async with AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all") as producer:
        for c in changes:
            headers = [embedding_header(c.vector)] if c.record is not None else None
            await producer.send(topic, key=c.chunk_id.encode(), value=c.record, headers=headers)
        await producer.flush()


async def end_offsets(bootstrap_servers: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def caught_up_view(
    bootstrap_servers: str, topic: str, snapshot_dir: Path | None, until: dict[int, int]
) -> tuple[ChunkLogView, dict[str, Any]]:
    """A new view of ``topic``, run until it has applied ``until``; its answers then."""
    index = LexicalIndex()
    try:
        async with ChunkLogView(
            index, KafkaConnection(bootstrap_servers), topic, vectors=VectorIndex(), snapshot_dir=snapshot_dir
        ) as view:
            assert await view.wait_caught_up(60)
            assert await view.wait_for(until, timeout=30)
            assert view.vectors is not None
            return view, answers(index, view.vectors)
    finally:
        index.close()


@pytest.mark.integration
async def test_a_view_from_a_snapshot_and_the_tail_equals_one_replayed_from_the_start(
    kafka_broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    servers = kafka_broker.bootstrap_servers
    topic = await compacted_topic(servers)
    before = history(600, seed=5)
    await produce(servers, topic, before)

    # A replica that replayed the log writes a snapshot.
    index = LexicalIndex()
    async with ChunkLogView(
        index, KafkaConnection(servers), topic, vectors=VectorIndex(), snapshot_dir=tmp_path
    ) as first:
        assert await first.wait_caught_up(60)
        written = await first.write_snapshot()
    index.close()
    assert written is not None and written.parent == tmp_path / topic

    # Then edits, deletions and new chunks, many of them of chunks in the snapshot.
    rng = random.Random(6)
    tail = [Change(f"c{i}", None) for i in rng.sample(range(600), 80)]
    tail += [
        Change(f"c{i}", f"rewritten {' '.join(rng.choices(WORDS, k=7))}", "acme")
        for i in rng.sample(range(600), 60)
    ]
    tail += history(700, seed=7)[600:700]
    await produce(servers, topic, tail)
    ends = await end_offsets(servers, topic, 3)

    with caplog.at_level(logging.INFO, logger="query_api.snapshot"):
        from_snapshot, restored_answers = await caught_up_view(servers, topic, tmp_path, ends)
    replayed, replayed_answers = await caught_up_view(servers, topic, None, ends)

    assert from_snapshot.started_from == written and replayed.started_from is None
    assert f"views restored from snapshot {written}" in caplog.text
    assert restored_answers == replayed_answers
    assert from_snapshot.applied_offsets() == replayed.applied_offsets() == ends
    deleted = {c.chunk_id for c in tail if c.record is None} - {
        c.chunk_id for c in tail if c.record is not None
    }
    shown = {hit[0] for hits in restored_answers["lexical"] for hit in hits} | {
        chunk for rows in restored_answers["vector"] for chunk in rows
    }
    assert deleted and not deleted & shown


@pytest.mark.integration
async def test_a_view_that_replayed_the_whole_log_leaves_a_snapshot_without_waiting_for_the_interval(
    kafka_broker: Any, tmp_path: Path
) -> None:
    servers = kafka_broker.bootstrap_servers
    topic = await compacted_topic(servers)
    await produce(servers, topic, history(50, seed=8))
    index = LexicalIndex()
    try:
        async with ChunkLogView(
            index,
            KafkaConnection(servers),
            topic,
            vectors=VectorIndex(),
            snapshot_dir=tmp_path,
            snapshot_interval_s=3600,
        ) as view:
            assert await view.wait_caught_up(60)
            deadline = time.monotonic() + 60
            while not SnapshotStore(tmp_path / topic, 2, ViewShape(topic, vectors=True)).snapshots():
                assert time.monotonic() < deadline, "no snapshot within 60 s of catching up"
                await asyncio.sleep(0.2)
    finally:
        index.close()
