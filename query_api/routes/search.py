"""``POST /v1/search``: the chunks that best match a query, optionally only once the index
includes a given write (read-your-writes)."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from query_api import retrieval
from query_api.auth import CallerDep
from query_api.generations import ReplicaGenerations
from query_api.models import CONSISTENCY_TOKEN_MAX_CHARS, SearchRequest, SearchResponse
from query_api.rerank import RerankerUnavailable
from query_api.routes.read_your_writes import wait_for_write
from query_api.search_activity import note_search
from query_api.services import Services, ServicesDep
from query_api.tenancy import TenantScope
from query_api.timings import Timings
from schemas.search_tuning import TunedFusion

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/v1/search",
    responses={
        400: {"description": "Reranking was asked for but no reranker is configured, or a bad token"},
        503: {"description": "The index is unreachable, or the BM25 index is still replaying"},
        504: {"description": "The index did not include the write named by consistent_with in time"},
    },
)
async def search(
    body: SearchRequest,
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    response: Response,
    consistent_with: Annotated[
        str | None,
        Query(max_length=CONSISTENCY_TOKEN_MAX_CHARS, description="the same as the body's consistent_with"),
    ] = None,
) -> SearchResponse:
    """The chunks that best match the query by vector, BM25 or both fused, optionally filtered,
    reranked and paged; with ``consistent_with``, only once the index includes that write."""
    depth = services.settings.hybrid_candidates
    if body.k + body.offset > depth:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "offset"),
                    "msg": f"k + offset must be at most {depth}, the candidate depth "
                    f"(RAGSTREAM_HYBRID_CANDIDATES); got k={body.k} + offset={body.offset}",
                    "input": body.offset,
                }
            ]
        )
    # Consumers on this host embed at a lower priority while searches run; but not for a search
    # that waits for a write, which would slow down the very write it waits for.
    if not (body.consistent_with or consistent_with):
        note_search(services.settings.search_activity_path)
    timings = Timings()
    # Read-your-writes: the wait for the index to include the write is part of the answer's time.
    with timings.measure("wait") if body.consistent_with or consistent_with else contextlib.nullcontext():
        await _wait_for_write(services, body, consistent_with)
    try:
        found = await retrieval.search(
            services, body, TenantScope(caller.tenant), timings, _tuned_for(request, caller.tenant)
        )
    except RerankerUnavailable as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    except retrieval.LexicalIndexNotReady as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    response.headers["Server-Timing"] = timings.header()
    return found


def _tuned_for(request: Request, tenant: str | None) -> TunedFusion | None:
    # The replica's generations follow the control topic, where `ragstream tune` writes.
    generations: ReplicaGenerations | None = getattr(request.app.state, "generations", None)
    return generations.tuned_for(tenant) if generations is not None else None


async def _wait_for_write(services: Services, body: SearchRequest, from_query: str | None) -> None:
    if body.consistent_with and from_query and body.consistent_with != from_query:
        raise HTTPException(status_code=400, detail="consistent_with differs between the query and the body")
    raw = body.consistent_with or from_query
    if raw is not None:
        await wait_for_write(services, raw, lexical=body.mode != "vector")
