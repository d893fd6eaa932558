"""``POST /v1/feedback``: a rating of a search result or an answer, published to ``feedback``.

Accepted (202) once Kafka acknowledged it. Nothing is checked against the index or against
earlier responses: ids are what the client was given, and ``ragstream eval --from-feedback``
decides later which ratings make evaluation cases.
"""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from query_api.auth import get_caller
from query_api.services import ServicesDep
from schemas.feedback import FeedbackEvent, FeedbackFields

__all__ = ["FeedbackReceipt", "FeedbackRequest", "router"]

router = APIRouter(tags=["feedback"])


class FeedbackRequest(FeedbackFields):
    """The body of ``POST /v1/feedback``: a search result (``request_id`` + ``doc_id``) or an
    answer (``answer_id``) rated 1 (good) or -1 (bad), and the right document if known."""


class FeedbackReceipt(BaseModel):
    feedback_id: str
    topic: str
    partition: int
    offset: int
    created_at: float = Field(description="unix seconds")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"description": "No target named, a rating other than 1 or -1, an empty query, …"},
    503: {"description": "Kafka is unreachable; the feedback was not recorded"},
}


@router.post("/v1/feedback", status_code=202, responses=_RESPONSES)
async def post_feedback(body: FeedbackRequest, request: Request, services: ServicesDep) -> FeedbackReceipt:
    """Record a rating; answered once Kafka has it."""
    event = FeedbackEvent(**body.model_dump(), tenant=await _tenant(request))
    publisher = services.publisher
    if publisher is None:
        raise HTTPException(status_code=503, detail="this API instance does not accept writes")
    topic = services.settings.feedback_topic
    try:
        await publisher.start()
        meta = await publisher.send(topic, event.key, event.to_json())
    except KafkaError as exc:
        raise HTTPException(
            status_code=503, detail=f"Kafka did not accept the feedback: {type(exc).__name__}: {exc}"
        ) from exc
    return FeedbackReceipt(
        feedback_id=event.feedback_id,
        topic=meta.topic,
        partition=meta.partition,
        offset=meta.offset,
        created_at=event.created_at,
    )


async def _tenant(request: Request) -> str | None:
    """The tenant the request is authenticated as (its API key's); None while the API has no keys.

    Taken from the request, never from the body, so that nobody rates on another tenant's behalf.
    """
    return (await get_caller(request)).tenant
