"""One Kafka consumer of the indexing group: fetch, index, then commit.

Three stages with bounded hand-offs: a fetch task fills a small queue and pauses the partitions
while it is full (so memory stays bounded and Kafka is still polled however slow embedding is);
the worker plans a batch (chunk, diff, embed) while the previous batch is written to Chroma;
offsets are committed only after every write of their batch was acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError

from consumers.batch_timings import BatchTimings
from consumers.chunk_log import publish_chunk_changes
from consumers.errors import EventRejected, IndexingError, IndexUnavailable, event_data_errors, kafka_calls
from consumers.fetch_queue import FetchedBatch, FetchQueue
from consumers.indexer import BatchResult, DocumentIndexer
from consumers.memory import release_free_heap
from consumers.sink import ChromaSink, ChunkChanges
from consumers.stats import ConsumerCounters, freshness_of
from engines.chunking import Chunker
from engines.embedder import Embedder, tokenise_seconds
from schemas import DocumentEvent, InvalidEvent, Settings
from schemas.dead_letter import DeadLetter
from schemas.fault_injection import crash_before_commit
from streams.dlq import send_dead_letters
from streams.kafka_clients import client_options

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 0.5
RETRY_BACKOFF_MAX_S = 30.0
#: How long the work loop waits for a fetched batch before it looks at its stop flag again.
QUEUE_POLL_S = 0.2


@dataclass
class PlannedBatch:
    """A fetched batch with its index changes computed (and embedded), not yet written."""

    generation: int
    offsets: dict[TopicPartition, int]
    records: list[ConsumerRecord]
    dead: list[DeadLetter]
    doc_ids: set[str]
    changes: ChunkChanges
    result: BatchResult
    started: float
    planned_s: float
    timings: BatchTimings
    #: Set when planning the batch as a whole failed for a reason a retry cannot fix.
    failure: EventRejected | None = None


def decode_records(
    records: list[ConsumerRecord], max_bytes: int, skip_tombstones: bool = False
) -> tuple[list[DocumentEvent], list[DeadLetter]]:
    """Split a batch into valid events and dead letters that say why each one was refused.

    With ``skip_tombstones`` (reading the compacted changes topic) a record without a value is a
    tombstone that follows a delete event already in the batch or before it: nothing to do.
    """
    events: list[DocumentEvent] = []
    dead: list[DeadLetter] = []
    for record in records:
        value: bytes | None = record.value
        if value is None and skip_tombstones:
            continue
        try:
            events.append(_decode(value, max_bytes))
        except InvalidEvent as exc:
            dead.append(DeadLetter.for_record(record, exc.reason, type(exc).__name__))
    return events, dead


def _decode(value: bytes | None, max_bytes: int) -> DocumentEvent:
    if value is None:
        raise InvalidEvent("empty record (no value)")
    if len(value) > max_bytes:
        raise InvalidEvent(f"event of {len(value)} bytes is above the limit of {max_bytes} bytes")
    return DocumentEvent.from_json(value)


class IndexingConsumer:
    """Consumes ``docs.events`` as a member of the indexing group.

    Offsets are committed only after Chroma acknowledged every write of the batch (and the
    dead-letter topic acknowledged every refused event), so a crash at any point replays
    from the last commit; the indexer's idempotence turns the replay into a no-op.
    """

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self._settings = settings
        self._sink = ChromaSink(settings)
        self._indexer = DocumentIndexer(
            Chunker(settings.chunk_size, settings.chunk_overlap), embedder, self._sink
        )
        self.stats = ConsumerCounters(consumer_group=settings.consumer_group)
        self._queue = FetchQueue(settings.max_queued_batches, settings.max_queued_bytes)
        # Bumped whenever fetched-but-unwritten work must be dropped (rebalance, retry):
        # a batch planned under an older generation is never written or committed.
        self._generation = 0
        self._writing: asyncio.Task[None] | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._stack: AsyncExitStack | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._skip_tombstones = settings.consumer_input == "changes"

    async def start(self) -> None:
        if self._stack is not None:
            return
        stack = AsyncExitStack()
        s = self._settings
        await stack.enter_async_context(self._sink)
        self._producer = AIOKafkaProducer(
            **client_options(s.kafka),
            acks="all",
            enable_idempotence=True,
            max_request_size=s.max_record_bytes,
        )
        await stack.enter_async_context(self._producer)
        self._consumer = AIOKafkaConsumer(
            **client_options(s.kafka),
            group_id=s.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.max_record_bytes,
            fetch_max_bytes=max(52428800, s.max_record_bytes),
        )
        self._consumer.subscribe([s.input_topic], listener=_FinishOrAbandon(self))
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
        """Consume until ``request_stop``.

        Errors decide by their type (``consumers.errors``): ``IndexUnavailable`` (Chroma or Kafka
        unreachable, overloaded) rewinds to the committed offsets and tries again after a capped
        exponential backoff, so nothing is skipped; an ``EventRejected`` event was dead-lettered
        before it got here; any other error stops the consumer, with nothing committed past it.
        """
        self._fetcher = fetcher = asyncio.create_task(self._fetch_loop())
        backoff = RETRY_BACKOFF_S
        try:
            while not self._stopping.is_set():
                try:
                    await self._work_loop()
                except IndexUnavailable as exc:
                    log.warning("%s; retrying from the committed offsets in %.1fs", exc, backoff)
                    await self._abandon_uncommitted()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                    await self._rewind()
                else:
                    backoff = RETRY_BACKOFF_S
        finally:
            fetcher.cancel()
            # Its error, if it ended on one, was logged there and raised by the work loop.
            await asyncio.wait([fetcher])
            if not fetcher.cancelled():
                fetcher.exception()

    async def _fetch_loop(self) -> None:
        """Fetch until stopped; an error no retry fixes ends the task, and the work loop raises it."""
        try:
            await self._fetch_until_stopped()
        except Exception:
            log.exception("fetching failed for a reason no retry fixes; the consumer stops")
            raise

    async def _fetch_until_stopped(self) -> None:
        """Poll Kafka continuously; while the queue is full, poll with every partition paused."""
        assert self._consumer is not None
        s = self._settings
        while not self._stopping.is_set():
            assigned = self._consumer.assignment()
            if self._queue.full():
                self._consumer.pause(*assigned)
            elif self._consumer.paused():
                self._consumer.resume(*self._consumer.paused())
            generation = self._generation
            try:
                with kafka_calls("fetching records"):
                    batch = await self._consumer.getmany(
                        timeout_ms=s.fetch_timeout_ms, max_records=s.fetch_max_records
                    )
            except IndexUnavailable as exc:
                log.warning("%s; fetching again in %.1fs", exc, RETRY_BACKOFF_S)
                await asyncio.sleep(RETRY_BACKOFF_S)
                continue
            if not batch:
                continue
            if generation == self._generation:
                self._queue.put(generation, batch)
            else:
                # Fetched across a rebalance or a rewind: the records may come from positions
                # set after it, which have now moved past them. Dropped without a seek, they
                # would be skipped (the next commit would pass over them), so fetch again from
                # the committed offsets; replaying is always safe.
                await self._refetch(set(batch))

    async def _work_loop(self) -> None:
        """Plan each queued batch while the previous one is written; commits stay in offset order."""
        writing_docs: set[str] = set()
        # Idle time counts against the batch that ends it.
        timings = BatchTimings()
        try:
            while not self._stopping.is_set():
                if self._fetcher is not None and self._fetcher.done():
                    await self._fetcher  # it ends early only on an error: raised here
                with timings.measure("queue_wait"):
                    fetched = await self._next_fetched()
                if self._writing is not None and self._writing.done():
                    await self._writing  # surfaces its error, if any
                    self._writing = None
                if fetched is None or fetched.generation != self._generation:
                    continue
                planned = await self._plan(fetched.generation, fetched.batch, writing_docs, timings)
                timings = BatchTimings()
                if self._writing is not None:
                    with planned.timings.measure("write_wait"):
                        await self._writing
                    self._writing = None
                if planned.generation != self._generation:
                    log.info("dropping a planned batch: its partitions were revoked or rewound")
                    continue
                self._writing = asyncio.create_task(self._finish(planned))
                writing_docs = planned.doc_ids
        finally:
            if self._writing is not None:
                await self._writing
                self._writing = None

    async def _next_fetched(self) -> FetchedBatch | None:
        """The next queued batch, or None after a short wait without one: the work loop then
        looks at its stop flag and its write in flight."""
        try:
            async with asyncio.timeout(QUEUE_POLL_S):
                fetched = await self._queue.get()
        except TimeoutError:
            return None
        return fetched

    async def _plan(
        self,
        generation: int,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        busy: set[str],
        timings: BatchTimings,
    ) -> PlannedBatch:
        started = time.perf_counter()
        records = [record for partition_records in batch.values() for record in partition_records]
        with timings.measure("decode"):
            events, dead = decode_records(records, self._settings.max_document_bytes, self._skip_tombstones)
        doc_ids = {event.doc_id for event in events}
        if self._writing is not None and doc_ids & busy:
            # Diffing reads the index: it must see the earlier batch's writes to these documents.
            with timings.measure("write_wait"):
                await self._writing
            self._writing = None
        offsets = {tp: partition_records[-1].offset + 1 for tp, partition_records in batch.items()}
        failure: EventRejected | None = None
        tokenised_before = tokenise_seconds()
        try:
            with event_data_errors("planning a batch"):
                changes, result = await self._indexer.plan(events, timings)
        except EventRejected as exc:
            # Written (event by event) in offset order, after the batch before it.
            changes, result, failure = ChunkChanges(), BatchResult(), exc
        # Tokenising happens inside encode: moved from its share to its own part.
        tokenised = tokenise_seconds() - tokenised_before
        timings.add("tokenise", tokenised)
        timings.add("encode", -min(tokenised, timings.encode))
        planned_s = time.perf_counter() - started
        return PlannedBatch(
            generation, offsets, records, dead, doc_ids, changes, result, started, planned_s, timings, failure
        )

    async def _finish(self, planned: PlannedBatch) -> None:
        """Write the chunk log, Chroma and the dead letters, and only then commit."""
        assert self._consumer is not None and self._producer is not None
        write_started = time.perf_counter()
        try:
            await self._write_planned(planned)
        except EventRejected as exc:
            log.warning("batch refused (%s); applying its events one by one", exc)
            planned.dead.extend(await self._apply_one_by_one(planned.records))
        written_s = time.perf_counter() - write_started
        if crash_before_commit():
            log.warning("chaos: dying between the write and the commit")
            os._exit(137)
        for letter in planned.dead:
            log.warning(
                "dead-lettering %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason
            )
        # A dead letter the topic refuses stops the consumer (not an IndexUnavailable): its
        # event could be neither indexed nor kept, and committing would pass over it.
        with planned.timings.measure("dead_letters"), kafka_calls("dead-lettering refused events"):
            await send_dead_letters(self._producer, self._settings.dlq_topic, planned.dead)
        with planned.timings.measure("commit"), kafka_calls("committing offsets"):
            try:
                await self._consumer.commit(planned.offsets)
            except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
                # The partitions moved to another member. Our writes are done and idempotent;
                # the new owner replays from the last commit to the same state.
                log.warning("offsets not committed, the group rebalanced: %s", exc)
        seconds = time.perf_counter() - planned.started
        log.info(
            "batch of %d events: %d chunks embedded, %d unchanged, %d deleted; "
            "plan %.2fs, write %.2fs, total %.2fs; critical path %.2fs; %s",
            len(planned.records),
            planned.result.chunks_embedded,
            planned.result.chunks_skipped,
            planned.result.chunks_deleted,
            planned.planned_s,
            written_s,
            seconds,
            planned.timings.critical_path(),
            planned.timings.summary(),
        )
        release_free_heap()
        self.stats.record_batch(
            len(planned.records),
            len(planned.dead),
            planned.result,
            seconds,
            planned.timings,
            # Measured after the commit: the chunks are in Chroma, the events will not be read again.
            freshness_of(planned.records, planned.dead, time.time()),
        )
        try:
            with kafka_calls("publishing the consumer's stats"):
                await self._producer.send(
                    self._settings.stats_topic,
                    value=self.stats.to_json(),
                    key=self.stats.consumer_id.encode(),
                )
        except IndexingError as exc:
            # Stats are advisory: a lost stats message must never stop indexing.
            log.warning("%s; indexing goes on, the next batch's stats carry these counts too", exc)

    async def _write_planned(self, planned: PlannedBatch) -> None:
        if planned.failure is not None:
            raise planned.failure
        await self._write(planned.changes, planned.timings)

    async def _write(self, changes: ChunkChanges, timings: BatchTimings | None = None) -> None:
        assert self._producer is not None
        timings = timings if timings is not None else BatchTimings()
        with event_data_errors("writing a batch"):
            if changes:
                with timings.measure("chunk_log"):
                    await publish_chunk_changes(self._producer, self._settings.chunks_topic, changes)
            with timings.measure("chroma_write"):
                await self._indexer.write(changes)

    async def _apply_one_by_one(self, records: list[ConsumerRecord]) -> list[DeadLetter]:
        """Find the events that cannot be indexed: apply each alone, dead-letter those refused
        (``EventRejected``). Returns those dead letters; any other error is raised."""
        dead: list[DeadLetter] = []
        for record in records:
            events, _ = decode_records([record], self._settings.max_document_bytes, self._skip_tombstones)
            if not events:
                continue  # already dead-lettered by the batch decode
            try:
                with event_data_errors("planning an event"):
                    changes, _result = await self._indexer.plan(events)
                await self._write(changes)
            except EventRejected as exc:
                dead.append(DeadLetter.for_record(record, f"cannot be indexed: {exc}", exc.error_class))
        return dead

    async def _abandon_uncommitted(self) -> None:
        """Drop every fetched batch not yet being written; let a write in progress finish."""
        self._generation += 1
        self._queue.clear()
        if self._writing is not None:
            writing, self._writing = self._writing, None
            try:
                await writing
            except IndexingError as exc:
                log.warning("the batch in flight failed (%s); not committed, it is fetched again", exc)

    async def _refetch(self, partitions: set[TopicPartition]) -> None:
        """Rewind those of ``partitions`` still assigned; retried until the coordinator answers."""
        rewound = await self._rewind(partitions)
        log.info("a fetch crossed a rebalance or rewind: refetched %d partition(s)", rewound)

    async def _rewind(self, partitions: set[TopicPartition] | None = None) -> int:
        """Seek those of ``partitions`` (default: all) still assigned back to their committed
        offsets, tried again while Kafka is unavailable; returns how many there were."""
        assert self._consumer is not None
        while not self._stopping.is_set():
            assigned = self._consumer.assignment()
            ours = assigned if partitions is None else partitions & assigned
            try:
                await self._rewind_to_committed(ours)
            except IndexUnavailable as exc:
                log.warning("%s; trying again in %.1fs", exc, RETRY_BACKOFF_S)
                await asyncio.sleep(RETRY_BACKOFF_S)
            else:
                return len(ours)
        return 0

    async def _rewind_to_committed(self, partitions: Iterable[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in partitions:
            with kafka_calls(f"rewinding {tp.topic}[{tp.partition}] to its committed offset"):
                committed = await self._consumer.committed(tp)
                if tp not in self._consumer.assignment():
                    continue  # revoked meanwhile: its next owner starts from the committed offset
                if committed is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, committed)


class _FinishOrAbandon(ConsumerRebalanceListener):
    """On revocation, the batch being written finishes (and commits); every other fetched batch
    is abandoned, so the next owner never races this member on the same documents."""

    def __init__(self, owner: IndexingConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            await self._owner._abandon_uncommitted()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Positions start from the committed offsets: nothing to do."""
