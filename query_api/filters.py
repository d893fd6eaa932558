"""Search filters in one form that Chroma, the BM25 index and plain Python evaluate alike.

A request's flat ``filter``, ``source`` and ``version``/``indexed_at`` ranges become conditions
on metadata keys, combined with AND. A doc_id prefix stays apart: Chroma cannot match prefixes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from query_api.models import RANGE_OPERATORS, SearchRequest

if TYPE_CHECKING:
    from chromadb.api.types import Where

__all__ = ["Condition", "SearchFilter"]


def _kind(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def _same(value: Any, operand: Any) -> bool:
    # Strict like Chroma: "3" never equals 3 and True never equals 1, but 3 equals 3.0.
    return _kind(value) == _kind(operand) and value == operand


@dataclass(frozen=True)
class Condition:
    """``metadata[key] <operator> operand``, with the operators of ``MetadataFilter``."""

    key: str
    operator: str
    operand: Any

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        value = metadata.get(self.key)
        if self.operator == "$eq":
            return _same(value, self.operand)
        if self.operator == "$ne":
            return not _same(value, self.operand)
        if self.operator == "$in":
            return any(_same(value, item) for item in self.operand)
        if self.operator == "$nin":
            return not any(_same(value, item) for item in self.operand)
        if _kind(value) != "number":
            return False
        if self.operator == "$gt":
            return bool(value > self.operand)
        if self.operator == "$gte":
            return bool(value >= self.operand)
        if self.operator == "$lt":
            return bool(value < self.operand)
        if self.operator == "$lte":
            return bool(value <= self.operand)
        raise ValueError(f"unknown filter operator {self.operator!r}")

    @property
    def is_range(self) -> bool:
        return self.operator in RANGE_OPERATORS


@dataclass(frozen=True)
class SearchFilter:
    """Conditions that must all hold, and optionally a prefix the doc_id must start with."""

    conditions: tuple[Condition, ...] = ()
    doc_id_prefix: str | None = None

    @classmethod
    def from_request(cls, request: SearchRequest) -> SearchFilter:
        conditions: list[Condition] = []
        for key, condition in (request.filter or {}).items():
            if isinstance(condition, dict):
                ((operator, operand),) = condition.items()
                conditions.append(Condition(key, operator, operand))
            else:
                conditions.append(Condition(key, "$eq", condition))
        if request.source is not None:
            conditions.append(Condition("source", "$eq", request.source))
        for key, numeric_range in (("version", request.version), ("indexed_at", request.indexed_at)):
            if numeric_range is not None:
                conditions.extend(Condition(key, op, bound) for op, bound in numeric_range.bounds())
        return cls(tuple(conditions), request.doc_id_prefix)

    def __bool__(self) -> bool:
        return bool(self.conditions) or self.doc_id_prefix is not None

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.doc_id_prefix is not None and not str(metadata.get("doc_id", "")).startswith(
            self.doc_id_prefix
        ):
            return False
        return all(condition.matches(metadata) for condition in self.conditions)

    @property
    def tenant_only(self) -> str | None:
        """The tenant, when the filter is that one condition and nothing else (a search by a key
        bound to a tenant, without filters of its own)."""
        if self.doc_id_prefix is not None or len(self.conditions) != 1:
            return None
        (condition,) = self.conditions
        if condition.key == "tenant" and condition.operator == "$eq" and isinstance(condition.operand, str):
            return condition.operand
        return None

    def restricted_to(self, doc_ids: Sequence[str]) -> SearchFilter:
        """This filter, plus: the doc_id is one of ``doc_ids`` (non-empty)."""
        return SearchFilter((*self.conditions, Condition("doc_id", "$in", list(doc_ids))), self.doc_id_prefix)

    def to_where(self) -> Where | None:
        """Chroma's ``where`` for the conditions; the doc_id prefix is not expressible there."""
        clauses: list[dict[str, Any]] = [
            {c.key: c.operand} if c.operator == "$eq" else {c.key: {c.operator: c.operand}}
            for c in self.conditions
        ]
        if not clauses:
            return None
        return cast("Where", clauses[0] if len(clauses) == 1 else {"$and": clauses})
