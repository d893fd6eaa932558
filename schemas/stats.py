"""The records of the stats topic: each consumer's cumulative counters, and each consumer group's
size as its scaling controller reports it. Written by consumers/ (stats.py, controller.py), read
by the API's status and ``/metrics``; a reader ignores fields it does not know.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BATCH_SECONDS_BUCKETS",
    "FRESHNESS_SECONDS_BUCKETS",
    "SCALING_REPORT_KIND",
    "ConsumerStats",
    "ScalingStats",
]

#: Upper bounds (seconds) of the batch-duration histogram in every consumer's counters.
BATCH_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Upper bounds (seconds) of the freshness histogram: publication to indexed, per event. Fine
#: around the one-second goal (1.0 is a bound, so a p99 over it is read exactly), coarse past 10 s.
FRESHNESS_SECONDS_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Marks the controller's messages on the stats topic, beside the consumers' counters.
SCALING_REPORT_KIND = "consumer_scaling"


class ConsumerStats(BaseModel):
    """One consumer's cumulative counters, as published on the stats topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    consumer_id: str = ""
    #: The group the consumer belongs to: one per index generation. "" from consumers that predate it.
    consumer_group: str = ""
    events_consumed: int = Field(default=0, ge=0)
    events_dead_lettered: int = Field(default=0, ge=0)
    chunks_embedded: int = Field(default=0, ge=0)
    chunks_skipped: int = Field(default=0, ge=0)
    chunks_deleted: int = Field(default=0, ge=0)
    batches: int = Field(default=0, ge=0)
    batch_seconds_sum: float = Field(default=0.0, ge=0)
    #: Cumulative counts per upper bound (Prometheus ``le``), including "+Inf".
    batch_seconds_buckets: dict[str, int] = Field(default_factory=dict)
    #: Seconds from each indexed event's publication to its commit, summed, and counted per upper
    #: bound like ``batch_seconds_buckets`` ("+Inf" counts every event).
    freshness_seconds_sum: float = Field(default=0.0, ge=0)
    freshness_seconds_buckets: dict[str, int] = Field(default_factory=dict)
    updated_at: float = 0.0

    def __add__(self, other: ConsumerStats) -> ConsumerStats:
        return ConsumerStats(
            consumer_id="",
            consumer_group=self.consumer_group if self.consumer_group == other.consumer_group else "",
            events_consumed=self.events_consumed + other.events_consumed,
            events_dead_lettered=self.events_dead_lettered + other.events_dead_lettered,
            chunks_embedded=self.chunks_embedded + other.chunks_embedded,
            chunks_skipped=self.chunks_skipped + other.chunks_skipped,
            chunks_deleted=self.chunks_deleted + other.chunks_deleted,
            batches=self.batches + other.batches,
            batch_seconds_sum=self.batch_seconds_sum + other.batch_seconds_sum,
            batch_seconds_buckets=_sum_buckets(self.batch_seconds_buckets, other.batch_seconds_buckets),
            freshness_seconds_sum=self.freshness_seconds_sum + other.freshness_seconds_sum,
            freshness_seconds_buckets=_sum_buckets(
                self.freshness_seconds_buckets, other.freshness_seconds_buckets
            ),
            updated_at=max(self.updated_at, other.updated_at),
        )


def _sum_buckets(*histograms: dict[str, int]) -> dict[str, int]:
    """The cumulative bucket counts of several histograms of the same bounds, added bound by bound."""
    total: Counter[str] = Counter()
    for buckets in histograms:
        total.update(buckets)
    return dict(total)


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
