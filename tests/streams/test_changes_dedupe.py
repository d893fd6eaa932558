"""The no-op filter: which events change a document, decided against the table's state."""

from __future__ import annotations

from schemas import DocumentEvent, EventOp
from streams.changes import Decision, DocumentState, content_hash, decide, next_state


def upsert(version: int, content: str = "text", **metadata) -> DocumentEvent:
    return DocumentEvent(doc_id="d", op=EventOp.UPSERT, content=content, version=version, metadata=metadata)


def delete(version: int) -> DocumentEvent:
    return DocumentEvent(doc_id="d", op=EventOp.DELETE, version=version)


def apply(events: list[DocumentEvent]) -> list[Decision]:
    state: DocumentState | None = None
    decisions = []
    for event in events:
        decision = decide(state, event)
        state = next_state(state, event, decision)
        decisions.append(decision)
    return decisions


def test_a_new_document_is_emitted():
    assert apply([upsert(1)]) == [Decision.EMIT]


def test_the_same_content_again_is_unchanged_even_with_a_newer_version():
    assert apply([upsert(1), upsert(2)]) == [Decision.EMIT, Decision.UNCHANGED]


def test_changed_content_or_metadata_is_emitted():
    assert apply([upsert(1), upsert(2, "other"), upsert(3, "other", team="a")]) == [Decision.EMIT] * 3


def test_an_event_older_than_the_last_version_seen_is_stale():
    assert apply([upsert(5), upsert(3, "older"), delete(4)]) == [
        Decision.EMIT,
        Decision.STALE,
        Decision.STALE,
    ]


def test_a_skipped_event_still_raises_the_version_seen():
    decisions = apply([upsert(1), upsert(9), upsert(5, "late edit")])
    assert decisions == [Decision.EMIT, Decision.UNCHANGED, Decision.STALE]


def test_an_equal_version_with_new_content_wins_like_a_later_event():
    assert apply([upsert(1), upsert(1, "same version, new text")]) == [Decision.EMIT, Decision.EMIT]


def test_a_delete_is_emitted_once_and_a_repeat_is_a_no_op():
    assert apply([upsert(1), delete(2), delete(3)]) == [
        Decision.EMIT,
        Decision.EMIT,
        Decision.ALREADY_DELETED,
    ]


def test_a_delete_of_an_unknown_document_is_passed_on():
    # The document may have been indexed before the stage existed.
    assert apply([delete(1)]) == [Decision.EMIT]


def test_the_same_content_after_a_delete_is_emitted_again():
    assert apply([upsert(1), delete(2), upsert(3)]) == [Decision.EMIT, Decision.EMIT, Decision.EMIT]


def test_an_upsert_older_than_a_delete_does_not_resurrect_the_document():
    assert apply([upsert(1), delete(5), upsert(4, "late")]) == [Decision.EMIT, Decision.EMIT, Decision.STALE]


def test_the_hash_ignores_version_and_event_id():
    assert content_hash(upsert(1)) == content_hash(upsert(2))
    assert content_hash(upsert(1)) != content_hash(upsert(1, source_tag="x"))


def test_state_survives_its_changelog_form():
    state = DocumentState("abc", 7)
    assert DocumentState.from_dict(state.to_dict()) == state
    assert DocumentState.from_dict(DocumentState(None, 3).to_dict()) == DocumentState(None, 3)


def test_the_same_content_claimed_by_a_tenant_is_a_change():
    # An id in a tenant's namespace written first without a tenant (by an admin key), then by the
    # tenant itself: the tenant's write must reach the index, or the tenant would never see it.
    untenanted = DocumentEvent(doc_id="acme/d", op=EventOp.UPSERT, content="text", version=1)
    claimed = untenanted.model_copy(update={"tenant": "acme", "version": 2})
    state = next_state(None, untenanted, decide(None, untenanted))

    assert decide(state, claimed) is Decision.EMIT
    assert content_hash(untenanted) == content_hash(untenanted.model_copy(update={"version": 9}))
