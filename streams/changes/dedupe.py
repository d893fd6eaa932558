"""Which events change a document: the decision the stage takes against its table.

The table holds, per document, the hash of what was last emitted (``None`` once deleted) and
the highest version seen. Pure functions, so the rules are tested without Kafka.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from schemas import DocumentEvent, EventOp


class Decision(StrEnum):
    EMIT = "emit"
    UNCHANGED = "unchanged"
    STALE = "stale"
    ALREADY_DELETED = "already_deleted"


@dataclass(frozen=True, slots=True)
class DocumentState:
    """What the stage last emitted for a document, and the newest version it has seen."""

    content_hash: str | None
    version: int

    @property
    def deleted(self) -> bool:
        return self.content_hash is None

    def to_dict(self) -> dict[str, Any]:
        return {"hash": self.content_hash, "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DocumentState | None:
        return None if data is None else cls(data["hash"], int(data["version"]))


def content_hash(event: DocumentEvent) -> str:
    """Hash of everything an upsert puts in the index except its version and event id."""
    indexed = {
        "content": event.content,
        "content_type": event.content_type,
        "source": event.source,
        "metadata": event.metadata,
    }
    if event.tenant is not None:
        # Only when set, so that the hashes of documents without a tenant stay what they were.
        indexed["tenant"] = event.tenant
    return hashlib.sha256(orjson.dumps(indexed, option=orjson.OPT_SORT_KEYS)).hexdigest()


def decide(state: DocumentState | None, event: DocumentEvent) -> Decision:
    """Emit the event, or say why it changes nothing. ``event`` is already normalised."""
    if state is not None and event.version < state.version:
        return Decision.STALE
    if event.op is EventOp.DELETE:
        return Decision.ALREADY_DELETED if state is not None and state.deleted else Decision.EMIT
    if state is not None and state.content_hash == content_hash(event):
        return Decision.UNCHANGED
    return Decision.EMIT


def next_state(state: DocumentState | None, event: DocumentEvent, decision: Decision) -> DocumentState:
    """The table entry after ``decision``; a skipped event still raises the version seen."""
    version = event.version if state is None else max(state.version, event.version)
    if decision is Decision.EMIT:
        digest = None if event.op is EventOp.DELETE else content_hash(event)
        return DocumentState(digest, version)
    assert state is not None  # only an emit can meet a document for the first time
    return DocumentState(state.content_hash, version)
