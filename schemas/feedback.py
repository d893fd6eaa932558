"""Feedback on search results and answers: what ``POST /v1/feedback`` publishes to ``feedback``.

A rating names what it rates: a search result (the search's ``request_id`` and the hit's
``doc_id``, optionally its ``chunk_id``) or an answer (``answer_id``, optionally the ``doc_id`` of
the citation rated). ``rating`` is a thumb: ``1`` = good, ``-1`` = bad. ``correct_doc_id`` says
which document should have been found, whatever the rating.

Versioned like ``DocumentEvent``: a reader accepts every ``schema_version`` up to its own; new
fields are optional with defaults.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas._validation import QueryText, decode_record, is_printable_doc_id

__all__ = [
    "FEEDBACK_SCHEMA_VERSION",
    "FeedbackEvent",
    "FeedbackFields",
    "InvalidFeedback",
    "Rating",
    "normalized_query",
]

FEEDBACK_SCHEMA_VERSION = 1

#: A thumb up (1) or down (-1): what a user can say reliably in one click.
Rating = Literal[-1, 1]

DocId = Annotated[str, Field(min_length=1, max_length=1024)]
TargetId = Annotated[str, Field(min_length=1, max_length=200)]


class InvalidFeedback(ValueError):
    """Raised when bytes from the feedback topic are not a valid ``FeedbackEvent``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalized_query(query: str) -> str:
    """The query as feedback on it is grouped: whitespace folded, case ignored."""
    return " ".join(query.split()).casefold()


class FeedbackFields(BaseModel):
    """What the person rating says; the API's request body and the core of the event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: QueryText = Field(description="the query that was asked")
    request_id: TargetId | None = Field(default=None, description="the rated search's request_id")
    answer_id: TargetId | None = Field(default=None, description="the rated answer's answer_id")
    doc_id: DocId | None = Field(
        default=None,
        description="the rated hit's doc_id (with request_id), or a cited doc_id (with answer_id)",
    )
    chunk_id: TargetId | None = Field(default=None, description="the rated hit's id, if known")
    rating: Rating = Field(description="1 = good, -1 = bad")
    correct_doc_id: DocId | None = Field(
        default=None, description="the document that answers the query, when the person knows it"
    )
    comment: Annotated[str, Field(max_length=2000)] | None = None

    @field_validator("rating", mode="before")
    @classmethod
    def _rating_is_a_thumb(cls, value: object) -> object:
        # Checked before the Literal, which would take true or 1.0 for 1.
        if type(value) is not int or value not in (-1, 1):
            raise ValueError(f"rating must be 1 (good) or -1 (bad), got {value!r}")
        return value

    @field_validator("doc_id", "correct_doc_id")
    @classmethod
    def _doc_id_is_printable(cls, value: str | None) -> str | None:
        # The same rule as DocumentEvent.doc_id, so a named document can be one that exists.
        if value is not None and not is_printable_doc_id(value):
            raise ValueError("a doc_id must not contain control characters or surrounding spaces")
        return value

    @model_validator(mode="after")
    def _names_one_target(self) -> FeedbackFields:
        if self.request_id is None and self.answer_id is None:
            raise ValueError(
                "name what is rated: request_id and doc_id (a search result) or answer_id (an answer)"
            )
        if self.request_id is not None and self.answer_id is not None:
            raise ValueError("rate a search result (request_id) or an answer (answer_id), not both")
        if self.request_id is not None and self.doc_id is None:
            raise ValueError("a search result is named by request_id and the hit's doc_id; doc_id is missing")
        if self.chunk_id is not None and self.doc_id is None:
            raise ValueError("chunk_id needs the doc_id of the same hit")
        return self


def _now() -> float:
    return time.time()


class FeedbackEvent(FeedbackFields):
    """One rating as recorded on the ``feedback`` topic."""

    schema_version: Annotated[int, Field(ge=1, le=FEEDBACK_SCHEMA_VERSION)] = FEEDBACK_SCHEMA_VERSION
    feedback_id: TargetId = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = Field(default_factory=_now, description="unix seconds")
    tenant: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="the tenant of the API key the feedback came with; None without keys"
    )

    @property
    def key(self) -> bytes:
        """The record key: all feedback on one query of one tenant shares a partition, in order."""
        scope = f"{self.tenant or ''}\x00{normalized_query(self.query)}"
        return hashlib.sha256(scope.encode()).hexdigest()[:32].encode()

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, raw: bytes) -> FeedbackEvent:
        """Decode and validate; any problem raises ``InvalidFeedback`` with a readable reason."""
        return decode_record(raw, cls, InvalidFeedback, "feedback")
