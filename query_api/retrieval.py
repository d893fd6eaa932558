"""One search, end to end: retrieve by mode, fuse, rerank, then cut out the requested page.

Every page of a query is cut from the same candidate list (each retriever's top
``hybrid_candidates`` in hybrid mode), so paging through k at a time gives the same hits, in the
same order, as one request for all of them.
"""

from __future__ import annotations

import asyncio
import time

from query_api.filters import SearchFilter
from query_api.fusion import reciprocal_rank_fusion
from query_api.lexical import LexicalHit
from query_api.models import RetrieverHit, SearchHit, SearchRequest, SearchResponse
from query_api.rerank import RerankerUnavailable
from query_api.search import vector_candidates
from query_api.services import Services
from query_api.tenancy import UNRESTRICTED, TenantScope

__all__ = ["LexicalIndexNotReady", "search"]

RETRIEVERS = ("vector", "lexical")


class LexicalIndexNotReady(Exception):
    """The BM25 index has not replayed the chunk log yet; lexical-only results would be partial."""


async def search(
    services: Services, request: SearchRequest, scope: TenantScope = UNRESTRICTED
) -> SearchResponse:
    """Answer ``request`` from the documents ``scope`` may see; the caller has checked that
    ``k + offset`` is within the candidate depth."""
    started = time.perf_counter()
    settings = services.settings
    rerank = settings.rerank if request.rerank is None else request.rerank
    if rerank and services.reranker is None:
        raise RerankerUnavailable(None, "reranking was asked for but no reranker is configured")
    if request.mode == "lexical" and not services.lexical.caught_up:
        raise LexicalIndexNotReady(f"the BM25 index is still replaying {services.lexical.topic}")
    window = request.offset + request.k
    if request.mode == "hybrid":
        depth = settings.hybrid_candidates
    else:
        # One ranking alone does not depend on depth; fetch just what the page (and reranker) reads.
        depth = max(window, settings.rerank_depth if rerank else 0)
    search_filter = scope.restrict(SearchFilter.from_request(request))
    candidates = await _candidates(services, request, depth, search_filter)
    if rerank and services.reranker is not None:
        head = candidates[: settings.rerank_depth]
        reranked = await asyncio.to_thread(services.reranker.rerank, request.query, head)
        candidates = reranked + candidates[settings.rerank_depth :]
    return SearchResponse(
        query=request.query,
        k=request.k,
        offset=request.offset,
        mode=request.mode,
        reranked=rerank,
        hits=[scope.hit(hit) for hit in candidates[request.offset : window]],
        took_ms=(time.perf_counter() - started) * 1000,
    )


async def _candidates(
    services: Services, request: SearchRequest, depth: int, search_filter: SearchFilter
) -> list[SearchHit]:
    settings = services.settings
    if request.mode != "hybrid":
        return await _retrieve(services, request.mode, request.query, depth, search_filter)
    weights = {"vector": settings.hybrid_vector_weight, "lexical": settings.hybrid_lexical_weight}
    # A retriever weighted 0 could only append hits nobody else ranked: skip its work.
    names = [name for name in RETRIEVERS if weights[name] > 0]
    results = await asyncio.gather(
        *(_retrieve(services, name, request.query, depth, search_filter) for name in names)
    )
    by_id: dict[str, SearchHit] = {}
    for hits in results:
        for hit in hits:
            if hit.id in by_id:
                by_id[hit.id].retrievers.update(hit.retrievers)
            else:
                by_id[hit.id] = hit
    fused = reciprocal_rank_fusion(
        {name: [hit.id for hit in hits] for name, hits in zip(names, results, strict=True)},
        weights,
        settings.rrf_k,
    )
    return [
        by_id[item.id].model_copy(update={"score": item.score, "fused_score": item.score}) for item in fused
    ]


async def _retrieve(
    services: Services, name: str, query: str, depth: int, search_filter: SearchFilter
) -> list[SearchHit]:
    view = services.lexical
    if name == "vector":
        # The BM25 index knows every document id; until it has replayed the log it may not.
        known_ids = view.index.doc_ids_with_prefix if view.caught_up else None
        return await vector_candidates(
            services.collection, services.query_batcher.embed, query, depth, search_filter, known_ids
        )
    found = await asyncio.to_thread(view.index.search, query, depth, search_filter)
    return [_lexical_hit(hit, rank) for rank, hit in enumerate(found, start=1)]


def _lexical_hit(hit: LexicalHit, rank: int) -> SearchHit:
    indexed_at = hit.metadata.get("indexed_at", 0.0)
    return SearchHit(
        id=hit.id,
        doc_id=hit.doc_id,
        text=hit.text,
        score=hit.score,
        metadata=hit.metadata,
        indexed_at=float(indexed_at) if isinstance(indexed_at, int | float) else 0.0,
        retrievers={"lexical": RetrieverHit(rank=rank, score=hit.score)},
    )
