"""Vector search against the Chroma collection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from query_api.filters import SearchFilter
from query_api.models import RetrieverHit, SearchHit

if TYPE_CHECKING:
    from chromadb.api.models.AsyncCollection import AsyncCollection
    from chromadb.api.types import Where

__all__ = ["PREFIX_IN_LIMIT", "PREFIX_OVERFETCH_MAX", "vector_candidates"]

#: Most document ids a doc_id prefix is expanded to for Chroma's ``$in``; beyond, we over-fetch.
PREFIX_IN_LIMIT = 1000
#: Most chunks asked of Chroma when over-fetching to filter by doc_id prefix afterwards.
PREFIX_OVERFETCH_MAX = 5000

#: ``(prefix, limit)`` → the document ids with that prefix, or None when there are over ``limit``.
DocIdsWithPrefix = Callable[[str, int], list[str] | None]


async def vector_candidates(
    collection: AsyncCollection,
    embed: Callable[[str], Awaitable[Any]],
    query: str,
    limit: int,
    search_filter: SearchFilter,
    doc_ids_with_prefix: DocIdsWithPrefix | None = None,
) -> list[SearchHit]:
    """The ``limit`` chunks nearest to the query that pass the filter, best first, ranked.

    Chroma cannot match a doc_id prefix. ``doc_ids_with_prefix`` (from an index that knows every
    document id) turns it into a list of ids; without it, or for too many ids, we ask Chroma for
    more chunks than needed and filter them, up to ``PREFIX_OVERFETCH_MAX``: past that a very
    selective prefix may return fewer hits than exist.
    """
    # Off the event loop, batched with the queries of concurrent searches (query_batcher.py).
    vectors = await embed(query)
    prefix = search_filter.doc_id_prefix
    if prefix is None:
        return _ranked(await _query(collection, vectors, limit, search_filter.to_where()))
    doc_ids = doc_ids_with_prefix(prefix, PREFIX_IN_LIMIT) if doc_ids_with_prefix else None
    if doc_ids is not None:
        if not doc_ids:
            return []
        where = search_filter.restricted_to(doc_ids).to_where()
        found = await _query(collection, vectors, limit, where)
        return _ranked([hit for hit in found if hit.doc_id.startswith(prefix)])
    fetch, where = limit, search_filter.to_where()
    while True:
        found = await _query(collection, vectors, fetch, where)
        kept = [hit for hit in found if hit.doc_id.startswith(prefix)]
        if len(kept) >= limit or len(found) < fetch or fetch >= PREFIX_OVERFETCH_MAX:
            return _ranked(kept[:limit])
        fetch = min(fetch * 4, PREFIX_OVERFETCH_MAX)


def _ranked(hits: list[SearchHit]) -> list[SearchHit]:
    for rank, hit in enumerate(hits, start=1):
        hit.retrievers["vector"] = RetrieverHit(rank=rank, score=hit.score)
    return hits


async def _query(
    collection: AsyncCollection, vectors: Any, n_results: int, where: Where | None
) -> list[SearchHit]:
    result = await collection.query(
        query_embeddings=vectors,
        n_results=n_results,
        where=where,
        include=["documents", "metadatas", "distances"],
    )
    ids = result["ids"][0]
    documents = (result["documents"] or [[]])[0]
    metadatas = (result["metadatas"] or [[]])[0]
    distances = (result["distances"] or [[]])[0]
    hits = []
    for chunk_id, text, metadata, distance in zip(ids, documents, metadatas, distances, strict=True):
        meta = dict(metadata or {})
        hits.append(
            SearchHit(
                id=chunk_id,
                doc_id=str(meta.get("doc_id", "")),
                text=text or "",
                score=1.0 - float(distance),
                metadata=meta,
                indexed_at=float(cast(float, meta.get("indexed_at", 0.0))),
            )
        )
    return hits
