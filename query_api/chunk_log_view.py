"""The BM25 and vector indexes as a view of the chunk log: replayed from the start, then followed.

The chunk log is compacted and keyed by chunk id, so applying it in order (upsert = replace the
chunk, tombstone = delete it) from any point at or before a position gives the index as of that
position. Every replica does this on its own: no replica state needs to survive a restart.
With a snapshot folder, a replica also writes snapshots of its views there now and then, and
starts from the newest valid one, replaying only the log after it (``query_api.snapshot``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from query_api.lexical import LexicalIndex
from query_api.snapshot import CapturedViews, SnapshotStore, ViewShape
from query_api.vector_index import VectorChange, VectorIndex
from schemas.chunk_log import embedding_of
from schemas.kafka_connection import KafkaConnection
from streams.background import BackgroundLoop
from streams.kafka_clients import client_options

log = logging.getLogger(__name__)

__all__ = ["ChunkLogView", "records_behind"]


def records_behind(applied: Mapping[int, int], end_offsets: Mapping[int, int]) -> int:
    """Records of a log up to ``end_offsets`` not yet applied by a view at ``applied`` (both
    partition → offset)."""
    return sum(max(0, end - applied.get(partition, 0)) for partition, end in end_offsets.items())


class ChunkLogView(BackgroundLoop):
    """Keeps ``index`` (and ``vectors``, if given) equal to the chunk log ``topic``;
    ``start()``/``stop()`` are idempotent.

    Each poll's records are applied in one commit, to both indexes before the applied offsets
    move, so a change is searchable within one fetch and one commit of reaching the broker.
    While the broker or the topic is missing it keeps retrying; a missing topic counts as an
    empty log.

    Changes are applied on a thread of their own at nice ``niceness`` (and tantivy's indexing
    and merge threads, which that thread starts, with it): keeping the view current is
    throughput work beside the searches it serves, so it takes the CPU they leave.

    With ``snapshot_dir``, the view starts from the newest valid snapshot of this topic's views
    there, and once caught up writes one every ``snapshot_interval_s``, keeping ``snapshot_keep``.
    A snapshot is taken between two changes on the applying thread (applying pauses for a copy
    of the BM25 tables and a fork; searches do not), and written on a low-priority thread of its
    own and, for the vectors, by the forked child (``query_api.forked_write``).
    """

    def __init__(
        self,
        index: LexicalIndex,
        kafka: KafkaConnection,
        topic: str,
        *,
        vectors: VectorIndex | None = None,
        max_records: int = 5000,
        max_record_bytes: int = 1024 * 1024,
        fetch_max_wait_ms: int = 100,
        retry_backoff_s: float = 2.0,
        progress_interval_s: float = 5.0,
        partition_check_s: float = 30.0,
        niceness: int = 10,
        snapshot_dir: Path | None = None,
        snapshot_interval_s: float = 300.0,
        snapshot_keep: int = 2,
    ) -> None:
        self.index = index
        self.vectors = vectors
        self.topic = topic
        self._kafka = kafka
        self._max_records = max_records
        self._max_record_bytes = max_record_bytes
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._retry_backoff_s = retry_backoff_s
        self._progress_interval_s = progress_interval_s
        self._partition_check_s = partition_check_s
        self._niceness = niceness
        self._applier: ThreadPoolExecutor | None = None
        self._applied: dict[int, int] = {}
        self._caught_up = asyncio.Event()
        self._start_failed = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._snapshots: SnapshotStore | None = None
        if snapshot_dir is not None:
            shape = ViewShape(
                topic,
                vectors is not None,
                vectors.per_tenant if vectors is not None else True,
                vectors.dimension if vectors is not None else None,
            )
            self._snapshots = SnapshotStore(snapshot_dir / topic, snapshot_keep, shape)
        self._snapshot_interval_s = snapshot_interval_s
        self._next_snapshot: float | None = None
        self._snapshot_requests: list[asyncio.Future[Path | None]] = []
        self._snapshot_writer: ThreadPoolExecutor | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._restore_tried = False
        #: The snapshot the views started from; None: the log was replayed from its start.
        self.started_from: Path | None = None

    # --- what readers ask ------------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        """True once the log has been applied up to its end offsets as of the start."""
        return self._caught_up.is_set()

    def applied_offsets(self) -> dict[int, int]:
        """Per partition, the offset below which every record is applied and searchable."""
        return dict(self._applied)

    def has_applied(self, offsets: Mapping[int, int]) -> bool:
        """True when every record before ``offsets`` (partition → offset) is searchable."""
        return all(self._applied.get(partition, 0) >= offset for partition, offset in offsets.items())

    # A timeout here is an answer (False: not applied yet), not an error; callers report how far
    # the view got, which a cancelled wait would not let them.
    async def wait_for(self, offsets: Mapping[int, int], timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until ``has_applied(offsets)``; False if ``timeout`` seconds pass first."""
        async with self._progress:
            try:
                async with asyncio.timeout(timeout):
                    await self._progress.wait_for(lambda: self.has_applied(offsets))
            except TimeoutError:
                return False
        return True

    # As wait_for: the start-up waits so long, then serves anyway.
    async def wait_caught_up(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait for the replay; returns early, False, when the first connection to Kafka fails."""
        waits = {
            asyncio.ensure_future(self._caught_up.wait()),
            asyncio.ensure_future(self._start_failed.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return self.caught_up

    async def write_snapshot(self) -> Path | None:
        """Take a snapshot of the views as soon as they are caught up and no other is being
        written; returns its folder, or None if writing it failed (logged)."""
        if self._snapshots is None:
            raise RuntimeError("this view has no snapshot folder")
        requested = asyncio.get_running_loop().create_future()
        self._snapshot_requests.append(requested)
        return await requested

    # --- following the log -----------------------------------------------------------------------

    async def _run(self) -> None:
        # Leaving the block waits for a change being applied: the index outlives its last write;
        # and for a snapshot being written, which ``_stopping`` cuts short.
        self._stopping.clear()
        with (
            _low_priority_thread("chunk-log-apply", self._niceness) as self._applier,
            _low_priority_thread("chunk-log-snapshot", self._niceness) as self._snapshot_writer,
        ):
            try:
                await self._follow_forever()
            finally:
                self._stopping.set()
                if self._snapshot_task is not None:
                    self._snapshot_task.cancel()

    async def _follow_forever(self) -> None:
        while True:
            try:
                await self._follow()
            except KafkaError as exc:
                log.warning("chunk log %s unavailable, retrying: %s", self.topic, exc)
            except Exception:
                # A frozen view would serve stale text silently: report the bug and keep following.
                log.exception("following chunk log %s failed, retrying", self.topic)
            if not self.caught_up:
                self._start_failed.set()
            await asyncio.sleep(self._retry_backoff_s)

    async def _follow(self) -> None:
        admin = AIOKafkaAdminClient(**client_options(self._kafka))
        consumer = AIOKafkaConsumer(
            **client_options(self._kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            max_partition_fetch_bytes=self._max_record_bytes,
        )
        try:
            await admin.start()
            await consumer.start()
            # aiokafka's group-less consumer cannot be stopped before its helper task has run.
            await asyncio.sleep(0)
            partitions = await self._wait_for_topic(admin)
            if self._snapshots is not None and not self._restore_tried:
                self._restore_tried = True
                await self._restore(consumer, self._snapshots, partitions)
            targets = await self._assign(consumer, partitions)
            started, last_progress, last_check = time.monotonic(), time.monotonic(), time.monotonic()
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=self._max_records)
                if batch:
                    await self._apply(consumer, batch)
                now = time.monotonic()
                if self.caught_up:
                    await self._snapshot_if_due(now)
                else:
                    if self.has_applied(targets):
                        self._caught_up.set()
                        # A view that had to replay the whole log leaves a snapshot at once, so
                        # that the next replica to start (or this one, restarted) need not.
                        fresh = self.started_from is None and self.index.num_chunks > 0
                        self._next_snapshot = now if fresh else now + self._snapshot_interval_s
                        log.info(
                            "BM25 index caught up with %s: %d chunks in %.1f s%s",
                            self.topic,
                            self.index.num_chunks,
                            now - started,
                            self._vectors_state(),
                        )
                    elif now - last_progress >= self._progress_interval_s:
                        last_progress = now
                        log.info(
                            "BM25 index replaying %s: %d of %d records",
                            self.topic,
                            sum(self._applied.values()),
                            sum(targets.values()),
                        )
                if now - last_check >= self._partition_check_s:
                    last_check = now
                    grown = await self._topic_partitions(admin)
                    if grown is not None and len(grown) > len(partitions):
                        partitions = grown
                        await self._assign(consumer, partitions)
        finally:
            await consumer.stop()
            await admin.close()

    # --- snapshots ---------------------------------------------------------------------------------

    async def _restore(self, consumer: AIOKafkaConsumer, store: SnapshotStore, partitions: list[int]) -> None:
        tps = [TopicPartition(self.topic, p) for p in partitions]
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        bounds = {tp.partition: (firsts[tp], ends[tp]) for tp in tps}
        loop = asyncio.get_running_loop()
        restored = await loop.run_in_executor(self._applier, store.restore, self.index, self.vectors, bounds)
        if restored is not None:
            self.started_from, offsets = restored
            self._applied.update(offsets)

    async def _snapshot_if_due(self, now: float) -> None:
        store = self._snapshots
        if store is None or (self._snapshot_task is not None and not self._snapshot_task.done()):
            return
        due = self._next_snapshot is not None and now >= self._next_snapshot
        if not (due or self._snapshot_requests):
            return
        self._next_snapshot = now + self._snapshot_interval_s
        requests, self._snapshot_requests = self._snapshot_requests, []
        loop = asyncio.get_running_loop()
        # On the applying thread, between two changes: the views as of the applied offsets.
        try:
            captured = await loop.run_in_executor(
                self._applier, store.capture, self.index, self.vectors, self.applied_offsets()
            )
        except OSError as exc:
            log.warning("could not take a snapshot of the views in %s: %s", store.root, exc)
            _answer(requests, None)
            return
        log.info("views captured for a snapshot in %.2f s (applying paused)", time.monotonic() - now)
        # Submitted now, so that a stop waits for it (and cuts it short) rather than leaking it.
        written = loop.run_in_executor(self._snapshot_writer, store.finish, captured, self._stopping)
        self._snapshot_task = asyncio.create_task(self._snapshot_written(captured, written, requests))

    async def _snapshot_written(
        self,
        captured: CapturedViews,
        written: asyncio.Future[Path],
        requests: list[asyncio.Future[Path | None]],
    ) -> None:
        started = time.monotonic()
        try:
            folder: Path | None = await written
            log.info("snapshot %s written in %.1f s", folder, time.monotonic() - started)
        except (OSError, ValueError) as exc:
            # A full disk, a folder removed meanwhile, a stop (InterruptedError), tantivy refusing.
            log.warning("could not write a snapshot of the views in %s: %s", captured.folder.parent, exc)
            folder = None
        except Exception:
            # Anything else too: a snapshot only saves replaying, and those waiting for it get None.
            log.exception("could not write a snapshot of the views in %s", captured.folder.parent)
            folder = None
        _answer(requests, folder)

    def _vectors_state(self) -> str:
        if self.vectors is None:
            return ""
        if self.vectors.complete:
            return f"; {self.vectors.num_vectors} vectors, searched here"
        return "; some chunks were logged without vectors: vector searches go to Chroma"

    async def _wait_for_topic(self, admin: AIOKafkaAdminClient) -> list[int]:
        while True:
            partitions = await self._topic_partitions(admin)
            if partitions:
                return partitions
            # Nothing was ever logged: the empty index is the whole view.
            if not self.caught_up:
                log.info("chunk log %s does not exist yet; the BM25 index starts empty", self.topic)
                self._caught_up.set()
            await asyncio.sleep(self._retry_backoff_s)

    async def _topic_partitions(self, admin: AIOKafkaAdminClient) -> list[int] | None:
        # Describing every topic: naming a missing one in a metadata request may create it, with
        # the broker's defaults instead of compaction.
        described: list[dict[str, Any]] = await admin.describe_topics()
        for entry in described:
            if entry["topic"] == self.topic and entry["error_code"] == 0:
                return sorted(p["partition"] for p in entry["partitions"])
        return None

    async def _assign(self, consumer: AIOKafkaConsumer, partitions: list[int]) -> dict[int, int]:
        """Assign every partition, resuming where this view left off; returns the end offsets."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            if tp.partition in self._applied:
                consumer.seek(tp, self._applied[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
                self._applied[tp.partition] = await consumer.position(tp)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return {tp.partition: end for tp, end in ends.items()}

    def _apply_changes(self, records: list[ConsumerRecord], threads: int) -> None:
        changes = [(record.key.decode(), record.value) for record in records]
        self.index.apply(changes)
        if self.vectors is not None:
            self.vectors.apply(
                [
                    VectorChange(chunk_id, True)
                    if value is None
                    else VectorChange(chunk_id, False, embedding_of(record.headers), _tenant_of(value))
                    for (chunk_id, value), record in zip(changes, records, strict=True)
                ],
                threads,
            )

    async def _apply(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        records = [record for records in batch.values() for record in records if record.key is not None]
        # Committing takes 10–200 ms of CPU in tantivy, and adding vectors some in hnswlib (both
        # release the GIL): off the loop, at low priority. The replay may use every core; then
        # searches need them.
        threads = 1 if self.caught_up else max(1, os.cpu_count() or 1)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._applier, self._apply_changes, records, threads)
        for tp in batch:
            self._applied[tp.partition] = await consumer.position(tp)
        async with self._progress:
            self._progress.notify_all()


def _answer(requests: list[asyncio.Future[Path | None]], folder: Path | None) -> None:
    for requested in requests:
        if not requested.done():
            requested.set_result(folder)


def _low_priority_thread(name: str, niceness: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, name, initializer=_lower_this_thread, initargs=(niceness,))


def _lower_this_thread(niceness: int) -> None:
    """Lower the calling thread's priority to ``niceness`` (threads of one process share their
    session's group, so against the API's other threads nice applies as such)."""
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
    except OSError as exc:  # not on Linux, or not allowed: the view is just as correct
        log.warning("could not lower the chunk log view's priority: %s", exc)


def _tenant_of(value: bytes) -> str | None:
    """The tenant in a chunk record's metadata; None for a chunk of no tenant, or a record the
    BM25 index refuses too (it logs why)."""
    # The BM25 index parses every record anyway; a second full parse only where a tenant can be,
    # so that replaying a log without tenants costs no more than before.
    if b'"tenant"' not in value:
        return None
    try:
        metadata = orjson.loads(value).get("metadata")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    tenant = metadata.get("tenant") if isinstance(metadata, dict) else None
    return tenant if isinstance(tenant, str) else None
