"""The faust app between ``docs.events`` and the compacted ``docs.changes``.

Per event: validate (invalid → ``docs.dlq``, original bytes and the reason in headers),
normalise, then ask the table whether it changes the document. Output is acknowledged by the
broker *before* the table is updated: a crash in between re-emits the event on replay (a
duplicate the idempotent consumers absorb) instead of remembering an event that was never
emitted (a lost change). For the same reason an event that fails to be handled stops the worker
(faust would ack it), and offsets the consumer skipped are read and handled (see ``continuity``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Protocol

import faust
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from schemas import DocumentEvent, EventOp, InvalidEvent, Settings
from schemas.dead_letter import DeadLetter
from schemas.logs import logging_config
from streams.changes.continuity import OffsetContinuity
from streams.changes.dedupe import Decision, DocumentState, decide, next_state
from streams.changes.membership import instance_id
from streams.changes.normalise import normalise_event
from streams.changes.watchdog import StallDetector
from streams.kafka_clients import faust_broker_options
from streams.lag import LagReader
from streams.publish_time import published_at_header
from streams.topic_records import read_partition_range

log = logging.getLogger(__name__)

#: Name of the faust table; its changelog topic is ``{app id}-documents-changelog``.
TABLE_NAME = "documents"

#: The worker's exit status when the watchdog found a partition without progress (EX_TEMPFAIL).
STALLED_EXIT_CODE = 75
#: The worker's exit status when an event could not be handled (EX_SOFTWARE).
FAILED_EXIT_CODE = 70
#: faust's web port of worker 0; worker i has the next i-th. Its web server is off, but the port is
#: part of the URL by which faust's assignor tells the workers apart.
WEB_PORT_BASE = 6066


class SourceRecord(Protocol):
    """A record of the events topic: faust's ``Message``, or aiokafka's for offsets faust skipped."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    #: Unix seconds in faust's ``Message``, milliseconds in aiokafka's ``ConsumerRecord``.
    @property
    def timestamp(self) -> float | None: ...


class ChangesStage:
    """Validates, normalises and deduplicates document events into the changes topic.

    ``worker_index`` tells apart the ``stage_workers`` workers of one group on a host."""

    def __init__(self, settings: Settings, worker_index: int = 0) -> None:
        self.settings = s = settings
        max_bytes = s.max_record_bytes
        datadir = s.state_dir.resolve() / "streams" / s.streams_app_id / f"worker-{worker_index}"
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            s.streams_app_id,
            **faust_broker_options(s.kafka),
            # The table is rebuilt from its changelog at start: no local files to lose or corrupt.
            store="memory://",
            processing_guarantee="at_least_once",
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            web_enabled=False,
            web_port=WEB_PORT_BASE + worker_index,
            autodiscover=False,
            datadir=str(datadir),
            consumer_auto_offset_reset="earliest",
            # Static membership: the supervisor removes a worker that died from the group at
            # once, instead of its partitions waiting out the session timeout (see membership).
            consumer_group_instance_id=instance_id(s.streams_app_id, worker_index),
            # The group's description then says which worker holds which partitions.
            broker_client_id=instance_id(s.streams_app_id, worker_index),
            # The other workers keep copies of the table, so taking over partitions needs no replay.
            table_standby_replicas=s.streams_standby_replicas,
            broker_session_timeout=s.streams_session_timeout_s,
            # A live worker hears of a rebalance at its next heartbeat: the sooner, the shorter
            # the pause when another worker dies.
            broker_heartbeat_interval=min(1.0, s.streams_session_timeout_s / 3),
            broker_commit_interval=s.streams_commit_interval_s,
            producer_acks=-1,
            producer_max_request_size=max_bytes,
            consumer_max_fetch_size=max_bytes,
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
        raw |= {"key_serializer": "raw", "value_serializer": "raw"}
        self.events_topic = self.app.topic(s.events_topic, **raw)
        self.changes_topic = self.app.topic(s.changes_topic, **raw)
        self.dlq_topic = self.app.topic(s.dlq_topic, **raw)
        self.documents = self.app.Table(
            TABLE_NAME,
            default=None,
            partitions=s.partitions,
            schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
            help="doc_id → hash of the content last emitted (null once deleted) and newest version seen",
        )
        self.counts: Counter[str] = Counter()
        self.app.agent(self.events_topic, name="ragstream.changes")(self._process)
        self.app.timer(30.0)(self._log_counts)
        self._parent_pid = os.getppid()
        self._stalls = StallDetector(s.streams_stall_timeout_s)
        self._lag = LagReader(s.kafka, client_id=f"{s.streams_app_id}-watchdog")
        self.app.timer(min(5.0, s.streams_stall_timeout_s / 3))(self._watch)
        self._continuity = OffsetContinuity()
        self.app.on_partitions_revoked.connect(self._forget_revoked)

    async def _process(self, stream: faust.StreamT) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            try:
                await self.handle(message)
            except Exception:
                # faust acks the event an agent fails on and would commit past it: a lost change.
                # Exiting first leaves it uncommitted, and the restarted worker replays it.
                log.exception(
                    "handling %s[%d]@%d failed; exiting to restart from the committed offsets",
                    message.topic, message.partition, message.offset,
                )  # fmt: skip
                os._exit(FAILED_EXIT_CODE)
            yield None

    async def handle(self, message: SourceRecord) -> list[Decision | None]:
        """Process one source record, after any the consumer skipped before it; returns the
        decision for each (None for one dead-lettered)."""
        decisions = []
        for skipped in await self._skipped_before(message):
            decisions.append(await self._handle_one(skipped))
            self._acknowledge_skipped(skipped)
        decisions.append(await self._handle_one(message))
        return decisions

    def _acknowledge_skipped(self, record: ConsumerRecord) -> None:
        """Tell faust's consumer that a record it skipped is handled: else its commits stop short
        of that offset for good, and the watchdog restarts the worker."""
        handled = faust.types.tuples.Message(
            record.topic, record.partition, record.offset, record.timestamp / 1000, record.timestamp_type,
            list(record.headers), record.key, record.value, None,
        )  # fmt: skip
        self.app.consumer.ack(handled)

    async def _skipped_before(self, message: SourceRecord) -> list[ConsumerRecord]:
        partition = message.partition
        if not self._continuity.knows(partition):
            await self._lag.start()
            resume = await self._lag.resume_offset(message.topic, self.settings.streams_app_id, partition)
            self._continuity.start_at(partition, resume)
        skipped = self._continuity.skipped_before(partition, message.offset)
        if not skipped:
            return []
        records = await read_partition_range(
            self.settings.kafka, message.topic, partition, skipped.start, skipped.stop
        )
        log.warning(
            "the consumer skipped offsets %d to %d of %s[%d] (%d records); handling them first",
            skipped.start, skipped.stop - 1, message.topic, partition, len(records),
        )  # fmt: skip
        return records

    def _forget_revoked(self, _sender: Any, /, *args: Any, signal: Any = None, **_: Any) -> None:
        (revoked,) = args  # faust sends the set of TopicPartitions taken away
        self._continuity.forget(tp.partition for tp in revoked if tp.topic == self.settings.events_topic)

    async def _handle_one(self, message: SourceRecord) -> Decision | None:
        """Process one source record; returns the decision, or None if it was dead-lettered."""
        try:
            document = self._decode(message.value)
        except InvalidEvent as exc:
            await self._dead_letter(message, exc.reason)
            return None
        state = DocumentState.from_dict(self.documents.get(document.doc_id))
        decision = decide(state, document)
        self.counts[decision.value] += 1
        if decision is Decision.EMIT:
            await self._emit(document, _published_at(message))
        else:
            log.debug("skipping %s v%d: %s", document.doc_id, document.version, decision.value)
        updated = next_state(state, document, decision)
        if updated != state:
            self.documents[document.doc_id] = updated.to_dict()
        return decision

    def _decode(self, value: bytes | None) -> DocumentEvent:
        if value is None:
            raise InvalidEvent("empty record (no value)")
        limit = self.settings.max_document_bytes
        if len(value) > limit:
            raise InvalidEvent(f"event of {len(value)} bytes is above the limit of {limit} bytes")
        document = normalise_event(DocumentEvent.from_json(value))
        if document.op is EventOp.UPSERT and not document.content:
            raise InvalidEvent(f"no text left after normalising its {document.content_type} content")
        return document

    async def _emit(self, document: DocumentEvent, published_at: float | None) -> None:
        key = document.doc_id.encode()
        # The record is stamped now; the consumers measure freshness from the event's own time.
        headers = [published_at_header(published_at)] if published_at is not None else None
        await (await self.changes_topic.send(key=key, value=document.to_json(), headers=headers))
        if document.op is EventOp.DELETE:
            # The tombstone lets compaction forget the document. Sent only once the delete is
            # acknowledged, so that a retried send can never put it before the delete.
            await (await self.changes_topic.send(key=key, value=None))

    async def _dead_letter(self, message: SourceRecord, reason: str) -> None:
        letter = DeadLetter(
            reason, InvalidEvent.__name__, message.topic, message.partition, message.offset,
            message.key, message.value,
        )  # fmt: skip
        log.warning("dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        self.counts["dead_lettered"] += 1
        await (await self.dlq_topic.send(key=letter.key, value=letter.value, headers=letter.headers()))

    async def _watch(self) -> None:
        """Exit when the supervisor is gone, or when a partition of ours has stopped progressing
        (see ``watchdog``): the supervisor restarts the worker from the committed offsets."""
        if os.getppid() != self._parent_pid:
            log.error("the supervising process is gone; the worker stops with it")
            os._exit(1)
        if self.app.rebalancing or self.app.in_recovery:
            self._stalls.reset()
            return
        ours = {
            tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.settings.events_topic
        }
        try:
            await self._lag.start()
            lags = await self._lag.read(self.settings.events_topic, self.settings.streams_app_id)
        except KafkaError as exc:
            # The broker is away: no progress is expected, and faust reconnects by itself.
            log.warning("watchdog: cannot read the group's offsets: %s", exc)
            self._stalls.reset()
            return
        stalls = self._stalls.observe(lag for lag in lags if lag.partition in ours)
        if stalls:
            log.error(
                "no progress on %s of %s; exiting so that the worker is restarted from the committed offsets",
                "; ".join(map(str, stalls)),
                self.settings.events_topic,
            )
            os._exit(STALLED_EXIT_CODE)

    async def _log_counts(self) -> None:
        if self.counts:
            log.info("events so far: %s", dict(sorted(self.counts.items())))


def _published_at(message: SourceRecord) -> float | None:
    """Unix seconds of the event's record on the events topic."""
    stamp = message.timestamp
    if stamp is None or stamp < 0:
        return None
    return stamp / 1000 if isinstance(message, ConsumerRecord) else stamp


def run_stage(settings: Settings, worker_index: int = 0, loglevel: str = "INFO") -> None:
    """Create the topics, then run stage worker ``worker_index`` as a faust worker until SIGINT
    or SIGTERM."""
    from streams.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    # faust's worker drives the current event loop; asyncio.run left none behind.
    asyncio.set_event_loop(asyncio.new_event_loop())
    stage = ChangesStage(settings, worker_index)
    # faust's worker sets logging up again as it starts: it is handed the same configuration.
    config = logging_config("stage", settings.log_format, loglevel)
    faust.Worker(stage.app, loglevel=loglevel, logging_config=config).execute_from_commandline()
