"""The status page on ``GET /``: a search box, and the pipeline's lag, events/s, freshness and
consumer actors, live.

The page is one static file that calls the JSON API from the browser (``/v1/search``,
``/v1/freshness`` and ``/v1/stats``, the last one defined here), so it needs no build step and shows
exactly what any other client of the API would get.
"""

from __future__ import annotations

import time
from collections import deque
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from query_api.services import Services, get_services

__all__ = ["EventRate", "PipelineStats", "router"]

PAGE = Path(__file__).with_name("static") / "index.html"

router = APIRouter()


class PipelineStats(BaseModel):
    """The consumers' counters summed over every consumer instance, and how fast events go through."""

    events_consumed: int
    events_dead_lettered: int
    chunks_embedded: int
    chunks_deleted: int
    consumers: int = Field(description="consumer instances that have reported counters")
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
        description="events consumed per second over the last few seconds; null until two readings"
    )
    now: float = Field(description="the server's clock, unix seconds, to measure ages against")


class EventRate:
    """Events per second, from the cumulative count read each time someone asks.

    The consumers report cumulative counters once per batch; the rate is the growth of their sum
    between the oldest reading of the last ``window_s`` seconds and now.
    """

    def __init__(self, window_s: float = 10.0, min_span_s: float = 1.0) -> None:
        self._window_s = window_s
        # Two readings a few milliseconds apart (two open pages) would give a meaningless rate.
        self._min_span_s = min_span_s
        self._readings: deque[tuple[float, int]] = deque()

    def observe(self, at: float, total: int) -> float | None:
        """Record ``total`` events consumed at monotonic time ``at``; the rate, or None if too early."""
        self._readings.append((at, total))
        while at - self._readings[0][0] > self._window_s:
            self._readings.popleft()
        since, before = self._readings[0]
        if at - since < self._min_span_s:
            return None
        # Totals never shrink, but a reading taken mid-restart must not show a negative rate.
        return max(total - before, 0) / (at - since)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def status_page() -> HTMLResponse:
    return HTMLResponse(_page())


@cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/v1/stats")
async def stats(request: Request, services: Annotated[Services, Depends(get_services)]) -> PipelineStats:
    """Counters of the whole pipeline and events consumed per second, for the status page."""
    totals = services.stats.totals()
    scaling = services.stats.scaling.get(services.settings.consumer_group)
    # Kept on the app, not in this module: each app (and each test's app) has its own pipeline.
    rate: EventRate | None = getattr(request.app.state, "event_rate", None)
    if rate is None:
        rate = request.app.state.event_rate = EventRate()
    return PipelineStats(
        events_consumed=totals.events_consumed,
        events_dead_lettered=totals.events_dead_lettered,
        chunks_embedded=totals.chunks_embedded,
        chunks_deleted=totals.chunks_deleted,
        consumers=len(services.stats.consumers),
        consumers_desired=scaling.desired if scaling else None,
        consumers_actual=scaling.actual if scaling else None,
        scaling_reason=scaling.reason if scaling else None,
        events_per_s=rate.observe(time.monotonic(), totals.events_consumed),
        now=time.time(),
    )
