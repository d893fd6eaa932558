"""``POST /v1/answer``: a grounded answer with citations, as JSON or as server-sent events."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.sse import EventSourceResponse

from query_api.answers.answerer import Answerer
from query_api.answers.errors import AnswerError
from query_api.answers.models import AnswerRequest, AnswerResponse
from query_api.auth import CallerDep
from query_api.routes.read_your_writes import wait_for_write
from query_api.services import ServicesDep
from query_api.tenancy import TenantScope

log = logging.getLogger(__name__)

__all__ = ["router"]

router = APIRouter(tags=["answers"])

_EVENTS_DESCRIPTION = (
    "With `stream`, or `Accept: text/event-stream`: `event: token` events whose data is "
    '`{"text": "..."}`, then one `event: done` whose data is the JSON response; a failure after the '
    'first token ends the stream with `event: error`, data `{"detail": "...", "status": 502}`.'
)


async def get_answerer(request: Request, services: ServicesDep) -> Answerer:
    """FastAPI dependency: the app's answerer, built on first use over the app's services (on the
    event loop, as ``auth.get_caller`` says why)."""
    answerer: Answerer | None = getattr(request.app.state, "answerer", None)
    if answerer is None or answerer.services is not services:
        answerer = Answerer(services)
        request.app.state.answerer = answerer
    return answerer


@router.post(
    "/v1/answer",
    response_model=AnswerResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": _EVENTS_DESCRIPTION},
        400: {
            "description": "Unknown template, a generator that is not configured, or a "
            "consistent_with that is not a token a write returned"
        },
        502: {"description": "The OpenAI-compatible endpoint failed"},
        503: {"description": "The local model could not be loaded, or the index is unreachable"},
        504: {"description": "The index did not include the write named by consistent_with in time"},
    },
)
async def answer(
    body: AnswerRequest,
    request: Request,
    answerer: Annotated[Answerer, Depends(get_answerer)],
    caller: CallerDep,
) -> Response | AnswerResponse:
    """Retrieve ``k`` passages, prompt the generator with them, and cite what the answer used."""
    stream = body.stream if body.stream is not None else _accepts_events(request)
    scope = TenantScope(caller.tenant)
    if body.consistent_with is not None:
        # The passages come from a vector search: the vectors must include the write.
        await wait_for_write(answerer.services, body.consistent_with, lexical=False)
    try:
        if not stream:
            return await answerer.answer(body, scope)
        events = answerer.stream(body, scope)
        # Retrieval and the generator's start happen before the first piece: their failures still
        # get a status code instead of an error event.
        first = await anext(events)
    except AnswerError as exc:
        raise HTTPException(status_code=exc.status_code, detail=str(exc)) from exc
    return EventSourceResponse(
        _server_sent(first, events), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def _accepts_events(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


async def _server_sent(
    first: str | AnswerResponse, rest: AsyncGenerator[str | AnswerResponse, None]
) -> AsyncIterator[bytes]:
    try:
        yield _encode(first)
        async for item in rest:
            yield _encode(item)
    except AnswerError as exc:
        log.warning("answer stream failed: %s", exc)
        yield _event("error", {"detail": str(exc), "status": exc.status_code})
    except Exception as exc:
        # The status line is long gone: the error event is the only way left to tell the client.
        log.exception("answer stream failed")
        yield _event("error", {"detail": f"{type(exc).__name__}: {exc}", "status": 500})
    finally:
        await rest.aclose()


def _encode(item: str | AnswerResponse) -> bytes:
    if isinstance(item, AnswerResponse):
        return _event("done", item.model_dump(mode="json"))
    return _event("token", {"text": item})


def _event(name: str, data: Any) -> bytes:
    # JSON never contains a raw newline, so the data always fits one ``data:`` line.
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
