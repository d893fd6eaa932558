"""The hops an event takes from ``docs.events`` to the index, and their lag.

With the changes stage in front (the default), an event crosses two consumer groups: the stage
reads ``docs.events`` and writes ``docs.changes``; the indexers read ``docs.changes``. Without it
the indexers read ``docs.events`` directly. Lag, freshness, "is everything indexed" and
read-your-writes all have to look at every hop, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import Settings
from streams.lag import LagReader, PartitionLag

__all__ = ["Hop", "HopLag", "drained", "pipeline_hops", "read_pipeline_lag"]


@dataclass(frozen=True)
class Hop:
    """One consumer group reading one topic on the way to the index."""

    name: str
    topic: str
    group: str


@dataclass(frozen=True)
class HopLag:
    hop: Hop
    partitions: list[PartitionLag]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


def pipeline_hops(settings: Settings) -> list[Hop]:
    """The hops from the events topic to the index, upstream first."""
    indexer = Hop("indexer", settings.input_topic, settings.consumer_group)
    if settings.consumer_input == "changes":
        return [Hop("changes stage", settings.events_topic, settings.streams_app_id), indexer]
    return [indexer]


async def read_pipeline_lag(reader: LagReader, settings: Settings) -> list[HopLag]:
    """The lag of every hop, read upstream first.

    The order matters: when the stage's lag reads 0 and, afterwards, the indexers' lag reads 0 too,
    everything the stage had emitted by the first read is indexed. Read the other way round, the
    stage could emit in between and both could read 0 with a change still unindexed.
    """
    return [HopLag(hop, await reader.read(hop.topic, hop.group)) for hop in pipeline_hops(settings)]


def drained(lags: list[HopLag]) -> bool:
    """Every hop's committed offsets are at the end offsets: every published event is indexed."""
    return all((p.committed or 0) == p.end_offset for hop in lags for p in hop.partitions)
