"""The consumers' counters and the scaler's counts, tailed from the stats topic.

Every consumer publishes its cumulative counters under its own id; a restarted consumer starts
again from zero under a new id. The pipeline's totals are therefore the sum, over all ids, of
each id's latest message, and they never go backwards. Beside them, the controller that scales
a consumer group publishes the group's desired and actual actor counts (``kind`` says which is
which); the latest per group is kept.

Two things would still make the sums go backwards, and Prometheus would read either as a counter
reset and count everything again in its rates: a replica that has read only part of the topic
since it started, and one that reads it again from the start after losing Kafka. So the sums are
kept from ``/metrics`` while the tail replays what was on the topic when it started
(``replaying``), and an id's counters are never replaced by older ones.
"""

from __future__ import annotations

import asyncio
import logging
import re

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from query_api.event_rate import EventRate
from schemas.kafka_connection import KafkaConnection
from schemas.stats import SCALING_REPORT_KIND, ConsumerStats, ScalingStats
from streams.background import BackgroundLoop
from streams.kafka_clients import client_options

__all__ = ["ConsumerStats", "ScalingStats", "StatsTail"]

log = logging.getLogger(__name__)

#: How long one fetch waits for messages before the tail looks again whether it has replayed.
POLL_MS = 500


class StatsTail(BackgroundLoop):
    """Reads the stats topic from the beginning in a background task, keeping each consumer's latest.

    ``start()``/``stop()`` are idempotent. While the broker or the topic is missing the task keeps
    retrying, so the API can start before the rest of the pipeline.
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        *,
        retry_backoff_s: float = 2.0,
        metadata_max_age_ms: int = 5_000,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._retry_backoff_s = retry_backoff_s
        self._metadata_max_age_ms = metadata_max_age_ms
        self._latest: dict[str, ConsumerStats] = {}
        self._scaling: dict[str, ScalingStats] = {}
        self._rate = EventRate()
        self._task: asyncio.Task[None] | None = None
        #: Where the topic ended when the tail first read it; None until it is assigned.
        self._replay_ends: dict[TopicPartition, int] | None = None
        self._replayed = False

    @property
    def consumers(self) -> dict[str, ConsumerStats]:
        """Latest counters per consumer id."""
        return dict(self._latest)

    @property
    def replaying(self) -> bool:
        """Whether the tail runs and has not yet read what the topic held when it started: its
        sums are then short of the counters' true values."""
        return self._task is not None and not self._replayed

    @property
    def scaling(self) -> dict[str, ScalingStats]:
        """Latest scaling report per consumer group."""
        return dict(self._scaling)

    def events_per_s(self, now: float) -> float | None:
        """Events consumed per second over the last half minute, as of unix time ``now``, read
        from the consumers' own timestamps; None until a consumer has reported."""
        return self._rate.per_second(now)

    def reporting_since(self, since: float) -> int:
        """Consumer ids whose latest counters are stamped at or after unix time ``since``: a dead
        consumer's last message stays on the topic for good, and its id is never used again."""
        return sum(1 for stats in self._latest.values() if stats.updated_at >= since)

    def totals(self) -> ConsumerStats:
        total = ConsumerStats()
        for stats in self._latest.values():
            total += stats
        return total

    def totals_by_group(self) -> dict[str, ConsumerStats]:
        """The counters summed per consumer group, which is one per index generation ("" holds
        consumers that did not say theirs)."""
        groups: dict[str, ConsumerStats] = {}
        for stats in self._latest.values():
            held = groups.get(stats.consumer_group)
            groups[stats.consumer_group] = stats if held is None else held + stats
        return groups

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Record one message from the stats topic; a malformed one is logged and skipped."""
        if value is None:
            # A tombstone would make the totals go backwards; counters only ever grow.
            return
        try:
            message = orjson.loads(value)
            if isinstance(message, dict) and message.get("kind") == SCALING_REPORT_KIND:
                scaling = ScalingStats.model_validate(message)
                self._scaling[scaling.consumer_group] = scaling
                return
            stats = ConsumerStats.model_validate(message)
        except (orjson.JSONDecodeError, ValidationError) as exc:
            log.warning("skipping malformed message on %s (key %r): %s", self._topic, key, exc)
            return
        consumer_id = key.decode("utf-8", errors="replace") if key else stats.consumer_id
        held = self._latest.get(consumer_id)
        if held is not None and stats.updated_at < held.updated_at:
            return  # read again since: the newer counters stay
        self._latest[consumer_id] = stats
        self._rate.record(consumer_id, stats.updated_at, stats.events_consumed)

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                **client_options(self._kafka),
                group_id=None,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                metadata_max_age_ms=self._metadata_max_age_ms,
            )
            # A pattern, not the topic's name: naming a missing topic in a metadata request asks the
            # broker to create it, while a pattern just waits until the topic shows up.
            consumer.subscribe(pattern=f"^{re.escape(self._topic)}$")
            try:
                await consumer.start()
                # aiokafka's group-less consumer cannot be stopped before its helper task has run.
                await asyncio.sleep(0)
                # Without a group every restart reads from the beginning again; ``apply`` keeps
                # the newest value per key whatever the order it reads them in.
                while True:
                    batch = await consumer.getmany(timeout_ms=POLL_MS)
                    for messages in batch.values():
                        for message in messages:
                            self.apply(message.key, message.value)
                    if not self._replayed:
                        self._replayed = await self._has_replayed(consumer)
            except KafkaError as exc:
                log.warning("stats topic %s unavailable, retrying: %s", self._topic, exc)
            except Exception:
                # Frozen counters would look like an idle pipeline: report the bug and keep reading.
                log.exception("reading stats topic %s failed, retrying", self._topic)
            finally:
                await consumer.stop()
            await asyncio.sleep(self._retry_backoff_s)

    async def _has_replayed(self, consumer: AIOKafkaConsumer) -> bool:
        """Whether the tail has read every message the topic held when it was first assigned."""
        assigned = consumer.assignment()
        if not assigned:
            # No topic yet: nothing to replay. (A topic not assigned yet is in the metadata.)
            return consumer.partitions_for_topic(self._topic) is None
        if self._replay_ends is None:
            self._replay_ends = await consumer.end_offsets(list(assigned))
        for partition, end in self._replay_ends.items():
            if partition in assigned and await consumer.position(partition) < end:
                return False
        return True
