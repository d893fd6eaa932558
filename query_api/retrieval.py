"""One search, end to end: rank by mode, fuse, load the chunks shown, rerank, cut out the page.

Every page of a query is cut from the same candidate list (each retriever's top
``hybrid_candidates`` in hybrid mode), so paging through k at a time gives the same hits, in the
same order, as one request for all of them.

Ranking handles ids and scores only. Texts and metadata are loaded for the chunks that are
shown (the page, or the reranker's depth) from this replica's view of the chunk log, which holds
every chunk's record; from Chroma for any the view does not have yet.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from query_api.filters import SearchFilter
from query_api.fusion import convex_fusion, reciprocal_rank_fusion
from query_api.lexical import RankedChunk, StoredChunk
from query_api.models import RetrieverHit, SearchHit, SearchRequest, SearchResponse
from query_api.rerank import RerankerUnavailable
from query_api.services import Services
from query_api.tenancy import UNRESTRICTED, TenantScope
from query_api.timings import Timings
from query_api.vector_search import vector_ranked
from schemas import Settings
from schemas.search_tuning import TunedFusion

__all__ = ["LexicalIndexNotReady", "hybrid_weights", "search"]

RETRIEVERS = ("vector", "lexical")


class LexicalIndexNotReady(Exception):
    """The BM25 index has not replayed the chunk log yet; lexical-only results would be partial."""


def hybrid_weights(settings: Settings, tuned: TunedFusion | None = None) -> dict[str, float]:
    """Each retriever's weight in the configured fusion: the convex fusion's priors (the vector
    prior ``ragstream tune`` chose, when ``tuned``), or RRF's."""
    if settings.hybrid_fusion == "convex":
        prior = tuned.vector_prior if tuned is not None else settings.hybrid_vector_prior
        return {"vector": prior, "lexical": 1.0 - prior}
    return {"vector": settings.hybrid_vector_weight, "lexical": settings.hybrid_lexical_weight}


@dataclass
class _Ranked:
    id: str
    score: float
    fused_score: float | None = None
    retrievers: dict[str, RetrieverHit] = field(default_factory=dict)


async def search(
    services: Services,
    request: SearchRequest,
    scope: TenantScope = UNRESTRICTED,
    timings: Timings | None = None,
    tuned: TunedFusion | None = None,
) -> SearchResponse:
    """Answer ``request`` from the documents ``scope`` may see; the caller has checked that
    ``k + offset`` is within the candidate depth. ``timings`` gets the time of each step;
    ``tuned``, the fusion parameters of the caller's tenant, if ``ragstream tune`` set any."""
    timings = timings if timings is not None else Timings()
    started = time.perf_counter()
    settings = services.settings
    rerank = settings.rerank if request.rerank is None else request.rerank
    if rerank and services.reranker is None:
        raise RerankerUnavailable(None, "reranking was asked for but no reranker is configured")
    if request.mode == "lexical" and not services.chunk_log_view.caught_up:
        raise LexicalIndexNotReady(f"the BM25 index is still replaying {services.chunk_log_view.topic}")
    window = request.offset + request.k
    # The chunks whose text is read: the page, or the reranker's whole depth.
    shown = max(window, settings.rerank_depth if rerank else 0)
    # One ranking alone does not depend on depth; fusion reads each retriever's whole depth.
    depth = settings.hybrid_candidates if request.mode == "hybrid" else shown
    search_filter = scope.restrict(SearchFilter.from_request(request))
    # Tuning sets the convex fusion's prior: nothing else reads it.
    if request.mode != "hybrid" or settings.hybrid_fusion != "convex":
        tuned = None
    ranking = await _ranking(services, request, depth, shown, search_filter, timings, tuned)
    with timings.measure("load"):
        candidates = await _loaded(services, ranking)
    if rerank and services.reranker is not None:
        head = candidates[: settings.rerank_depth]
        with timings.measure("rerank"):
            reranked = await asyncio.to_thread(services.reranker.rerank, request.query, head)
        candidates = reranked + candidates[settings.rerank_depth :]
    took_s = time.perf_counter() - started
    services.metrics.observe_search(request.mode, took_s)
    return SearchResponse(
        query=request.query,
        k=request.k,
        offset=request.offset,
        mode=request.mode,
        reranked=rerank,
        hits=[scope.hit(hit) for hit in candidates[request.offset : window]],
        took_ms=took_s * 1000,
        generation=services.generation,
        tuning_version=tuned.version if tuned is not None else None,
    )


async def _ranking(
    services: Services,
    request: SearchRequest,
    depth: int,
    shown: int,
    search_filter: SearchFilter,
    timings: Timings,
    tuned: TunedFusion | None,
) -> list[_Ranked]:
    """The first ``shown`` chunks of the ranking by ``request.mode``, each retriever ``depth`` deep."""
    settings = services.settings
    if request.mode != "hybrid":
        found = await _retrieve(services, request.mode, request.query, depth, search_filter, timings)
        return [
            _Ranked(
                chunk.id, chunk.score, retrievers={request.mode: RetrieverHit(rank=rank, score=chunk.score)}
            )
            for rank, chunk in enumerate(found[:shown], start=1)
        ]
    weights = hybrid_weights(settings, tuned)
    # A retriever weighted 0 could only append hits nobody else ranked: skip its work.
    names = [name for name in RETRIEVERS if weights[name] > 0]
    results = await asyncio.gather(
        *(_retrieve(services, name, request.query, depth, search_filter, timings) for name in names)
    )
    ranked = dict(zip(names, results, strict=True))
    with timings.measure("fuse"):
        if settings.hybrid_fusion == "convex":
            head = convex_fusion(
                {name: [(chunk.id, chunk.score) for chunk in found] for name, found in ranked.items()},
                weights,
                limit=shown,
            )
        else:
            head = reciprocal_rank_fusion(
                {name: [chunk.id for chunk in found] for name, found in ranked.items()},
                weights,
                settings.rrf_k,
                limit=shown,
            )
    return [
        _Ranked(
            item.id,
            item.score,
            fused_score=item.score,
            retrievers={
                # A rank is the chunk's place in that retriever's list, so its score is there.
                name: RetrieverHit(rank=rank, score=ranked[name][rank - 1].score)
                for name, rank in item.ranks.items()
            },
        )
        for item in head
    ]


async def _retrieve(
    services: Services, name: str, query: str, depth: int, search_filter: SearchFilter, timings: Timings
) -> list[RankedChunk]:
    view = services.chunk_log_view
    if name == "vector":
        # The BM25 index knows every document id; until it has replayed the log it may not.
        known_ids = view.index.doc_ids_with_prefix if view.caught_up else None
        return await vector_ranked(
            services.nearest,
            services.query_batcher,
            query,
            depth,
            search_filter,
            known_ids,
            timings,
            replica=services.vector_coverage.covers,
        )
    with timings.measure("lexical"):
        return await asyncio.to_thread(view.index.ranked, query, depth, search_filter)


async def _loaded(services: Services, ranking: list[_Ranked]) -> list[SearchHit]:
    """The ranked chunks with their text and metadata, in order; a chunk deleted since it was
    ranked is left out."""
    ids = [ranked.id for ranked in ranking]
    # The view holds every chunk the consumers logged, and they log a chunk before writing it
    # to Chroma, so it lacks only chunks Chroma ranked within the last moments, or all of them
    # while it replays the log after a start.
    records = services.chunk_log_view.index.records(ids)
    missing = [chunk_id for chunk_id in ids if chunk_id not in records]
    if missing:
        records.update(await _chroma_records(services, missing))
    hits = []
    for ranked in ranking:
        record = records.get(ranked.id)
        if record is None:
            continue
        indexed_at = record.metadata.get("indexed_at", 0.0)
        hits.append(
            SearchHit(
                id=ranked.id,
                doc_id=record.doc_id,
                text=record.text,
                score=ranked.score,
                metadata=record.metadata,
                indexed_at=float(indexed_at) if isinstance(indexed_at, int | float) else 0.0,
                retrievers=ranked.retrievers,
                fused_score=ranked.fused_score,
                generation=services.generation,
            )
        )
    return hits


async def _chroma_records(services: Services, chunk_ids: list[str]) -> dict[str, StoredChunk]:
    result = await services.collection.get(ids=chunk_ids, include=["documents", "metadatas"])
    documents = result["documents"] or [""] * len(result["ids"])
    metadatas: list[Any] = result["metadatas"] or [{}] * len(result["ids"])
    records = {}
    for chunk_id, text, metadata in zip(result["ids"], documents, metadatas, strict=True):
        meta = dict(metadata or {})
        records[chunk_id] = StoredChunk(chunk_id, str(meta.get("doc_id", "")), text or "", meta)
    return records
