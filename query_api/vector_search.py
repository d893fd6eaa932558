"""Vector search: the nearest chunks' ids and similarities, from this replica's index or Chroma.

An unfiltered search is answered by the replica's own HNSW view of the chunk log
(``vector_index.py``) once that holds every chunk's vector. Chroma answers the rest: filtered
searches (it filters inside its graph walk) and any search while the view is replaying or
incomplete. Only ids and distances come back from Chroma (``nearest.py``, batched with the queries of
concurrent searches): the texts and metadata of the few chunks a page
shows are loaded afterwards (``retrieval.py``), since Chroma spends about as long reading 100
chunks' documents and metadata as finding them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from query_api.filters import SearchFilter
from query_api.lexical import RankedChunk
from query_api.nearest import NearestChunks
from query_api.query_embedding import QueryBatcher
from query_api.timings import Timings

if TYPE_CHECKING:
    from chromadb.api.types import Where

__all__ = ["PREFIX_IN_LIMIT", "PREFIX_OVERFETCH_MAX", "vector_ranked"]

#: Most document ids a doc_id prefix is expanded to for Chroma's ``$in``; beyond, we over-fetch.
PREFIX_IN_LIMIT = 1000
#: Most chunks asked of Chroma when over-fetching to filter by doc_id prefix afterwards.
PREFIX_OVERFETCH_MAX = 5000

#: ``(prefix, limit)`` → the document ids with that prefix, or None when there are over ``limit``.
DocIdsWithPrefix = Callable[[str, int], list[str] | None]


async def vector_ranked(
    chroma: NearestChunks,
    queries: QueryBatcher,
    query: str,
    limit: int,
    search_filter: SearchFilter,
    doc_ids_with_prefix: DocIdsWithPrefix | None = None,
    timings: Timings | None = None,
    replica: bool = False,
) -> list[RankedChunk]:
    """The ``limit`` chunks nearest to the query that pass the filter, best first, with their
    cosine similarity as the score.

    Chroma cannot match a doc_id prefix. ``doc_ids_with_prefix`` (from an index that knows every
    document id) turns it into a list of ids; without it, or for too many ids, we ask Chroma for
    more chunks than needed and filter them, up to ``PREFIX_OVERFETCH_MAX``: past that a very
    selective prefix may return fewer hits than exist.

    With ``replica``, the replica's own index (``queries.index``) answers instead of Chroma if
    the filter is empty, or only restricts the search to one tenant (the index keeps each
    tenant's chunks apart): the caller vouches that it holds every chunk.
    """
    timings = timings if timings is not None else Timings()
    tenant = search_filter.tenant_only
    if replica and queries.index is not None and (not search_filter or tenant is not None):
        # Embedded and searched in one trip to the query thread, batched with concurrent searches.
        started = time.perf_counter()
        answer = await queries.nearest(query, limit, tenant)
        trip_ms = (time.perf_counter() - started) * 1000
        # The search ran on that thread after the embedding: its time is the vector step's.
        timings.add("embed", trip_ms - answer.search_ms)
        timings.add("vector", answer.search_ms)
        if answer.chunks is not None:
            timings.describe("vector", "replica")
            return answer.chunks
        vectors = answer.vector  # the replica could not answer: Chroma's graph does
    else:
        # Off the event loop, batched with the queries of concurrent searches (query_embedding.py).
        with timings.measure("embed"):
            vectors = await queries.embed(query)
    with timings.measure("vector"):
        timings.describe("vector", "chroma")
        return await _nearest(chroma, vectors, limit, search_filter, doc_ids_with_prefix)


async def _nearest(
    chroma: NearestChunks,
    vectors: Any,
    limit: int,
    search_filter: SearchFilter,
    doc_ids_with_prefix: DocIdsWithPrefix | None,
) -> list[RankedChunk]:
    prefix = search_filter.doc_id_prefix
    if prefix is None:
        return [chunk for chunk, _ in await _query(chroma, vectors, limit, search_filter.to_where())]
    doc_ids = doc_ids_with_prefix(prefix, PREFIX_IN_LIMIT) if doc_ids_with_prefix else None
    if doc_ids is not None:
        if not doc_ids:
            return []
        where = search_filter.restricted_to(doc_ids).to_where()
        return [chunk for chunk, _ in await _query(chroma, vectors, limit, where)]
    fetch, where = limit, search_filter.to_where()
    while True:
        found = await _query(chroma, vectors, fetch, where, with_doc_ids=True)
        kept = [chunk for chunk, doc_id in found if doc_id.startswith(prefix)]
        if len(kept) >= limit or len(found) < fetch or fetch >= PREFIX_OVERFETCH_MAX:
            return kept[:limit]
        fetch = min(fetch * 4, PREFIX_OVERFETCH_MAX)


async def _query(
    chroma: NearestChunks,
    vectors: Any,
    n_results: int,
    where: Where | None,
    with_doc_ids: bool = False,
) -> list[tuple[RankedChunk, str]]:
    """(chunk, its doc_id, or "" unless ``with_doc_ids``) for the nearest ``n_results``."""
    found = await chroma.nearest(vectors, n_results, cast(dict[str, Any] | None, where), with_doc_ids)
    ids, distances = found.ids, found.distances
    metadatas = found.metadatas if found.metadatas is not None else [None] * len(ids)
    return [
        (RankedChunk(chunk_id, 1.0 - float(distance)), str((metadata or {}).get("doc_id", "")))
        for chunk_id, distance, metadata in zip(ids, distances, metadatas, strict=True)
    ]
