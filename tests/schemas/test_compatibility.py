"""Schema evolution: a reader accepts every event whose schema_version is at most its own."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas import SCHEMA_VERSION, DocumentEvent, InvalidEvent

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_events(version: int) -> list[dict]:
    return orjson.loads((FIXTURES / f"document_event.v{version}.json").read_bytes())


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_events_of_every_released_schema_version_are_still_accepted(version):
    """Each released version keeps a fixture file; the current reader must accept all of them."""
    for data in fixture_events(version):
        event = DocumentEvent.from_json(orjson.dumps(data))
        assert event.schema_version == data.get("schema_version", 1) <= SCHEMA_VERSION
        assert event.doc_id == data["doc_id"]
        assert event.op.value == data["op"]


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_an_accepted_event_keeps_its_meaning_after_a_round_trip(version):
    for data in fixture_events(version):
        event = DocumentEvent.from_json(orjson.dumps(data))
        again = DocumentEvent.from_json(event.to_json())
        assert again == event
        for field in data.keys() - {"schema_version"}:
            assert getattr(again, field) == data[field], field


def test_every_released_version_has_a_fixture():
    assert sorted(p.name for p in FIXTURES.glob("document_event.v*.json")) == [
        f"document_event.v{v}.json" for v in range(1, SCHEMA_VERSION + 1)
    ]


def test_an_event_from_a_newer_schema_is_refused_with_a_reason():
    newer = {"doc_id": "a", "op": "upsert", "content": "x", "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(InvalidEvent, match="schema_version"):
        DocumentEvent.from_json(orjson.dumps(newer))
