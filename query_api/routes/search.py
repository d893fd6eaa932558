"""HTTP routes: search, document lookup, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Annotated

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from query_api import retrieval
from query_api.auth import CallerDep
from query_api.consistency import ConsistencyToken, IndexBehind, InvalidToken, wait_until_indexed
from query_api.documents import document_info
from query_api.models import DocumentInfo, SearchRequest, SearchResponse
from query_api.rerank import RerankerUnavailable
from query_api.search_activity import note_search
from query_api.services import Services, get_services
from query_api.tenancy import TenantScope
from query_api.timings import Timings

router = APIRouter()

ServicesDep = Annotated[Services, Depends(get_services)]

#: How long readiness waits for each dependency before calling it unreachable.
READINESS_TIMEOUT_S = 3.0


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
    services: ServicesDep,
    caller: CallerDep,
    response: Response,
    consistent_with: Annotated[
        str | None, Query(max_length=2048, description="the same as the body's consistent_with")
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
        found = await retrieval.search(services, body, TenantScope(caller.tenant), timings)
        response.headers["Server-Timing"] = timings.header()
        return found
    except RerankerUnavailable as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    except retrieval.LexicalIndexNotReady as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc


async def _wait_for_write(services: Services, body: SearchRequest, from_query: str | None) -> None:
    if body.consistent_with and from_query and body.consistent_with != from_query:
        raise HTTPException(status_code=400, detail="consistent_with differs between the query and the body")
    raw = body.consistent_with or from_query
    if raw is None:
        return
    try:
        token = ConsistencyToken.decode(raw)
        await wait_until_indexed(services, token, lexical=body.mode != "vector")
    except InvalidToken as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    except IndexBehind as exc:
        raise HTTPException(status_code=504, detail=str(exc)) from exc
    except KafkaError as exc:
        raise HTTPException(
            status_code=503, detail=f"Kafka is unreachable, cannot check consistent_with: {exc}"
        ) from exc


@router.get("/v1/documents/{doc_id:path}", responses={404: {"description": "No chunk of the document"}})
async def get_document(doc_id: str, services: ServicesDep, caller: CallerDep) -> DocumentInfo:
    """The indexed version of one document."""
    info = await document_info(services.collection, doc_id, TenantScope(caller.tenant))
    if info is None:
        raise HTTPException(status_code=404, detail=f"document {doc_id!r} is not in the index")
    return info


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Kafka or Chroma is unreachable"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when both Kafka and Chroma answer, else 503 naming the one that did not."""

    async def kafka() -> None:
        await services.lag_reader.start()
        await services.lag_reader.ping()

    async def chroma() -> None:
        await services.chroma.heartbeat()

    kafka_check, chroma_check = await asyncio.gather(_check(kafka()), _check(chroma()))
    checks = {"kafka": kafka_check, "chroma": chroma_check}
    ready = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _check(probe: Awaitable[None]) -> str:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await probe
    except TimeoutError:
        return f"unreachable: no answer within {READINESS_TIMEOUT_S:g} s"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"
    return "ok"


@router.get("/metrics", response_class=Response)
async def metrics(
    services: ServicesDep,
    names: Annotated[
        list[str] | None,
        Query(
            alias="name[]",
            description="only these series, by sample name (repeatable), as Prometheus's own "
            "exporters filter; the consumer lag is read from Kafka only when asked for",
        ),
    ] = None,
) -> Response:
    """Pipeline counters, batch durations, consumer lag and the API's garbage collection pauses
    in the Prometheus text format."""
    return Response(await services.metrics.render(names or ()), media_type=CONTENT_TYPE_LATEST)
