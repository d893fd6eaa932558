"""``GET /metrics``: the pipeline's series in the Prometheus text format (``prometheus_metrics``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST

from query_api.prometheus_metrics import ServedIndex
from query_api.services import ServicesDep

__all__ = ["router"]

router = APIRouter()


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
    """Pipeline counters, batch durations, freshness, consumer lag and the API's garbage collection
    pauses in the Prometheus text format."""
    served = ServedIndex(services.generation, services.settings.consumer_group)
    # The serving generation's settings: its consumer group is the one whose lag matters.
    rendered = await services.metrics.render(names or (), served, services.settings)
    return Response(rendered, media_type=CONTENT_TYPE_LATEST)
