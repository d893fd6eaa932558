"""The consumers' counters and the scaler's counts, tailed from the stats topic.

Every consumer publishes its cumulative counters under its own id; a restarted consumer starts
again from zero under a new id. The pipeline's totals are therefore the sum, over all ids, of
each id's latest message, and they never go backwards. Beside them, the controller that scales
a consumer group publishes the group's desired and actual actor counts (``kind`` says which is
which); the latest per group is kept.
"""

from __future__ import annotations

import asyncio
import logging
import re

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from query_api.background import BackgroundLoop
from query_api.event_rate import EventRate
from schemas.kafka_connection import KafkaConnection
from schemas.stats import SCALING_REPORT_KIND, ConsumerStats, ScalingStats
from streams.kafka_clients import client_options

__all__ = ["ConsumerStats", "ScalingStats", "StatsTail"]

log = logging.getLogger(__name__)


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

    @property
    def consumers(self) -> dict[str, ConsumerStats]:
        """Latest counters per consumer id."""
        return dict(self._latest)

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
                # Without a group every restart reads from the beginning again; replaying the
                # messages in order leaves the same latest value per key.
                message: ConsumerRecord[bytes, bytes]
                async for message in consumer:
                    self.apply(message.key, message.value)
            except KafkaError as exc:
                log.warning("stats topic %s unavailable, retrying: %s", self._topic, exc)
            except Exception:
                # Frozen counters would look like an idle pipeline: report the bug and keep reading.
                log.exception("reading stats topic %s failed, retrying", self._topic)
            finally:
                await consumer.stop()
            await asyncio.sleep(self._retry_backoff_s)
