"""One Kafka consumer of the indexing group: fetch a batch, index it, then commit its offsets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError

from consumers.chunk_log import publish_chunk_changes
from consumers.chunking import Chunker
from consumers.embedder import Embedder
from consumers.indexer import BatchResult, DocumentIndexer
from consumers.sink import ChromaSink, ChunkChanges
from consumers.stats import ConsumerStats
from schemas import DocumentEvent, InvalidEvent, Settings
from streams.dlq import DeadLetter, send_dead_letters

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 0.5
RETRY_BACKOFF_MAX_S = 30.0


@dataclass
class PlannedBatch:
    """A fetched batch with its index changes computed (and embedded), not yet written."""

    offsets: dict[TopicPartition, int]
    records: int
    dead: list[DeadLetter]
    doc_ids: set[str]
    changes: ChunkChanges
    result: BatchResult
    started: float
    planned_s: float


def decode_records(
    records: list[ConsumerRecord], max_bytes: int
) -> tuple[list[DocumentEvent], list[DeadLetter]]:
    """Split a batch into valid events and dead letters that say why each one was refused."""
    events: list[DocumentEvent] = []
    dead: list[DeadLetter] = []
    for record in records:
        value: bytes | None = record.value
        try:
            if value is None:
                raise InvalidEvent("empty record (no value)")
            if len(value) > max_bytes:
                raise InvalidEvent(f"event of {len(value)} bytes is above the limit of {max_bytes} bytes")
            events.append(DocumentEvent.from_json(value))
        except InvalidEvent as exc:
            dead.append(
                DeadLetter(
                    reason=exc.reason,
                    error_class=type(exc).__name__,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=value,
                )
            )
    return events, dead


class IndexingConsumer:
    """Consumes ``docs.events`` as a member of the indexing group.

    Offsets are committed only after Chroma acknowledged every write of the batch (and the
    dead-letter topic acknowledged every refused event), so a crash at any point replays
    from the last commit; the indexer's idempotence turns the replay into a no-op.
    """

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self._settings = settings
        self._embedder = embedder
        self._sink = ChromaSink(settings.chroma_host, settings.chroma_port, settings.collection)
        self._indexer = DocumentIndexer(
            Chunker(settings.chunk_size, settings.chunk_overlap), embedder, self._sink
        )
        self.stats = ConsumerStats()
        self._stack: AsyncExitStack | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        if self._stack is not None:
            return
        stack = AsyncExitStack()
        s = self._settings
        await stack.enter_async_context(self._sink)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            max_request_size=s.max_document_bytes + 1024 * 1024,
        )
        await stack.enter_async_context(self._producer)
        self._consumer = AIOKafkaConsumer(
            s.events_topic,
            bootstrap_servers=s.bootstrap_servers,
            group_id=s.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.max_document_bytes + 1024 * 1024,
            fetch_max_bytes=max(52428800, s.max_document_bytes + 1024 * 1024),
            # Embedding a batch can take minutes on a small CPU; heartbeats run in the
            # background, and this bounds the time between two fetches.
            max_poll_interval_ms=600_000,
        )
        await stack.enter_async_context(self._consumer)
        self._stack = stack

    async def stop(self) -> None:
        self._stopping.set()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def request_stop(self) -> None:
        """Finish (and commit) the batch in flight, then leave the loop."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until ``request_stop``; a failed batch is retried from the last commit.

        Nothing is skipped on failure: the partitions are rewound to their committed offsets
        and fetched again after a capped exponential backoff.
        """
        backoff = RETRY_BACKOFF_S
        while not self._stopping.is_set():
            try:
                await self._consume()
                return
            except Exception:
                log.exception("batch failed; retrying from the committed offsets in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                await self._rewind_to_committed()

    async def _consume(self) -> None:
        """Fetch → plan (chunk, diff, embed) → write → commit, with the write and commit of one
        batch overlapping the embedding of the next: the CPU keeps embedding while Chroma writes.
        """
        assert self._consumer is not None, "start() first"
        s = self._settings
        writing: asyncio.Task[None] | None = None
        writing_docs: set[str] = set()
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(
                    timeout_ms=s.fetch_timeout_ms, max_records=s.fetch_max_records
                )
                if writing is not None and writing.done():
                    await writing  # surfaces its error, if any
                    writing = None
                if not batch:
                    continue
                planned = await self._plan(
                    batch, wait_for=writing if writing_docs else None, busy=writing_docs
                )
                if writing is not None:
                    await writing  # commits stay in offset order
                writing, writing_docs = asyncio.create_task(self._finish(planned)), planned.doc_ids
        finally:
            if writing is not None:
                await writing

    async def _plan(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        wait_for: asyncio.Task[None] | None,
        busy: set[str],
    ) -> PlannedBatch:
        started = time.perf_counter()
        records = [record for partition_records in batch.values() for record in partition_records]
        events, dead = decode_records(records, self._settings.max_document_bytes)
        doc_ids = {event.doc_id for event in events}
        if wait_for is not None and doc_ids & busy:
            # Diffing reads the index: it must see the earlier batch's writes to these documents.
            await wait_for
        changes, result = await self._indexer.plan(events)
        offsets = {tp: partition_records[-1].offset + 1 for tp, partition_records in batch.items()}
        planned_s = time.perf_counter() - started
        return PlannedBatch(offsets, len(records), dead, doc_ids, changes, result, started, planned_s)

    async def _finish(self, planned: PlannedBatch) -> None:
        """Write, dead-letter, and only then commit."""
        assert self._consumer is not None and self._producer is not None
        write_started = time.perf_counter()
        if planned.changes:
            await publish_chunk_changes(self._producer, self._settings.chunks_topic, planned.changes)
        await self._indexer.write(planned.changes)
        written_s = time.perf_counter() - write_started
        for letter in planned.dead:
            log.warning(
                "dead-lettering %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason
            )
        await send_dead_letters(self._producer, self._settings.dlq_topic, planned.dead)
        try:
            await self._consumer.commit(planned.offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # The partitions moved to another member mid-batch. Our writes are done and
            # idempotent; the new owner replays from the last commit to the same state.
            log.warning("offsets not committed, the group rebalanced: %s", exc)
        seconds = time.perf_counter() - planned.started
        log.info(
            "batch of %d events: %d chunks embedded, %d unchanged, %d deleted; "
            "plan %.2fs, write %.2fs, total %.2fs",
            planned.records,
            planned.result.chunks_embedded,
            planned.result.chunks_skipped,
            planned.result.chunks_deleted,
            planned.planned_s,
            written_s,
            seconds,
        )
        self.stats.record_batch(planned.records, len(planned.dead), planned.result, seconds)
        with contextlib.suppress(Exception):
            # Stats are advisory: a lost stats message must never stop indexing.
            await self._producer.send(
                self._settings.stats_topic, value=self.stats.to_json(), key=self.stats.consumer_id.encode()
            )

    async def _rewind_to_committed(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
