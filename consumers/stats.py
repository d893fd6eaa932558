"""Cumulative counters of one consumer, published to the stats topic after every batch (the record
is schemas.stats.ConsumerStats).

The query API sums the latest message of every consumer id into its ``/metrics``; a restarted
consumer gets a new id, so totals never go backwards.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field

import orjson

from consumers.batch_timings import BatchTimings
from consumers.indexer import BatchResult
from schemas.stats import BATCH_SECONDS_BUCKETS


def _empty_buckets() -> dict[str, int]:
    return {**{str(b): 0 for b in BATCH_SECONDS_BUCKETS}, "+Inf": 0}


@dataclass
class ConsumerCounters:
    consumer_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    events_consumed: int = 0
    events_dead_lettered: int = 0
    chunks_embedded: int = 0
    chunks_skipped: int = 0
    chunks_deleted: int = 0
    batches: int = 0
    batch_seconds_sum: float = 0.0
    batch_seconds_buckets: dict[str, int] = field(default_factory=_empty_buckets)
    #: Wall seconds per part of the work, summed over every batch; a JSON object in the message.
    #: Readers that do not know the field ignore it (the query API's model drops extra keys).
    part_seconds: BatchTimings = field(default_factory=BatchTimings)
    updated_at: float = 0.0

    def record_batch(
        self,
        events: int,
        dead_lettered: int,
        result: BatchResult,
        seconds: float,
        timings: BatchTimings | None = None,
    ) -> None:
        self.events_consumed += events
        self.events_dead_lettered += dead_lettered
        self.chunks_embedded += result.chunks_embedded
        self.chunks_skipped += result.chunks_skipped
        self.chunks_deleted += result.chunks_deleted
        self.batches += 1
        self.batch_seconds_sum += seconds
        for bound in BATCH_SECONDS_BUCKETS:
            if seconds <= bound:
                self.batch_seconds_buckets[str(bound)] += 1
        self.batch_seconds_buckets["+Inf"] += 1
        if timings is not None:
            self.part_seconds.accumulate(timings)
        self.updated_at = time.time()

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))
