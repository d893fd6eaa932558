"""``GET /v1/stats``: the pipeline's counters and events per second, for the status page."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from query_api.generations import ReplicaGenerations
from query_api.services import ServicesDep

__all__ = ["PipelineStats", "router"]

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
    generation: int = Field(default=0, description="the index generation this replica serves searches from")
    generations_ready: list[int] = Field(
        default_factory=list,
        description="the generations whose views this replica holds caught up (the one it serves, "
        "one being built, the one kept for a rollback), as its last heartbeat said",
    )


@router.get("/v1/stats")
async def stats(services: ServicesDep, request: Request) -> PipelineStats:
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
        **_generations(request),
    )


def _generations(request: Request) -> dict[str, Any]:
    """The generation served and those held ready; an app without generations serves 0 alone."""
    generations: ReplicaGenerations | None = getattr(request.app.state, "generations", None)
    if generations is None:
        return {}
    return {"generation": generations.serving.number, "generations_ready": list(generations.ready)}
