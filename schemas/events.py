"""The document change event: what sources publish to ``docs.events``.

Events are JSON (orjson) so that producers in any language can write them; the JSON Schema
files in ``schemas/json/`` are generated from these models (``python -m schemas.export``).

Compatibility rule: a reader accepts every ``schema_version`` up to its own. New fields are
optional with defaults; a field is never renamed or given a new meaning within a major version.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas._validation import decode_record, is_printable_doc_id

SCHEMA_VERSION = 1

#: Metadata values must be flat scalars: Chroma stores nothing else.
MetadataValue = str | int | float | bool

#: Metadata keys the pipeline writes itself; a source may not set them. ``tenant`` above all:
#: it decides who may read a chunk, so only the event's own ``tenant`` field may set it.
RESERVED_METADATA_KEYS = frozenset(
    {"doc_id", "version", "chunk_index", "source", "content_type", "indexed_at", "tenant"}
)

#: A tenant name: no "/" (it starts the tenant's doc_id namespace) and no "@" or "," (it is
#: written after "@" in the comma-separated RAGSTREAM_API_KEYS).
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class EventOp(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


class InvalidEvent(ValueError):
    """Raised when bytes from the topic are not a valid ``DocumentEvent``; carries the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _default_version() -> int:
    """The current time in µs: monotonic enough per document for one source."""
    return time.time_ns() // 1000


class DocumentEvent(BaseModel):
    """One change to one document: an upsert of its full text, or its deletion."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    event_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        default_factory=lambda: uuid.uuid4().hex
    )
    doc_id: Annotated[str, Field(min_length=1, max_length=1024)]
    op: EventOp
    content: str = ""
    content_type: Annotated[str, Field(max_length=100)] = "text/plain"
    source: Annotated[str, Field(max_length=200)] = ""
    version: Annotated[int, Field(ge=0, description="Monotonic per document, e.g. a timestamp in µs")] = (
        Field(default_factory=_default_version)
    )
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    tenant: Annotated[str, Field(pattern=TENANT_PATTERN)] | None = Field(
        default=None,
        description="The tenant that owns the document; only its API keys (and keys without a "
        'tenant) see it. Its doc_id must start with "<tenant>/". None: no tenant, as before tenants.',
    )

    @field_validator("doc_id")
    @classmethod
    def _doc_id_is_printable(cls, value: str) -> str:
        if not is_printable_doc_id(value):
            raise ValueError("doc_id must not contain control characters or surrounding spaces")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_keys_are_free(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = RESERVED_METADATA_KEYS.intersection(value)
        if taken:
            raise ValueError(f"metadata keys reserved by the pipeline: {sorted(taken)}")
        return value

    @field_validator("content")
    @classmethod
    def _content_is_text(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("content looks binary (it contains NUL characters); send extracted text")
        return value

    @model_validator(mode="after")
    def _upsert_has_content(self) -> DocumentEvent:
        if self.op is EventOp.UPSERT and not self.content.strip():
            raise ValueError("an upsert needs non-empty content")
        return self

    @model_validator(mode="after")
    def _doc_id_is_in_its_tenants_namespace(self) -> DocumentEvent:
        # The doc_id is a document's identity everywhere (Kafka key, chunk ids, the changes
        # stage's table), so two tenants' documents can only stay apart if their ids differ.
        if self.tenant is not None and (
            not self.doc_id.startswith(f"{self.tenant}/") or self.doc_id == f"{self.tenant}/"
        ):
            raise ValueError(
                f"a document of tenant {self.tenant!r} needs a doc_id starting with '{self.tenant}/'"
            )
        return self

    def to_json(self) -> bytes:
        # Without a tenant the event is written as before tenants existed, so that readers not
        # yet upgraded (which refuse unknown fields) keep reading every event that has none.
        exclude = {"tenant"} if self.tenant is None else None
        return orjson.dumps(self.model_dump(mode="json", exclude=exclude))

    @classmethod
    def from_json(cls, raw: bytes) -> DocumentEvent:
        """Decode and validate; any problem raises ``InvalidEvent`` with a readable reason."""
        return decode_record(raw, cls, InvalidEvent, "event")
