"""Prometheus metrics of the whole pipeline, served by the query API on ``/metrics``.

Counters come from the consumers' stats messages, freshness among them (publication to index,
per event, per consumer group: one group per index generation); lag, committed offsets, dead
letters and the oldest waiting event's age from the broker, read when scraped. Each app owns its registry, so
several apps can live in one process. Search latency is this process's own: behind a load
balancer each replica labels it with its name, so that scrapes reaching different replicas give
separate series instead of one that jumps between their counts.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from query_api.gc_pauses import gc_pauses
from query_api.stats import StatsTail
from schemas import Settings
from streams.hops import HopLag, read_pipeline_lag
from streams.lag import LagReader

log = logging.getLogger(__name__)

_COUNTERS = (
    ("events_consumed", "Document events consumed from the events topic"),
    ("events_dead_lettered", "Events sent to the dead-letter topic"),
    ("chunks_embedded", "Chunks embedded and written to the index"),
    ("chunks_skipped", "Chunks left as they were because they were already indexed"),
    ("chunks_deleted", "Stale chunks deleted from the index"),
)


#: The metric read from Kafka when scraped, with those read in the same trip; the rest are in memory.
LAG_METRIC = "ragstream_consumer_lag"
KAFKA_METRICS = frozenset(
    {
        LAG_METRIC,
        "ragstream_consumer_committed_offset",
        "ragstream_dead_letters_total",
        "ragstream_oldest_unindexed_age_seconds",
    }
)

#: A search on a replica's own indexes takes milliseconds; one that goes to Chroma or reranks, tenths.
SEARCH_SECONDS_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class ServedIndex:
    """The index generation a replica answers searches from, and its consumers' group: the
    alerts read the freshness of that group alone (one being built replays old events)."""

    generation: int
    consumer_group: str


@dataclass(frozen=True)
class KafkaReadings:
    """What one scrape read from the broker; each part None where it could not be read."""

    lag: Sequence[HopLag] = ()
    dead_letters: int | None = None
    oldest_unindexed_age_s: float | None = None


class PipelineCollector(Collector):
    """Turns the summed consumer counters and the last lag reading into metric families."""

    def __init__(self, stats: StatsTail, settings: Settings | None = None) -> None:
        self._stats = stats
        self._settings = settings
        self.kafka = KafkaReadings()
        self.served: ServedIndex | None = None

    def collect(self) -> Iterable[Metric]:
        # Sums read from part of the stats topic would go backwards: a counter reset to Prometheus.
        if not self._stats.replaying:
            yield from self._counters()
        if self.served is not None:
            served = InfoMetricFamily(
                "ragstream_serving_generation",
                "The index generation this replica answers searches from, and its consumer group",
            )
            served.add_metric(
                [], {"generation": str(self.served.generation), "consumer_group": self.served.consumer_group}
            )
            yield served

        yield from self._scaling()

        yield from self._kafka()

    def _counters(self) -> Iterable[Metric]:
        totals = self._stats.totals()
        for name, documentation in _COUNTERS:
            yield CounterMetricFamily(f"ragstream_{name}", documentation, value=getattr(totals, name))
        yield HistogramMetricFamily(
            "ragstream_batch_seconds",
            "Seconds a consumer spent on one batch, fetch to commit",
            buckets=_buckets(totals.batch_seconds_buckets, totals.batches),
            sum_value=totals.batch_seconds_sum,
        )
        freshness = HistogramMetricFamily(
            "ragstream_freshness_seconds",
            "Seconds from an event's publication (its record's time on the events topic) until its "
            "chunks were in the index and its offset committed, per consumer group (one per index "
            "generation)",
            labels=["consumer_group"],
        )
        for group, stats in sorted(self._stats.totals_by_group().items()):
            if stats.freshness_seconds_buckets:  # consumers that predate the histogram send none
                freshness.add_metric(
                    [group], _buckets(stats.freshness_seconds_buckets, 0), stats.freshness_seconds_sum
                )
        yield freshness

    def _kafka(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            LAG_METRIC,
            "Events not yet committed, per hop on the way to the index (changes stage, indexer)",
            labels=["hop", "partition"],
        )
        committed = GaugeMetricFamily(
            "ragstream_consumer_committed_offset",
            "Offset each hop's consumer group has committed: it stands still when the hop is stalled",
            labels=["hop", "partition"],
        )
        for hop in self.kafka.lag:
            for partition in hop.partitions:
                lag.add_metric([hop.hop.name, str(partition.partition)], partition.lag)
                if partition.committed is not None:
                    committed.add_metric([hop.hop.name, str(partition.partition)], partition.committed)
        yield lag
        yield committed
        if self.kafka.dead_letters is not None:
            yield CounterMetricFamily(
                "ragstream_dead_letters",
                "Records ever written to the dead-letter topic, by the changes stage or the consumers",
                value=self.kafka.dead_letters,
            )
        if self.kafka.oldest_unindexed_age_s is not None:
            yield GaugeMetricFamily(
                "ragstream_oldest_unindexed_age_seconds",
                "Seconds the oldest event not yet in the index has waited since it was published "
                "(0 when none waits)",
                value=self.kafka.oldest_unindexed_age_s,
            )

    def _scaling(self) -> Iterable[Metric]:
        desired = GaugeMetricFamily(
            "ragstream_consumers_desired",
            "Consumer actors the group's lag calls for, within its limits, as its controller decided",
            labels=["consumer_group"],
        )
        actual = GaugeMetricFamily(
            "ragstream_consumers_actual",
            "Consumer actors of the group that answer its controller (a dead one is not counted)",
            labels=["consumer_group"],
        )
        maximum = GaugeMetricFamily(
            "ragstream_consumers_max",
            "The most consumer actors the group may have: its controller's ceiling where it reports "
            "one, else RAGSTREAM_CONSUMERS_MAX within the partitions",
            labels=["consumer_group"],
        )
        for group, report in sorted(self._stats.scaling.items()):
            desired.add_metric([group], report.desired)
            actual.add_metric([group], report.actual)
            ceiling = report.maximum if report.maximum is not None else self._configured_ceiling(group)
            if ceiling is not None:
                maximum.add_metric([group], ceiling)
        yield desired
        yield actual
        yield maximum
        if self._settings is not None:
            yield GaugeMetricFamily(
                "ragstream_api_replicas_desired",
                "API replicas configured (RAGSTREAM_API_REPLICAS), to compare with those Serve finds healthy",
                value=self._settings.api_replicas,
            )

    def _configured_ceiling(self, group: str) -> int | None:
        settings = self._settings
        if settings is None or group != settings.consumer_group:
            return None
        # The controller also caps by the memory budget, which only it knows.
        return max(min(settings.consumers_max, settings.partitions), 1)


def _buckets(counts: dict[str, int], count: int) -> list[tuple[str, float]]:
    """Cumulative counts per upper bound in order, ending with "+Inf" (``count`` where absent)."""
    buckets = sorted(counts.items(), key=lambda item: _bound(item[0]))
    if not buckets or buckets[-1][0] != "+Inf":
        buckets.append(("+Inf", count))
    return [(bound, float(n)) for bound, n in buckets]


def _bound(text: str) -> float:
    return math.inf if text == "+Inf" else float(text)


class PipelineMetrics:
    """An app's own registry; ``render()`` reads the lag, then formats every metric."""

    def __init__(
        self,
        stats: StatsTail,
        lag_reader: LagReader,
        settings: Settings,
        *,
        replica: str | None = None,
        lag_timeout_s: float = 5.0,
    ) -> None:
        # PipelineCollector names its series only when collected: a ``name[]`` scrape still asks it.
        self.registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
        self._collector = PipelineCollector(stats, settings)
        self.registry.register(self._collector)
        self.registry.register(gc_pauses().histogram)
        self._search_seconds = Histogram(
            "ragstream_search_seconds",
            "Seconds to answer a search, by mode, after any read-your-writes wait",
            labelnames=["mode", "replica"],
            buckets=SEARCH_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._replica = replica or ""
        self._lag_reader = lag_reader
        self._settings = settings
        self._lag_timeout_s = lag_timeout_s

    def observe_search(self, mode: str, seconds: float) -> None:
        """Count one search of ``mode`` that took ``seconds``."""
        self._search_seconds.labels(mode, self._replica).observe(seconds)

    async def render(
        self, names: Collection[str] = (), served: ServedIndex | None = None, settings: Settings | None = None
    ) -> bytes:
        """Every metric, or with ``names`` only those series (Prometheus's ``name[]`` filter, by
        sample name as in ``ragstream_api_gc_pause_seconds_count``). Kafka is asked for nothing
        unless one of ``KAFKA_METRICS`` is among them. ``served``: the generation the request's
        services answer from, for ``ragstream_serving_generation_info``; ``settings``, that
        generation's, whose consumer group the lag and the oldest waiting event are read for
        (default: the settings this was made with, generation 0's)."""
        if not names or KAFKA_METRICS & set(names):
            self._collector.kafka = await self._read_kafka(settings or self._settings)
        else:
            self._collector.kafka = KafkaReadings()
        self._collector.served = served
        # No await between setting the lag and formatting it: concurrent scrapes cannot interleave.
        return generate_latest(self.registry.restricted_registry(names) if names else self.registry)

    async def _read_kafka(self, settings: Settings) -> KafkaReadings:
        # Imported here: the freshness routes import the services, which import this module.
        from query_api.freshness import oldest_unindexed_age_s

        try:
            async with asyncio.timeout(self._lag_timeout_s):
                await self._lag_reader.start()
                lag = await read_pipeline_lag(self._lag_reader, settings)
                ends = await self._lag_reader.end_offsets(settings.dlq_topic)
                age = await oldest_unindexed_age_s(settings, lag)
        except (KafkaError, OSError, TimeoutError) as exc:
            # A scrape still reports the counters; what we cannot read is left out, not shown as 0.
            log.warning("pipeline metrics not read from Kafka: %r", exc)
            return KafkaReadings()
        return KafkaReadings(lag, sum(ends.values()), age)
