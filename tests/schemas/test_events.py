import orjson
import pytest

from schemas import SCHEMA_VERSION, DocumentEvent, EventOp, InvalidEvent


def test_event_round_trips_through_json():
    event = DocumentEvent(
        doc_id="wiki/Kafka", op=EventOp.UPSERT, content="A log.", metadata={"n": 1, "ok": True}
    )
    assert DocumentEvent.from_json(event.to_json()) == event


def test_event_gets_an_id_a_version_and_the_current_schema_version():
    event = DocumentEvent(doc_id="a", op="upsert", content="x")
    assert event.event_id and event.version > 0 and event.schema_version == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"op": "upsert", "content": "x"}', "doc_id: Field required"),
        (b'{"doc_id": "a", "op": "rename", "content": "x"}', "op:"),
        (b'{"doc_id": "a", "op": "upsert", "content": "   "}', "non-empty content"),
        (b'{"doc_id": "a", "op": "upsert", "content": "x", "metadata": {"k": [1]}}', "metadata.k"),
        (b'{"doc_id": "a", "op": "upsert", "content": "x", "metadata": {"version": 3}}', "reserved"),
        (b'{"doc_id": "a", "op": "upsert", "content": "x", "metadata": {"tenant": "t"}}', "reserved"),
        (b'{"doc_id": "b/a", "op": "upsert", "content": "x", "tenant": "t"}', "starting with 't/'"),
        (b'{"doc_id": "t/", "op": "upsert", "content": "x", "tenant": "t"}', "starting with 't/'"),
        (b'{"doc_id": "t/a/b", "op": "upsert", "content": "x", "tenant": "t/a"}', "tenant"),
        (b'{"doc_id": "a", "op": "upsert", "content": "x", "colour": "red"}', "colour"),
        (b'{"doc_id": "a", "op": "upsert", "content": "x", "schema_version": 99}', "schema_version"),
    ],
)
def test_invalid_event_is_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as caught:
        DocumentEvent.from_json(raw)
    assert reason in caught.value.reason


def test_a_tenants_event_round_trips_with_its_tenant():
    event = DocumentEvent(doc_id="acme/wiki/Kafka", op=EventOp.UPSERT, content="A log.", tenant="acme")
    assert DocumentEvent.from_json(event.to_json()) == event


def test_an_event_without_tenant_is_written_as_before_tenants_existed():
    event = DocumentEvent(doc_id="wiki/Kafka", op=EventOp.UPSERT, content="A log.")
    assert "tenant" not in orjson.loads(event.to_json())


def test_delete_needs_no_content():
    event = DocumentEvent.from_json(orjson.dumps({"doc_id": "a", "op": "delete"}))
    assert event.op is EventOp.DELETE


def test_committed_json_schema_matches_the_model():
    from schemas.export import SCHEMA_FILE, event_json_schema

    assert orjson.loads(SCHEMA_FILE.read_bytes()) == event_json_schema(), "run: python -m schemas.export"
