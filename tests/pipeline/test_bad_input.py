"""Bad input goes to the dead-letter topic with a reason; the events around it are indexed."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from typer.testing import CliRunner

from ragstream.cli import app
from schemas import DocumentEvent, EventOp
from streams.dlq import read_dead_letters

pytestmark = pytest.mark.integration

BAD_INPUTS = {
    "invalid-json": (b'{"doc_id": "x", "op": ', "not valid JSON"),
    "schema-violation": (orjson.dumps({"doc_id": "x", "op": "upsert", "content": 42}), "content"),
    "unknown-op": (orjson.dumps({"doc_id": "x", "op": "rename", "content": "t"}), "op"),
    "missing-doc-id": (orjson.dumps({"op": "upsert", "content": "t"}), "doc_id: Field required"),
    "invalid-utf8": (b'{"doc_id": "x", "op": "upsert", "content": "\xff\xfe"}', "not valid JSON"),
    "binary-content": (orjson.dumps({"doc_id": "x", "op": "upsert", "content": "PK\x00\x03"}), "binary"),
    "empty-content": (orjson.dumps({"doc_id": "x", "op": "upsert", "content": ""}), "non-empty content"),
    "bad-metadata": (
        orjson.dumps({"doc_id": "x", "op": "upsert", "content": "t", "metadata": {"a": {"b": 1}}}),
        "metadata.a",
    ),
    "too-large": (
        orjson.dumps({"doc_id": "x", "op": "upsert", "content": "a" * (10 * 1024 * 1024 + 10)}),
        "above the limit",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_is_dead_lettered_and_its_neighbours_are_indexed(pipeline, case):
    raw, reason = BAD_INPUTS[case]
    run = f"bad-{case}-{uuid.uuid4().hex[:6]}"
    before = DocumentEvent(doc_id=f"{run}/before", op=EventOp.UPSERT, content=f"Neighbour before {run}.")
    after = DocumentEvent(doc_id=f"{run}/after", op=EventOp.UPSERT, content=f"Neighbour after {run}.")
    await pipeline.publisher.publish(before)
    (bad,) = await pipeline.publisher.publish_raw([(f"{run}/bad", raw)])
    await pipeline.publisher.publish(after)
    await pipeline.drain()

    for event in (before, after):
        assert (await pipeline.api.get(f"/v1/documents/{event.doc_id}")).status_code == 200
    letters = [
        s.letter
        for s in await read_dead_letters(pipeline.settings.kafka, pipeline.settings.dlq_topic)
        if s.letter.key == f"{run}/bad".encode()
    ]
    # A group rebalance may replay a batch before its commit: the same dead letter may then be
    # sent again (at least once), always for the same event.
    assert letters and {(x.offset, x.value) for x in letters} == {(letters[0].offset, raw)}
    assert reason in letters[0].reason
    # It points at the record as published, so `ragstream dlq replay` can find the original.
    letter = letters[0]
    assert (letter.topic, letter.partition, letter.offset) == (bad.topic, bad.partition, bad.offset)
    assert bad.topic == pipeline.settings.events_topic


async def test_deleting_an_unknown_document_is_a_no_op(pipeline):
    doc_id = f"ghost-{uuid.uuid4().hex[:6]}"
    await pipeline.publisher.publish(DocumentEvent(doc_id=doc_id, op=EventOp.DELETE))
    await pipeline.drain()
    letters = await read_dead_letters(pipeline.settings.kafka, pipeline.settings.dlq_topic)
    assert all(s.letter.key != doc_id.encode() for s in letters)
    assert (await pipeline.api.get(f"/v1/documents/{doc_id}")).status_code == 404


async def test_dlq_list_and_replay_from_the_cli(pipeline, monkeypatch):
    run = f"replay-{uuid.uuid4().hex[:6]}"
    await pipeline.publisher.publish_raw([(f"{run}/bad", b"{broken")])
    await pipeline.drain()
    s = pipeline.settings
    for name, value in {
        "BOOTSTRAP_SERVERS": s.bootstrap_servers,
        "EVENTS_TOPIC": s.events_topic,
        "DLQ_TOPIC": s.dlq_topic,
    }.items():
        monkeypatch.setenv(f"RAGSTREAM_{name}", value)
    runner = CliRunner()

    # The CLI runs its own event loop: call it from a thread, as a shell would from outside.
    wide = {"COLUMNS": "400"}  # one table row per line, as on a wide terminal
    listed = await asyncio.to_thread(runner.invoke, app, ["dlq", "list", "--where", f"key~{run}"], env=wide)
    assert listed.exit_code == 0, listed.output
    assert "not valid JSON" in listed.output and f"{run}/bad" in listed.output
    before = [
        x for x in await read_dead_letters(s.kafka, s.dlq_topic) if x.letter.key == f"{run}/bad".encode()
    ]

    replayed = await asyncio.to_thread(
        runner.invoke, app, ["dlq", "replay", "--where", f"key~{run}", "--yes"]
    )
    assert replayed.exit_code == 0 and "replayed" in replayed.output
    await pipeline.drain()
    # Still broken, so it comes back: the replay really went through the pipeline again.
    again = [
        x for x in await read_dead_letters(s.kafka, s.dlq_topic) if x.letter.key == f"{run}/bad".encode()
    ]
    assert len(again) > len(before)

    bad_where = await asyncio.to_thread(runner.invoke, app, ["dlq", "list", "--where", "colour=red"])
    assert bad_where.exit_code != 0 and "FIELD=VALUE" in bad_where.output
