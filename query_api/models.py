"""Request and response bodies of the query API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

#: A metadata value as stored in Chroma; strict, so that "3" never silently matches 3.
Scalar = StrictStr | StrictBool | StrictInt | StrictFloat

COMPARISON_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
MEMBERSHIP_OPERATORS = ("$in", "$nin")
OPERATORS = COMPARISON_OPERATORS + MEMBERSHIP_OPERATORS

#: ``{"key": value}`` or ``{"key": {"$op": operand}}``, one operator per key.
MetadataFilter = dict[str, Scalar | dict[str, Scalar | list[Scalar]]]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, Field(min_length=1, max_length=4096)]
    k: Annotated[int, Field(ge=1, le=100)] = 10
    filter: MetadataFilter | None = Field(
        default=None,
        description="Metadata equality per key, or one of "
        + ", ".join(OPERATORS)
        + ' per key, e.g. {"lang": "en", "year": {"$gte": 2020}}',
    )

    @field_validator("query")
    @classmethod
    def _query_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must contain more than whitespace")
        return value

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


class SearchHit(BaseModel):
    id: str
    doc_id: str
    text: str
    score: float = Field(description="Cosine similarity, 1 - cosine distance")
    metadata: dict[str, Any]
    indexed_at: float


class SearchResponse(BaseModel):
    query: str
    k: int
    hits: list[SearchHit]
    took_ms: float


class DocumentInfo(BaseModel):
    doc_id: str
    version: int = Field(description="The highest version among the document's chunks")
    chunk_count: int
    indexed_at: float = Field(description="When its most recent chunk was written, unix seconds")
