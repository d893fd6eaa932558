"""What a caller bound to a tenant sees: its own documents, named the way it named them.

A tenant's document ``x`` is stored as ``<tenant>/x``, with ``tenant`` in every chunk's metadata.
The id keeps two tenants' documents apart through the whole pipeline (Kafka key, the changes
stage's table, chunk ids, the chunk log), so both may use ``x``. The metadata is what reads are
restricted by: the tenant condition goes into Chroma's ``where`` and the BM25 query themselves,
so every candidate ranked is already the tenant's and a page is never cut short by filtering after
the top k. The tenant never sees its prefix: ids are translated on the way in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from query_api.filters import Condition, SearchFilter
from query_api.models import SearchHit

__all__ = ["UNRESTRICTED", "TenantScope"]

#: Filter operators whose operands are document ids when the key is ``doc_id``.
_ID_OPERATORS = ("$eq", "$ne", "$in", "$nin")


@dataclass(frozen=True)
class TenantScope:
    """The view of one tenant, or with ``tenant`` None the unrestricted view (ids unchanged)."""

    tenant: str | None = None

    @property
    def _prefix(self) -> str:
        return f"{self.tenant}/" if self.tenant is not None else ""

    def stored_id(self, doc_id: str) -> str:
        """The id under which the index holds the tenant's document ``doc_id``."""
        return self._prefix + doc_id

    def visible_id(self, stored_id: str) -> str:
        """The id the tenant knows a stored document by."""
        return stored_id.removeprefix(self._prefix)

    def restrict(self, search_filter: SearchFilter) -> SearchFilter:
        """``search_filter`` over the tenant's ids, and only over the tenant's chunks."""
        if self.tenant is None:
            return search_filter
        conditions = tuple(self._stored_ids_in(condition) for condition in search_filter.conditions)
        prefix = search_filter.doc_id_prefix
        return SearchFilter(
            (*conditions, Condition("tenant", "$eq", self.tenant)),
            None if prefix is None else self.stored_id(prefix),
        )

    def hit(self, hit: SearchHit) -> SearchHit:
        """A hit as the tenant sees it."""
        if self.tenant is None:
            return hit
        metadata = dict(hit.metadata)
        if isinstance(metadata.get("doc_id"), str):
            metadata["doc_id"] = self.visible_id(metadata["doc_id"])
        return hit.model_copy(update={"doc_id": self.visible_id(hit.doc_id), "metadata": metadata})

    def _stored_ids_in(self, condition: Condition) -> Condition:
        if condition.key != "doc_id" or condition.operator not in _ID_OPERATORS:
            return condition
        operand: Any = condition.operand
        if isinstance(operand, str):
            operand = self.stored_id(operand)
        elif isinstance(operand, list):
            operand = [self.stored_id(item) if isinstance(item, str) else item for item in operand]
        return Condition(condition.key, condition.operator, operand)


#: The view of a caller without a tenant: every document, ids as stored.
UNRESTRICTED = TenantScope()
