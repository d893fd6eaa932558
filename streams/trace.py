"""One document's path through every hop, with times: why is my edit not searchable yet?

A version of a document is published to the events topic, passes the changes stage into the
changes topic, is chunked and embedded by a consumer batch (its chunks' ``indexed_at``), written to
the chunk log, then to Chroma, and becomes visible to search once an API replica's views have
applied its chunk log records. ``read_trace`` reads each of those from the topics' records and
the index; ``trace_versions`` (pure) lines them up per version and says where the newest waits.

Every record of a document is keyed by its doc_id in the events and changes topics, so only the
one partition the producers' partitioner (Kafka's murmur2) gives that key is read, from its end
backwards. Chunk log records are keyed by chunk id: the chunk ids of a version are computed the
way the consumers compute them (same chunker, same settings), and only their partitions are read,
from the time the oldest traced version reached the changes topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from engines.chunking import Chunker
from schemas import DocumentEvent, InvalidEvent, Settings
from streams.hops import pipeline_hops
from streams.kafka_clients import client_options
from streams.lag import LagReader

if TYPE_CHECKING:
    from chromadb.api.models.AsyncCollection import AsyncCollection

__all__ = [
    "DocumentTrace",
    "HopStep",
    "VersionTrace",
    "key_partition",
    "read_trace",
    "trace_versions",
]

#: Records of one partition read per step backwards while looking for a document's records.
_WINDOW = 500


def key_partition(key: str, partitions: int) -> int:
    """The partition the producers' default partitioner (Kafka's murmur2) sends ``key`` to."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class HopStep:
    """One hop of one version: where it was seen (``at``: Unix seconds, None if no time is known)."""

    hop: str
    at: float | None
    detail: str


@dataclass
class VersionTrace:
    version: int
    event_id: str
    op: str
    steps: list[HopStep] = field(default_factory=list)
    #: Where this version waits, and why; None once it is searchable (or superseded).
    waiting: str | None = None
    searchable: bool | None = None


@dataclass
class DocumentTrace:
    doc_id: str
    versions: list[VersionTrace]
    #: Where the document's records live: topic → partition.
    partitions: dict[str, int]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, record: ConsumerRecord) -> _Record:
        return cls(
            record.topic, record.partition, record.offset, record.timestamp / 1000, record.key, record.value
        )

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class _Committed:
    """A hop's consumer group and its committed offset on the partition a record waits in."""

    group: str
    offset: int | None


@dataclass
class TraceInputs:
    """What ``read_trace`` read: the records of the document on each hop, and where each hop's
    consumer group stands on the document's partitions."""

    events: list[_Record]
    changes: list[_Record] | None  # None without the changes stage
    chunks: list[_Record]
    chroma: dict[str, dict[str, Any]]  # chunk id → metadata
    stage_committed: _Committed | None
    indexer_committed: _Committed
    chunk_ids: dict[int, set[str]]  # version → its chunk ids


def _event(record: _Record) -> DocumentEvent | None:
    try:
        return None if record.value is None else DocumentEvent.from_json(record.value)
    except InvalidEvent:
        return None


def _waits_at(committed: _Committed, record: _Record, what: str) -> str:
    stands = "has never committed" if committed.offset is None else f"has committed offset {committed.offset}"
    return (
        f"waits for {what}: group {committed.group!r} {stands} on {record.topic}[{record.partition}], "
        f"and this record is at offset {record.offset}"
    )


def _passed(committed: _Committed, record: _Record) -> bool:
    return committed.offset is not None and committed.offset > record.offset


def trace_versions(inputs: TraceInputs) -> list[VersionTrace]:
    """Each version published, newest first, with the hops it has passed and where it waits."""
    changes_by_id = {}
    for record in inputs.changes or []:
        event = _event(record)
        if event is not None:
            changes_by_id[event.event_id] = record
    stored_versions = {int(meta.get("version", -1)) for meta in inputs.chroma.values()}
    newest_indexed = max(stored_versions, default=-1)
    traces = []
    for record in sorted(inputs.events, key=lambda r: r.offset, reverse=True):
        event = _event(record)
        if event is None:
            trace = VersionTrace(-1, "", "invalid")
            trace.steps.append(HopStep("published", record.timestamp, record.where))
            trace.waiting = "not a valid event: dead-lettered by the stage (see `ragstream dlq list`)"
            traces.append(trace)
            continue
        traces.append(_trace_one(inputs, record, event, changes_by_id, newest_indexed))
    return traces


def _trace_one(
    inputs: TraceInputs,
    published: _Record,
    event: DocumentEvent,
    changes_by_id: dict[str, _Record],
    newest_indexed: int,
) -> VersionTrace:
    trace = VersionTrace(event.version, event.event_id, event.op.value)
    trace.steps.append(HopStep("published", published.timestamp, published.where))
    source = published
    if inputs.changes is not None:
        assert inputs.stage_committed is not None
        changed = changes_by_id.get(event.event_id)
        if changed is None:
            if _passed(inputs.stage_committed, published):
                trace.waiting = (
                    "the changes stage passed it without emitting it: no change from the version "
                    "before, older than one it had, or dead-lettered (see `ragstream dlq list`)"
                )
            else:
                trace.waiting = _waits_at(inputs.stage_committed, published, "the changes stage")
            return trace
        trace.steps.append(HopStep("changes", changed.timestamp, changed.where))
        source = changed
    if newest_indexed > event.version:
        trace.waiting = None
        trace.steps.append(HopStep("superseded", None, f"the index holds version {newest_indexed}"))
        return trace
    if event.op.value == "delete":
        return _trace_delete(inputs, trace, source)
    wanted = inputs.chunk_ids.get(event.version, set())
    logged = [
        r
        for r in inputs.chunks
        if r.key is not None and r.key.decode() in wanted and _version_of(r) == event.version
    ]
    stored = {
        cid: meta for cid, meta in inputs.chroma.items() if int(meta.get("version", -1)) == event.version
    }
    if not logged and not stored:
        if _passed(inputs.indexer_committed, source):
            trace.waiting = (
                "the indexing consumers passed it without writing its chunks: a newer version of the "
                "document came in the same batch, or the consumers' chunk settings differ from these"
            )
        else:
            trace.waiting = _waits_at(inputs.indexer_committed, source, "the indexing consumers")
        return trace
    planned = max((float(meta.get("indexed_at", 0.0)) for meta in stored.values()), default=None)
    if planned is None and logged:
        planned = max(_indexed_at_of(r) for r in logged)
    trace.steps.append(HopStep("consumer batch", planned, f"{len(wanted)} chunks, indexed_at stamped"))
    if logged:
        last = max(logged, key=lambda r: r.timestamp)
        where = sorted({f"{r.topic}[{r.partition}]" for r in logged})
        trace.steps.append(
            HopStep(
                "chunks",
                last.timestamp,
                f"{len(logged)} of {len(wanted)} chunk records in {', '.join(where)}",
            )
        )
    if len(stored) < len(wanted):
        trace.waiting = (
            f"{len(stored)} of its {len(wanted)} chunks are in Chroma: the consumer writes Chroma after "
            "the chunk log, then commits"
        )
        return trace
    trace.steps.append(HopStep("chroma", None, f"{len(stored)} chunks of version {event.version}"))
    return trace


def _trace_delete(inputs: TraceInputs, trace: VersionTrace, source: _Record) -> VersionTrace:
    if inputs.chroma:
        if _passed(inputs.indexer_committed, source):
            trace.waiting = f"{len(inputs.chroma)} chunks are still in Chroma though the consumers passed it"
        else:
            trace.waiting = _waits_at(inputs.indexer_committed, source, "the indexing consumers")
        return trace
    tombstones = [r for r in inputs.chunks if r.value is None and r.timestamp >= source.timestamp]
    if tombstones:
        last = max(tombstones, key=lambda r: r.timestamp)
        trace.steps.append(HopStep("chunks", last.timestamp, f"{len(tombstones)} tombstones"))
    trace.steps.append(HopStep("chroma", None, "no chunk of the document left"))
    return trace


def _metadata_of(record: _Record) -> dict[str, Any]:
    if record.value is None:
        return {}
    try:
        metadata = orjson.loads(record.value).get("metadata", {})
    except orjson.JSONDecodeError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _version_of(record: _Record) -> int:
    return int(_metadata_of(record).get("version", -1))


def _indexed_at_of(record: _Record) -> float:
    return float(_metadata_of(record).get("indexed_at", record.timestamp))


# --- reading -----------------------------------------------------------------------------------

#: Says whether a version is visible to search (None: could not tell), and how it was checked.
VisibilityCheck = Callable[[VersionTrace, list[tuple[int, int]]], Awaitable[tuple[bool | None, str]]]


async def read_trace(
    settings: Settings,
    doc_id: str,
    collection: AsyncCollection,
    *,
    versions: int = 3,
    visible: VisibilityCheck | None = None,
    max_scan: int = 100_000,
) -> DocumentTrace:
    """The last ``versions`` versions of ``doc_id`` through every hop. ``visible`` checks the last
    hop (the API asks its own views; the CLI searches through the API); ``max_scan`` bounds the
    records read per partition, for a document not found near a partition's end."""
    hops = pipeline_hops(settings)
    notes: list[str] = []
    topics = {settings.events_topic, settings.input_topic, settings.chunks_topic}
    async with LagReader(settings.kafka) as lag:
        partition_counts = {topic: len(await lag.end_offsets(topic)) for topic in topics}
        if not partition_counts[settings.events_topic]:
            return DocumentTrace(doc_id, [], {}, [f"no topic {settings.events_topic!r}"])
        where = {topic: key_partition(doc_id, count) for topic, count in partition_counts.items() if count}
        committed = {}
        for hop in hops:
            at = {p.partition: p.committed for p in await lag.read(hop.topic, hop.group)}
            committed[hop.topic] = _Committed(hop.group, at.get(where.get(hop.topic, -1)))
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        key = doc_id.encode()
        events = await _last_with_key(
            consumer, settings.events_topic, where[settings.events_topic], key, versions, max_scan, notes
        )
        changes = None
        if settings.consumer_input == "changes" and settings.changes_topic in where:
            changes = await _last_with_key(
                consumer,
                settings.changes_topic,
                where[settings.changes_topic],
                key,
                versions,
                max_scan,
                notes,
            )
        indexed_from = changes if changes is not None else events
        chunk_ids = _chunk_ids(settings, doc_id, indexed_from)
        since = min((r.timestamp for r in indexed_from), default=None)
        chunks = []
        if since is not None and settings.chunks_topic in where:
            chunks = await _chunk_records(
                consumer,
                settings.chunks_topic,
                partition_counts[settings.chunks_topic],
                chunk_ids,
                since,
                max_scan,
                notes,
            )
    finally:
        await consumer.stop()
    stored = await collection.get(where={"doc_id": doc_id}, include=["metadatas"])
    chroma = {
        cid: dict(meta or {}) for cid, meta in zip(stored["ids"], stored["metadatas"] or [], strict=True)
    }
    inputs = TraceInputs(
        events=events,
        changes=changes,
        chunks=chunks,
        chroma=chroma,
        stage_committed=committed.get(settings.events_topic) if changes is not None else None,
        indexer_committed=committed[settings.input_topic],
        chunk_ids=chunk_ids,
    )
    traced = trace_versions(inputs)
    if visible is not None:
        await _check_visible(traced, chunks, visible)
    return DocumentTrace(doc_id, traced, where, notes)


async def _check_visible(
    traced: Sequence[VersionTrace], chunks: list[_Record], visible: VisibilityCheck
) -> None:
    """The newest version that reached Chroma (or was deleted there) is asked about; older ones
    are superseded, newer ones wait earlier."""
    for trace in traced:
        if trace.waiting is not None or trace.steps[-1].hop != "chroma":
            continue
        positions = [
            (r.partition, r.offset)
            for r in chunks
            if (trace.op == "delete" and r.value is None) or _version_of(r) == trace.version
        ]
        answer, how = await visible(trace, positions)
        trace.searchable = answer
        if answer:
            trace.steps.append(HopStep("searchable", None, how))
        else:
            trace.waiting = how
        return


def _chunk_ids(settings: Settings, doc_id: str, records: list[_Record]) -> dict[int, set[str]]:
    """Each upsert version's chunk ids, as the consumers compute them."""
    chunker = Chunker(settings.chunk_size, settings.chunk_overlap)
    ids: dict[int, set[str]] = {}
    for record in records:
        event = _event(record)
        if event is not None and event.op.value == "upsert":
            ids[event.version] = {chunk.id for chunk in chunker.split(doc_id, event.content)}
    return ids


async def _last_with_key(
    consumer: AIOKafkaConsumer,
    topic: str,
    partition: int,
    key: bytes,
    count: int,
    max_scan: int,
    notes: list[str],
) -> list[_Record]:
    """The last ``count`` records with ``key`` in one partition, read backwards window by window."""
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    begin = (await consumer.beginning_offsets([tp]))[tp]
    stop = (await consumer.end_offsets([tp]))[tp]
    found: list[_Record] = []
    scanned = 0
    while stop > begin and len(found) < count:
        if scanned >= max_scan:
            notes.append(f"{topic}[{partition}]: stopped after {scanned} records, before offset {stop}")
            break
        start = max(begin, stop - _WINDOW)
        window = [r for r in await _read_range(consumer, tp, start, stop) if r.key == key]
        found = window + found
        scanned += stop - start
        stop = start
    return found[-count:]


async def _chunk_records(
    consumer: AIOKafkaConsumer,
    topic: str,
    partitions: int,
    chunk_ids: dict[int, set[str]],
    since: float,
    max_scan: int,
    notes: list[str],
) -> list[_Record]:
    """The chunk log records of the given chunk ids written at or after ``since`` (Unix seconds)."""
    wanted = {chunk_id.encode() for ids in chunk_ids.values() for chunk_id in ids}
    found: list[_Record] = []
    for partition in sorted({key_partition(key.decode(), partitions) for key in wanted}):
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        start = (await consumer.offsets_for_times({tp: int(since * 1000)}))[tp]
        if start is None:
            continue  # nothing written since
        stop = (await consumer.end_offsets([tp]))[tp]
        if stop - start.offset > max_scan:
            notes.append(
                f"{topic}[{partition}]: read only the {max_scan} records after offset {start.offset}"
            )
            stop = start.offset + max_scan
        found.extend(r for r in await _read_range(consumer, tp, start.offset, stop) if r.key in wanted)
    return found


async def _read_range(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int) -> list[_Record]:
    consumer.seek(tp, start)
    found: list[_Record] = []
    while await consumer.position(tp) < stop:
        for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
            found.extend(_Record.of(r) for r in records if start <= r.offset < stop)
    return found
