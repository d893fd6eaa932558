"""The status page on ``GET /``: a search box, and the pipeline's lag, events/s, freshness and
consumer actors, live.

The page is one static file that calls the JSON API from the browser (``/v1/search``,
``/v1/freshness`` and ``/v1/stats``, the last one defined here), so it needs no build step and shows
exactly what any other client of the API would get.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from query_api.services import Services, get_services

__all__ = ["PipelineStats", "router"]

PAGE = Path(__file__).with_name("static") / "index.html"

router = APIRouter()

#: Without a controller's report, a consumer counts as running while its last counters are this
#: recent; consumers report after every batch, so an idle one drops out after a minute.
RECENT_REPORT_S = 60.0


class PipelineStats(BaseModel):
    """The consumers' counters summed over every consumer instance, and how fast events go through."""

    events_consumed: int
    events_dead_lettered: int
    chunks_embedded: int
    chunks_deleted: int
    consumers: int = Field(
        description="consumer actors of the indexing group that answer, as its controller last "
        "reported; without a controller, consumer instances that reported counters in the last minute"
    )
    consumers_desired: int | None = Field(
        default=None,
        description="consumer actors the indexing group's lag calls for, as its controller last "
        "reported; null until it has",
    )
    consumers_actual: int | None = Field(
        default=None, description="consumer actors of the indexing group that answer; null as above"
    )
    scaling_reason: str | None = Field(default=None, description="the controller's last decision, in words")
    events_per_s: float | None = Field(
        description="events consumed per second over the last 30 s, from the consumers' own "
        "timestamps; null until a consumer has reported"
    )
    now: float = Field(description="the server's clock, unix seconds, to measure ages against")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def status_page() -> HTMLResponse:
    return HTMLResponse(_page())


@cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/v1/stats")
async def stats(services: Annotated[Services, Depends(get_services)]) -> PipelineStats:
    """Counters of the whole pipeline and events consumed per second, for the status page."""
    now = time.time()
    totals = services.stats.totals()
    scaling = services.stats.scaling.get(services.settings.consumer_group)
    return PipelineStats(
        events_consumed=totals.events_consumed,
        events_dead_lettered=totals.events_dead_lettered,
        chunks_embedded=totals.chunks_embedded,
        chunks_deleted=totals.chunks_deleted,
        # Every consumer ever started has its last counters on the stats topic: only the
        # controller knows which actors are alive.
        consumers=scaling.actual if scaling else services.stats.reporting_since(now - RECENT_REPORT_S),
        consumers_desired=scaling.desired if scaling else None,
        consumers_actual=scaling.actual if scaling else None,
        scaling_reason=scaling.reason if scaling else None,
        events_per_s=services.stats.events_per_s(now),
        now=now,
    )
