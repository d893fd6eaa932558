"""Waiting until consumer groups have committed everything published to their topics.

How a test, a benchmark or ``ragstream eval`` knows that what it published is indexed: every hop
(`streams.hops`) has committed the end offset of every partition of its topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiokafka.errors import KafkaError

from deploy._process import DeployError
from schemas import Settings
from streams.hops import Hop, HopLag, pipeline_hops
from streams.lag import LagReader

__all__ = ["DrainTimeout", "wait_drained"]


class DrainTimeout(DeployError, TimeoutError):
    """The hops had not committed everything in time; ``lags`` is their last reading ([] when none
    could be read)."""

    def __init__(self, timeout: float, hops: Sequence[Hop], lags: list[HopLag], error: str) -> None:
        self.lags = lags
        pending = "; ".join(_pending(lag) for lag in lags if not _hop_drained(lag))
        if not lags:
            pending = f"no lag could be read from {', '.join(_named(hop) for hop in hops)}"
        super().__init__(f"not drained after {timeout:.0f} s: {pending}{error}")


def _named(hop: Hop) -> str:
    return f"{hop.name} (group {hop.group!r} on {hop.topic!r})"


def _pending(lag: HopLag) -> str:
    if not lag.partitions:
        return f"{_named(lag.hop)}: the topic does not exist"
    behind = [
        f"partition {p.partition} committed {'nothing' if p.committed is None else p.committed} "
        f"of {p.end_offset}"
        for p in lag.partitions
        if (p.committed or 0) != p.end_offset
    ]
    return f"{_named(lag.hop)}: {', '.join(behind)}"


def _hop_drained(lag: HopLag) -> bool:
    # A topic that does not exist yet has nothing committed: not drained, unlike streams.hops.drained.
    return bool(lag.partitions) and all((p.committed or 0) == p.end_offset for p in lag.partitions)


# A timeout parameter, not asyncio.timeout at the call: DrainTimeout says which partitions were
# still behind, which only the loop that read their lag knows.
async def wait_drained(
    settings: Settings,
    *,
    timeout: float,  # noqa: ASYNC109
    hops: Sequence[Hop] | None = None,
    poll_s: float = 0.5,
    check: Callable[[], object] | None = None,
    on_lag: Callable[[list[HopLag]], object] | None = None,
    broker_may_restart: bool = False,
) -> list[HopLag]:
    """Return once every hop's group has committed the end offset of every partition of its topic;
    the hops are the pipeline's (`pipeline_hops(settings)`: the changes stage, then the indexers)
    unless given. Returns the last reading.

    Every ``poll_s`` the lag is read, upstream hop first (see `read_pipeline_lag`), and handed to
    ``on_lag``; then ``check`` is called while not drained (a consumer group's ``check``, which
    raises when one of its actors died). With ``broker_may_restart`` a broker that does not answer
    counts as not drained yet. After ``timeout`` seconds, raises `DrainTimeout`, which says what
    was still pending.
    """
    hops = list(hops) if hops is not None else pipeline_hops(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    lags: list[HopLag] = []
    error = ""
    reader = LagReader(settings.kafka)
    try:
        while True:
            try:
                await reader.start()
                lags = [HopLag(hop, await reader.read(hop.topic, hop.group)) for hop in hops]
            except KafkaError as exc:
                if not broker_may_restart:
                    raise
                # Fresh connections next time: the broker may come back on the same port.
                await reader.stop()
                error = f" (last error: {type(exc).__name__}: {exc})"
            else:
                if on_lag is not None:
                    on_lag(lags)
                if all(_hop_drained(lag) for lag in lags):
                    return lags
            if check is not None:
                check()
            if loop.time() >= deadline:
                raise DrainTimeout(timeout, hops, lags, error)
            await asyncio.sleep(poll_s)
    finally:
        await reader.stop()
