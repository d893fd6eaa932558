"""Request and response bodies of the query API."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from schemas import QueryText

#: A metadata value as stored in Chroma; strict, so that "3" never silently matches 3.
Scalar = StrictStr | StrictBool | StrictInt | StrictFloat

COMPARISON_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
MEMBERSHIP_OPERATORS = ("$in", "$nin")
OPERATORS = COMPARISON_OPERATORS + MEMBERSHIP_OPERATORS

#: ``{"key": value}`` or ``{"key": {"$op": operand}}``, one operator per key.
MetadataFilter = dict[str, Scalar | dict[str, Scalar | list[Scalar]]]

#: The longest ``consistent_with`` token accepted (a write's token is far shorter).
CONSISTENCY_TOKEN_MAX_CHARS = 2048
#: A ``consistent_with`` value, as search and answer requests take it.
ConsistencyTokenText = Annotated[str, Field(min_length=1, max_length=CONSISTENCY_TOKEN_MAX_CHARS)]

#: Which retrievers answer a search: Chroma's vectors, the BM25 index, or both fused.
SearchMode = Literal["vector", "lexical", "hybrid"]

Number = StrictInt | StrictFloat


class NumericRange(BaseModel):
    """Bounds on a numeric metadata value; at most one lower and one upper bound."""

    model_config = ConfigDict(extra="forbid")

    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None

    @model_validator(mode="after")
    def _bounds_make_sense(self) -> NumericRange:
        if self.gt is None and self.gte is None and self.lt is None and self.lte is None:
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        if self.gt is not None and self.gte is not None:
            raise ValueError("a range takes gt or gte, not both")
        if self.lt is not None and self.lte is not None:
            raise ValueError("a range takes lt or lte, not both")
        return self

    def bounds(self) -> list[tuple[str, int | float]]:
        """The bounds as filter operators, e.g. ``[("$gte", 2)]``."""
        named = (("$gt", self.gt), ("$gte", self.gte), ("$lt", self.lt), ("$lte", self.lte))
        return [(operator, value) for operator, value in named if value is not None]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText
    k: Annotated[int, Field(ge=1, le=100)] = 10
    filter: MetadataFilter | None = Field(
        default=None,
        description="Metadata equality per key, or one of "
        + ", ".join(OPERATORS)
        + ' per key, e.g. {"lang": "en", "year": {"$gte": 2020}}',
    )
    mode: SearchMode = Field(
        default="hybrid",
        description="vector, lexical (BM25) or hybrid (both, fused as RAGSTREAM_HYBRID_FUSION says)",
    )
    offset: Annotated[int, Field(ge=0, description="hits to skip, for pagination")] = 0
    source: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="only chunks of documents from this source"
    )
    doc_id_prefix: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description='only documents whose id starts with this, e.g. "handbook/"'
    )
    version: NumericRange | None = Field(default=None, description="bounds on the document version")
    indexed_at: NumericRange | None = Field(
        default=None, description="bounds on when the chunk was indexed, unix seconds"
    )
    rerank: bool | None = Field(default=None, description="rerank the top hits; the server decides if unset")
    consistent_with: ConsistencyTokenText | None = Field(
        default=None,
        description="the token a write returned: answer only once the index includes that write",
    )

    @field_validator("filter", mode="before")
    @classmethod
    def _filter_is_supported(cls, value: Any) -> Any:
        # Checked before the typed validation, which would report one error per union member.
        if not isinstance(value, dict):
            return value
        for key, condition in value.items():
            if not key or key.startswith("$"):
                raise ValueError(f"filter key {key!r} must be a metadata key, not empty or an operator")
            if isinstance(condition, dict):
                _check_operator(key, condition)
            elif not _is_scalar(condition):
                raise ValueError(
                    f"filter[{key!r}] must be a string, number or boolean, or an object with one operator "
                    f"({', '.join(OPERATORS)}); got {type(condition).__name__}"
                )
        return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def _check_operator(key: str, condition: dict[str, Any]) -> None:
    if len(condition) != 1:
        raise ValueError(f"filter[{key!r}] must hold exactly one operator, got {sorted(condition)}")
    ((operator, operand),) = condition.items()
    if operator not in OPERATORS:
        raise ValueError(f"filter[{key!r}]: unknown operator {operator!r}; use one of {', '.join(OPERATORS)}")
    if operator in MEMBERSHIP_OPERATORS:
        if not isinstance(operand, list) or not operand or not all(_is_scalar(item) for item in operand):
            raise ValueError(f"filter[{key!r}]: {operator} needs a non-empty list of values")
        if len({_kind(item) for item in operand}) > 1:
            raise ValueError(
                f"filter[{key!r}]: the values of {operator} must be all strings, numbers or booleans"
            )
    elif not _is_scalar(operand):
        raise ValueError(f"filter[{key!r}]: {operator} needs a string, number or boolean")
    elif operator in RANGE_OPERATORS and (isinstance(operand, bool) or not isinstance(operand, int | float)):
        raise ValueError(f"filter[{key!r}]: {operator} compares numbers only, got {operand!r}")


class RetrieverHit(BaseModel):
    """Where one retriever placed a hit among its candidates."""

    rank: int = Field(description="1 = the retriever's best candidate")
    score: float = Field(description="cosine similarity (vector) or BM25 score (lexical)")


class SearchHit(BaseModel):
    id: str
    doc_id: str
    text: str
    score: float = Field(
        description="What the hits are ordered by: cosine similarity (vector), BM25 (lexical), "
        "fused score (hybrid), or the reranker's score when reranked"
    )
    metadata: dict[str, Any]
    indexed_at: float
    retrievers: dict[str, RetrieverHit] = Field(
        default_factory=dict, description="each retriever that found this chunk, with its rank there"
    )
    fused_score: float | None = Field(
        default=None,
        description="the hybrid fusion's score in [0, 1]; 1.0 = first for every retriever",
    )
    rerank_score: float | None = None
    generation: int = Field(
        default=0, description="the index generation this chunk comes from (its chunking and model)"
    )


class SearchResponse(BaseModel):
    request_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="names this search in POST /v1/feedback, together with a hit's doc_id",
    )
    query: str
    k: int
    offset: int
    mode: SearchMode
    reranked: bool
    hits: list[SearchHit]
    took_ms: float
    generation: int = Field(
        default=0,
        description="the index generation that answered: every hit comes from it, none from another",
    )
    tuning_version: int | None = Field(
        default=None,
        description="the version of the fusion parameters `ragstream tune` set that this hybrid search "
        "used (the tenant's own, else every tenant's); null = the configured ones",
    )


class DocumentInfo(BaseModel):
    doc_id: str
    version: int = Field(description="The highest version among the document's chunks")
    chunk_count: int
    indexed_at: float = Field(description="When its most recent chunk was written, unix seconds")


class DocumentWrite(BaseModel):
    """The body of ``PUT /v1/documents/{doc_id}``: the document's full new text."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(description="the full text; an edit sends all of it again")
    content_type: Annotated[str, Field(max_length=100)] = "text/plain"
    source: Annotated[str, Field(max_length=200)] = ""
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    version: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="monotonic per document; the time in µs when unset"
    )

    @field_validator("content")
    @classmethod
    def _content_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content must not be empty; to remove a document, send DELETE")
        return value


class WriteReceipt(BaseModel):
    """A write accepted by Kafka; ``token`` makes a later search wait until the index has it."""

    doc_id: str
    event_id: str
    version: int
    partition: int
    offset: int
    token: str = Field(description="pass as consistent_with to /v1/search to read this write")


class PartitionFreshness(BaseModel):
    partition: int
    committed: int | None = Field(description="the indexer group's committed offset; null before any")
    end_offset: int
    lag: int = Field(description="events published but not yet indexed")
    oldest_unindexed_age_s: float | None = Field(
        default=None, description="age of the oldest event not yet indexed; null when lag is 0"
    )


class HopFreshness(BaseModel):
    """One consumer group on the way to the index: the changes stage, or the indexers."""

    name: str
    topic: str
    consumer_group: str
    lag: int
    oldest_unindexed_age_s: float | None
    partitions: list[PartitionFreshness]


class FreshnessResponse(BaseModel):
    topic: str = Field(description="what the indexers read")
    consumer_group: str = Field(description="the indexers' group")
    lag: int = Field(description="events waiting, summed over every hop and partition")
    oldest_unindexed_age_s: float | None = Field(description="over all hops; null when lag is 0")
    oldest_unindexed_note: str | None = Field(
        default=None, description="why an age is missing although events are waiting"
    )
    last_indexed_at: float | None = Field(description="unix seconds of the consumers' latest batch")
    last_indexed_age_s: float | None
    partitions: list[PartitionFreshness] = Field(description="the indexers' partitions")
    hops: list[HopFreshness] = Field(description="upstream first: the changes stage (if any), the indexers")
