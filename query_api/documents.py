"""What the index holds about one document, from its chunks' metadata."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from query_api.models import DocumentInfo
from query_api.tenancy import UNRESTRICTED, TenantScope

if TYPE_CHECKING:
    from chromadb.api.models.AsyncCollection import AsyncCollection


async def document_info(
    collection: AsyncCollection, doc_id: str, scope: TenantScope = UNRESTRICTED
) -> DocumentInfo | None:
    """Version, chunk count and indexing time of ``doc_id`` as ``scope`` names and sees it; None
    when it has no chunks there."""
    where: Any = {"doc_id": scope.stored_id(doc_id)}
    if scope.tenant is not None:
        where = {"$and": [where, {"tenant": scope.tenant}]}
    result = await collection.get(where=where, include=["metadatas"])
    metadatas: list[Any] = list(result["metadatas"] or [])
    if not metadatas:
        return None
    version = max(int(meta.get("version", 0)) for meta in metadatas)
    latest = [meta for meta in metadatas if int(meta.get("version", 0)) == version]
    # While an update is being applied the old version's chunks are still there, so count what the
    # newest version declares rather than every chunk stored.
    declared = latest[0].get("chunk_count")
    chunk_count = int(declared) if isinstance(declared, int) else len(latest)
    indexed_at = max(float(meta.get("indexed_at", 0.0)) for meta in metadatas)
    return DocumentInfo(doc_id=doc_id, version=version, chunk_count=chunk_count, indexed_at=indexed_at)
