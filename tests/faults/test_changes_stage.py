"""The changes stage on the real broker: run as `python -m ragstream streams`, killed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from change_arrivals import Arrival, ChangeArrivals, longest_pause, partitions_by_client
from fault_settings import fault_settings
from in_flight import InFlight
from index_oracle import differences, event_stream, expected_index
from scale import scaled, scaled_timeout
from stage_process import StageProcess

from engines.chunking import Chunker
from schemas import DocumentEvent, EventOp, Settings
from schemas.dead_letter import DeadLetter
from streams.changes import normalise_event
from streams.changes.membership import instance_id
from streams.lag import LagReader
from streams.publisher import EventPublisher
from streams.topic_records import read_topic_records
from streams.topics import ensure_topics

pytestmark = [pytest.mark.integration, scaled_timeout()]


def stage_settings(
    namespace: str, bootstrap_servers: str, tmp_path: Path, chroma_port: int = 8000, **overrides
) -> Settings:
    return fault_settings(
        namespace,
        bootstrap_servers,
        chroma_port,
        consumer_input="changes",
        state_dir=tmp_path / "state",
        **overrides,
    )


async def wait_drained(settings: Settings, topic: str, group: str, timeout: float) -> None:
    """Until the group's committed offsets reach the topic's end offsets."""
    deadline = time.monotonic() + timeout
    partitions: list = []
    while time.monotonic() < deadline:
        try:
            async with LagReader(settings.kafka) as reader:
                partitions = await reader.read(topic, group)
            if partitions and all((p.committed or 0) == p.end_offset for p in partitions):
                return
        except KafkaError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{group} has not drained {topic} after {timeout}s: {partitions}")


async def publish_raw(settings: Settings, records: list[tuple[bytes, bytes | None]]) -> None:
    async with AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all") as producer:
        for key, value in records:
            await producer.send_and_wait(settings.events_topic, value=value, key=key)


def published(events: list[DocumentEvent]) -> list[tuple[bytes, bytes | None]]:
    return [(event.doc_id.encode(), event.to_json()) for event in events]


def changes_by_doc(records: list[ConsumerRecord]) -> dict[str, list[dict | None]]:
    """doc_id → what docs.changes says about it, in order (None = tombstone)."""
    found: dict[str, list[dict | None]] = {}
    for record in records:
        value = None if record.value is None else orjson.loads(record.value)
        found.setdefault(record.key.decode(), []).append(value)
    return found


@pytest.fixture
async def running_stage(kafka_broker, module_namespace, tmp_path):
    settings = stage_settings(module_namespace, kafka_broker.bootstrap_servers, tmp_path, partitions=3)
    await ensure_topics(settings)
    stage = StageProcess(settings, tmp_path / "stage.log")
    stage.start()
    yield stage
    await asyncio.to_thread(stage.stop)


async def test_the_stage_emits_normalised_deduplicated_changes_and_dead_letters(running_stage):
    stage = running_stage
    s = stage.settings
    html = DocumentEvent(
        doc_id="page.html", op=EventOp.UPSERT, content="<h1>Title</h1><p>Body  text</p>",
        content_type="text/html", version=1,
    )  # fmt: skip
    same_text = DocumentEvent(doc_id="page.html", op=EventOp.UPSERT, content="Title\n\nBody text", version=2)
    edited = DocumentEvent(doc_id="page.html", op=EventOp.UPSERT, content="Title\n\nNew body", version=3)
    stale = DocumentEvent(doc_id="page.html", op=EventOp.UPSERT, content="an old draft", version=2)
    gone = DocumentEvent(
        doc_id="gone.md", op=EventOp.UPSERT, content="# Bye", content_type="text/markdown", version=1
    )
    deleted = DocumentEvent(doc_id="gone.md", op=EventOp.DELETE, version=2)
    deleted_again = DocumentEvent(doc_id="gone.md", op=EventOp.DELETE, version=3)
    valid = [html, same_text, edited, stale, gone, deleted, deleted_again]
    invalid = [
        (b"junk", b"not json at all"),
        (b"no-op", orjson.dumps({"doc_id": "no-op", "op": "rename", "content": "x"})),
        (b"blank", orjson.dumps({"doc_id": "blank", "op": "upsert", "content": "<script>x()</script>",
                                 "content_type": "text/html"})),
        (b"empty", None),
    ]  # fmt: skip
    await publish_raw(s, published(valid) + invalid)
    await wait_drained(s, s.events_topic, s.streams_app_id, timeout=90)
    stage.assert_running()

    changes = changes_by_doc(await read_topic_records(s.kafka, s.changes_topic))
    assert set(changes) == {"page.html", "gone.md"}
    page = changes["page.html"]
    assert [(c["content"], c["content_type"], c["version"]) for c in page if c] == [
        ("Title\n\nBody text", "text/plain", 1),
        ("Title\n\nNew body", "text/plain", 3),
    ]
    assert [None if c is None else (c["op"], c["version"]) for c in changes["gone.md"]] == [
        ("upsert", 1),
        ("delete", 2),
        None,
    ]

    letters = [
        DeadLetter.from_headers(list(r.headers), r.key, r.value)
        for r in await read_topic_records(s.kafka, s.dlq_topic)
    ]
    reasons = {letter.key: letter.reason for letter in letters}
    assert set(reasons) == {b"junk", b"no-op", b"blank", b"empty"}
    assert "not valid JSON" in reasons[b"junk"]
    assert "op" in reasons[b"no-op"]
    assert "no text left" in reasons[b"blank"]
    assert "empty record" in reasons[b"empty"]
    by_key = {letter.key: letter for letter in letters}
    assert by_key[b"junk"].value == b"not json at all"
    assert by_key[b"junk"].topic == s.events_topic

    # Republishing the same documents (new event ids, same versions and content) adds nothing.
    before = len(await read_topic_records(s.kafka, s.changes_topic))
    await publish_raw(s, published([edited, deleted_again]))
    await publish_raw(s, published([edited.model_copy(update={"event_id": "again", "version": 4})]))
    await wait_drained(s, s.events_topic, s.streams_app_id, timeout=60)
    assert len(await read_topic_records(s.kafka, s.changes_topic)) == before


async def test_a_stage_killed_mid_stream_leaves_the_index_exactly_as_the_oracle(
    kafka_broker, chroma_server, module_namespace, scenario_factory, tmp_path
):
    settings = stage_settings(module_namespace, kafka_broker.bootstrap_servers, tmp_path, chroma_server.port)
    scenario = scenario_factory(settings)
    stage = StageProcess(settings, tmp_path / "stage.log")
    await ensure_topics(settings)
    stage.start()
    try:
        await _kill_the_stage_mid_stream(stage, scenario, settings)
    finally:
        await asyncio.to_thread(stage.stop)


async def _kill_the_stage_mid_stream(stage: StageProcess, scenario, settings: Settings) -> None:
    await scenario.start_consumers(1)
    # What the stage has in flight: it is the stage that dies here, not the consumers.
    faults = InFlight(settings.bootstrap_servers, settings.events_topic, settings.streams_app_id)
    # Events go on arriving, 50 a second (fewer while 500 wait for the consumers), until the
    # stage has died twice and works again.
    killed_enough = asyncio.Event()
    events = event_stream(11, scaled(60, 300), scaled(5_000, 20_000), "stage-kill")
    publishing = asyncio.create_task(
        scenario.publish(events, slice_size=10, pause=0.2, until=killed_enough, backlog=500)
    )
    # The whole stage dies (supervisor and worker) once it has committed its first changes, and
    # is started again by hand...
    await faults.before("the whole stage killed", publishing)
    await asyncio.to_thread(stage.kill)
    stage.start()
    # ...then, once it works again, only its worker dies, and the supervisor starts it again.
    await faults.before("the stage's worker killed", publishing)
    killed = await asyncio.to_thread(stage.kill_worker)
    await asyncio.to_thread(stage.worker_pid, 0, killed)
    await faults.until_flowing(publishing)
    killed_enough.set()
    await publishing
    # Every document once more, unchanged: the stage must drop all of these.
    latest = {e.doc_id: e for e in scenario.published}
    repeats = [e.model_copy(update={"event_id": uuid.uuid4().hex}) for e in latest.values()]
    await scenario.publish(repeats, slice_size=25, pause=0.2)
    await wait_drained(settings, settings.events_topic, settings.streams_app_id, timeout=150)
    stage.assert_running()
    await wait_drained(settings, settings.changes_topic, settings.consumer_group, timeout=300)

    expected = expected_index(
        [normalise_event(e) for e in scenario.published],
        Chunker(settings.chunk_size, settings.chunk_overlap),
    )
    problems = differences(expected, await scenario.index_content())
    assert not problems, "\n".join(problems)
    faults.assert_mid_stream(
        "the stream (events) ran out before the stage had died twice: make it longer",
        while_publishing=True,
    )


#: Events per second published while a stage worker is killed (the rate the goal is stated at).
RATE = 5


async def test_a_killed_stage_worker_hands_its_partitions_to_the_other_and_the_flow_resumes(
    kafka_broker, module_namespace, tmp_path
):
    settings = stage_settings(module_namespace, kafka_broker.bootstrap_servers, tmp_path, stage_workers=2)
    await ensure_topics(settings)
    stage = StageProcess(settings, tmp_path / "stage.log")
    arrivals = ChangeArrivals(settings.bootstrap_servers, settings.changes_topic, settings.partitions)
    await arrivals.start()
    stage.start()
    try:
        await _kill_one_of_two_workers_under_load(stage, arrivals, settings)
    finally:
        await arrivals.stop()
        await asyncio.to_thread(stage.stop)


async def _kill_one_of_two_workers_under_load(
    stage: StageProcess, arrivals: ChangeArrivals, settings: Settings
) -> None:
    s = settings
    workers = {instance_id(s.streams_app_id, index): index for index in range(2)}
    await _until_both_workers_hold_partitions(s, set(workers))
    events = [
        DocumentEvent(
            doc_id=f"doc-{i % 20}", op=EventOp.UPSERT, content=f"text {i} of doc {i % 20}", version=i
        )
        for i in range(RATE * scaled(30, 120))
    ]
    published: dict[tuple[str, int], tuple[float, int]] = {}  # (doc, version) → (when, partition)
    publishing = asyncio.create_task(_publish_at_rate(s, events, published))

    # Kill a worker once changes flow from its partitions, at a third of the stream.
    await asyncio.sleep(len(events) / RATE / 3)
    held = await partitions_by_client(s.bootstrap_servers, s.streams_app_id, s.events_topic)
    victim, victim_partitions = next((client, parts) for client, parts in held.items() if parts)
    done_before = {(a.doc_id, a.version) for a in arrivals.arrivals}
    assert any(published[key][1] in victim_partitions for key in done_before if key in published)
    killed = await asyncio.to_thread(stage.kill_worker, workers[victim])
    killed_at = time.monotonic()
    assert not publishing.done(), "the kill must land mid-stream: publish for longer (RATE, events)"
    await asyncio.to_thread(stage.worker_pid, workers[victim], killed)
    await publishing
    await wait_drained(s, s.events_topic, s.streams_app_id, timeout=120)
    stage.assert_running()
    await arrivals.wait_for(len(await read_topic_records(s.kafka, s.changes_topic)))

    # The flow resumed on the dead worker's partitions, and the changes topic says what the events do.
    resumed = [
        a.at
        for a in arrivals.arrivals
        if published[a.doc_id, a.version][1] in victim_partitions
        and published[a.doc_id, a.version][0] > killed_at
    ]
    assert resumed, "no change arrived from the killed worker's partitions after the kill"
    _assert_changes_match(events, arrivals.arrivals)
    last_published = max(when for when, _ in published.values())
    gap = longest_pause(arrivals.arrivals, killed_at, last_published)
    print(
        f"\nkilled {victim} (partitions {sorted(victim_partitions)}) under {RATE} events/s: "
        f"longest pause between changes {gap:.2f} s; first change of its partitions "
        f"{min(resumed) - killed_at:.2f} s after the kill; worst event → change "
        f"{_worst_freshness(published, arrivals.arrivals):.2f} s"
    )


async def _until_both_workers_hold_partitions(
    settings: Settings, clients: set[str], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    held: dict[str, set[int]] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(KafkaError):
            held = await partitions_by_client(
                settings.bootstrap_servers, settings.streams_app_id, settings.events_topic
            )
            if set(held) == clients and all(held.values()):
                return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the stage's workers do not both hold partitions after {timeout} s: {held}")


async def _publish_at_rate(
    settings: Settings, events: list[DocumentEvent], published: dict[tuple[str, int], tuple[float, int]]
) -> None:
    """One event every 1/RATE s, on a fixed schedule; notes when each was acknowledged, and where."""
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        start = time.monotonic()
        for i, event in enumerate(events):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            receipt = await publisher.publish(event)
            published[event.doc_id, event.version] = (time.monotonic(), receipt.partition)


def _assert_changes_match(events: list[DocumentEvent], arrived: list[Arrival]) -> None:
    """Every event changed its document, so each is in the changes topic (once or, replayed, more),
    and each document's last change is its last event."""
    expected: dict[str, list[int]] = {}
    for event in events:
        expected.setdefault(event.doc_id, []).append(event.version)
    found: dict[str, list[int | None]] = {}
    for arrival in arrived:
        found.setdefault(arrival.doc_id, []).append(arrival.version)
    assert set(found) == set(expected)
    for doc_id, versions in expected.items():
        assert set(found[doc_id]) == set(versions), (
            f"{doc_id}: lost {sorted(set(versions) - set(found[doc_id]))}"
        )
        assert found[doc_id][-1] == versions[-1], f"{doc_id} ends at version {found[doc_id][-1]}"


def _worst_freshness(published: dict[tuple[str, int], tuple[float, int]], arrived: list[Arrival]) -> float:
    """The longest time from an event's acknowledgement to its change's first arrival."""
    first: dict[tuple[str, int | None], float] = {}
    for arrival in arrived:
        first.setdefault((arrival.doc_id, arrival.version), arrival.at)
    return max(first[key] - when for key, (when, _) in published.items())
