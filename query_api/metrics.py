"""Prometheus metrics of the whole pipeline, served by the query API on ``/metrics``.

Counters come from the consumers' stats messages and lag from the broker, both read when scraped;
each app owns its registry, so several apps can live in one process.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Collection, Iterable, Sequence

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
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


#: The one metric read from Kafka when scraped; the rest are in memory.
LAG_METRIC = "ragstream_consumer_lag"


class PipelineCollector(Collector):
    """Turns the summed consumer counters and the last lag reading into metric families."""

    def __init__(self, stats: StatsTail) -> None:
        self._stats = stats
        self.lag: Sequence[HopLag] = ()

    def collect(self) -> Iterable[Metric]:
        totals = self._stats.totals()
        for name, documentation in _COUNTERS:
            yield CounterMetricFamily(f"ragstream_{name}", documentation, value=getattr(totals, name))

        buckets = sorted(totals.batch_seconds_buckets.items(), key=lambda item: _bound(item[0]))
        if not buckets or buckets[-1][0] != "+Inf":
            buckets.append(("+Inf", totals.batches))
        yield HistogramMetricFamily(
            "ragstream_batch_seconds",
            "Seconds a consumer spent on one batch, fetch to commit",
            buckets=[(bound, float(count)) for bound, count in buckets],
            sum_value=totals.batch_seconds_sum,
        )

        yield from self._scaling()

        lag = GaugeMetricFamily(
            LAG_METRIC,
            "Events not yet committed, per hop on the way to the index (changes stage, indexer)",
            labels=["hop", "partition"],
        )
        for hop in self.lag:
            for partition in hop.partitions:
                lag.add_metric([hop.hop.name, str(partition.partition)], partition.lag)
        yield lag

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
        for group, report in sorted(self._stats.scaling.items()):
            desired.add_metric([group], report.desired)
            actual.add_metric([group], report.actual)
        yield desired
        yield actual


def _bound(text: str) -> float:
    return math.inf if text == "+Inf" else float(text)


class PipelineMetrics:
    """An app's own registry; ``render()`` reads the lag, then formats every metric."""

    def __init__(
        self, stats: StatsTail, lag_reader: LagReader, settings: Settings, *, lag_timeout_s: float = 5.0
    ) -> None:
        # PipelineCollector names its series only when collected: a ``name[]`` scrape still asks it.
        self.registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
        self._collector = PipelineCollector(stats)
        self.registry.register(self._collector)
        self.registry.register(gc_pauses().histogram)
        self._lag_reader = lag_reader
        self._settings = settings
        self._lag_timeout_s = lag_timeout_s

    async def render(self, names: Collection[str] = ()) -> bytes:
        """Every metric, or with ``names`` only those series (Prometheus's ``name[]`` filter, by
        sample name as in ``ragstream_api_gc_pause_seconds_count``). Kafka is asked for the
        consumer lag only when the lag is among them."""
        if not names or LAG_METRIC in names:
            await self._read_lag()
        else:
            self._collector.lag = ()
        # No await between setting the lag and formatting it: concurrent scrapes cannot interleave.
        return generate_latest(self.registry.restricted_registry(names) if names else self.registry)

    async def _read_lag(self) -> None:
        try:
            async with asyncio.timeout(self._lag_timeout_s):
                await self._lag_reader.start()
                self._collector.lag = await read_pipeline_lag(self._lag_reader, self._settings)
        except (KafkaError, OSError, TimeoutError) as exc:
            # A scrape still reports the counters; a lag we cannot read is left out, not shown as 0.
            log.warning("consumer lag not read: %r", exc)
            self._collector.lag = ()
