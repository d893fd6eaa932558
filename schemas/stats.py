"""The records of the stats topic: each consumer's cumulative counters, and each consumer group's
size as its scaling controller reports it. Written by consumers/ (stats.py, controller.py), read
by the API's status and ``/metrics``; a reader ignores fields it does not know.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BATCH_SECONDS_BUCKETS", "SCALING_REPORT_KIND", "ConsumerStats", "ScalingStats"]

#: Upper bounds (seconds) of the batch-duration histogram in every consumer's counters.
BATCH_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Marks the controller's messages on the stats topic, beside the consumers' counters.
SCALING_REPORT_KIND = "consumer_scaling"


class ConsumerStats(BaseModel):
    """One consumer's cumulative counters, as published on the stats topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    consumer_id: str = ""
    events_consumed: int = Field(default=0, ge=0)
    events_dead_lettered: int = Field(default=0, ge=0)
    chunks_embedded: int = Field(default=0, ge=0)
    chunks_skipped: int = Field(default=0, ge=0)
    chunks_deleted: int = Field(default=0, ge=0)
    batches: int = Field(default=0, ge=0)
    batch_seconds_sum: float = Field(default=0.0, ge=0)
    #: Cumulative counts per upper bound (Prometheus ``le``), including "+Inf".
    batch_seconds_buckets: dict[str, int] = Field(default_factory=dict)
    updated_at: float = 0.0

    def __add__(self, other: ConsumerStats) -> ConsumerStats:
        buckets = Counter(self.batch_seconds_buckets)
        buckets.update(other.batch_seconds_buckets)
        return ConsumerStats(
            consumer_id="",
            events_consumed=self.events_consumed + other.events_consumed,
            events_dead_lettered=self.events_dead_lettered + other.events_dead_lettered,
            chunks_embedded=self.chunks_embedded + other.chunks_embedded,
            chunks_skipped=self.chunks_skipped + other.chunks_skipped,
            chunks_deleted=self.chunks_deleted + other.chunks_deleted,
            batches=self.batches + other.batches,
            batch_seconds_sum=self.batch_seconds_sum + other.batch_seconds_sum,
            batch_seconds_buckets=dict(buckets),
            updated_at=max(self.updated_at, other.updated_at),
        )


class ScalingStats(BaseModel):
    """A consumer group's size as its scaling controller last reported it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["consumer_scaling"]
    consumer_group: str
    desired: int = Field(ge=0, description="consumer actors the lag calls for, within the limits")
    actual: int = Field(ge=0, description="consumer actors that answer (a dead one is not serving)")
    members: int = Field(default=0, ge=0, description="actors started, answering or not")
    maximum: int | None = Field(
        default=None, ge=0, description="the most actors the controller may run (limits, partitions, memory)"
    )
    reason: str = ""
    updated_at: float = 0.0
