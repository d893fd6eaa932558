"""The HTTP routes, one module per resource, each an ``APIRouter``; ``router`` includes them all."""

from fastapi import APIRouter

from query_api.routes import (
    answers,
    documents,
    feedback,
    freshness,
    health,
    metrics,
    search,
    stats,
    status_page,
    trace,
)

__all__ = ["router"]

#: In this order the OpenAPI document lists them.
_RESOURCES = (search, documents, health, metrics, answers, feedback, freshness, status_page, stats, trace)

router = APIRouter()
for _resource in _RESOURCES:
    router.include_router(_resource.router)
