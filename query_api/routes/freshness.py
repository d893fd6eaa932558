"""``GET /v1/freshness``: how far behind the index is (``query_api.freshness`` reads it)."""

from __future__ import annotations

from fastapi import APIRouter

from query_api.freshness import read_freshness
from query_api.models import FreshnessResponse
from query_api.services import ServicesDep

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/freshness", responses={503: {"description": "Kafka is unreachable"}})
async def freshness(services: ServicesDep) -> FreshnessResponse:
    """Lag of the indexer per partition, age of the oldest event not indexed yet, last indexed time."""
    return await read_freshness(services)
