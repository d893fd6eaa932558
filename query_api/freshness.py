"""How fresh the index is: lag per partition, age of the oldest event waiting, last indexed time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from query_api.models import FreshnessResponse, HopFreshness, PartitionFreshness
from query_api.services import Services
from schemas import Settings
from schemas.kafka_connection import KafkaConnection
from streams.hops import HopLag, read_pipeline_lag
from streams.kafka_clients import client_options

log = logging.getLogger(__name__)

__all__ = ["oldest_unindexed_age_s", "read_freshness"]

#: The longest the oldest-event lookup may take; past it the ages are left out, with a note.
OLDEST_EVENT_TIMEOUT_S = 2.0


async def read_freshness(services: Services) -> FreshnessResponse:
    settings = services.settings
    await services.lag_reader.start()
    hops = [
        await _hop_freshness(settings, lag) for lag in await read_pipeline_lag(services.lag_reader, settings)
    ]
    notes = [hop_note for _, hop_note in hops if hop_note]
    views = [view for view, _ in hops]
    indexer = views[-1]
    ages = [view.oldest_unindexed_age_s for view in views if view.oldest_unindexed_age_s is not None]
    last = services.stats.totals().updated_at or None
    return FreshnessResponse(
        topic=indexer.topic,
        consumer_group=indexer.consumer_group,
        lag=sum(view.lag for view in views),
        oldest_unindexed_age_s=max(ages, default=None),
        oldest_unindexed_note="; ".join(notes) or None,
        last_indexed_at=last,
        last_indexed_age_s=None if last is None else max(time.time() - last, 0.0),
        partitions=indexer.partitions,
        hops=views,
    )


async def oldest_unindexed_age_s(settings: Settings, lags: Sequence[HopLag]) -> float | None:
    """Seconds the oldest event not yet through every hop has waited: 0 when none waits, None when
    a waiting event's timestamp could not be read (a guess would hide or invent a delay)."""
    oldest = 0.0
    for hop_lag in lags:
        view, note = await _hop_freshness(settings, hop_lag)
        if note is not None:
            return None
        oldest = max(oldest, view.oldest_unindexed_age_s or 0.0)
    return oldest


async def _hop_freshness(settings: Settings, hop_lag: HopLag) -> tuple[HopFreshness, str | None]:
    """The hop's lag, and the age of the oldest event it has not passed on yet (with a note if unread)."""
    lags = hop_lag.partitions
    waiting = {lag.partition: lag.committed or 0 for lag in lags if lag.lag > 0}
    ages: dict[int, float] = {}
    note = None
    if waiting:
        try:
            async with asyncio.timeout(OLDEST_EVENT_TIMEOUT_S):
                stamps = await _timestamps_at(settings.kafka, hop_lag.hop.topic, waiting)
            now = time.time()
            ages = {partition: max(now - stamp, 0.0) for partition, stamp in stamps.items()}
        except (TimeoutError, KafkaError) as exc:
            topic = hop_lag.hop.topic
            note = f"reading the oldest waiting events of {topic} failed: {type(exc).__name__}: {exc}"
            log.warning("freshness: %s", note)
        if len(ages) < len(waiting) and note is None:
            note = (
                f"the oldest waiting event of some partitions of {hop_lag.hop.topic} could not be read "
                "(removed by retention?)"
            )
    view = HopFreshness(
        name=hop_lag.hop.name,
        topic=hop_lag.hop.topic,
        consumer_group=hop_lag.hop.group,
        lag=hop_lag.lag,
        oldest_unindexed_age_s=max(ages.values(), default=None),
        partitions=[
            PartitionFreshness(
                partition=lag.partition,
                committed=lag.committed,
                end_offset=lag.end_offset,
                lag=lag.lag,
                oldest_unindexed_age_s=ages.get(lag.partition),
            )
            for lag in lags
        ],
    )
    return view, note


async def _timestamps_at(kafka: KafkaConnection, topic: str, offsets: dict[int, int]) -> dict[int, float]:
    """Unix seconds of the record at each partition's offset, read by a short-lived consumer."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # One record per partition is all this reads; a small fetch keeps big documents cheap.
        max_partition_fetch_bytes=64 * 1024,
        fetch_max_wait_ms=50,
    )
    found: dict[int, float] = {}
    try:
        await consumer.start()
        # aiokafka's group-less consumer cannot be stopped before its helper task has run.
        await asyncio.sleep(0)
        tps = [TopicPartition(topic, partition) for partition in offsets]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, offsets[tp.partition])
        while len(found) < len(offsets):
            batch = await consumer.getmany(timeout_ms=200, max_records=len(offsets))
            for tp, records in batch.items():
                if records and tp.partition not in found:
                    found[tp.partition] = records[0].timestamp / 1000
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return found
