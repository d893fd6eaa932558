"""Evidence that a fault landed while work was in flight, read from the broker at the fault.

A fault after the stream was already indexed proves nothing: the index is right because nothing
was left to break. So a scenario waits until the first documents are indexed while others still
wait, notes at each fault what the broker says was in flight, and asserts it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError

from schemas.kafka_connection import KafkaConnection
from streams.lag import LagReader

__all__ = ["FaultMoment", "InFlight"]


@dataclass(frozen=True)
class FaultMoment:
    """What was in flight when ``fault`` was done: events the group had committed and those it had
    not (published, waiting or in a batch), and whether the publisher was still sending."""

    fault: str
    committed: int
    waiting: int
    publishing: bool


@dataclass
class InFlight:
    """The faults of one scenario, each with the work in flight on ``topic`` for ``group``."""

    bootstrap_servers: str
    topic: str
    group: str
    moments: list[FaultMoment] = field(default_factory=list)

    async def read(self) -> tuple[int, int]:
        """Events the group has committed, and events published that it has not."""
        async with LagReader(KafkaConnection(self.bootstrap_servers)) as reader:
            partitions = await reader.read(self.topic, self.group)
        return sum(p.committed or 0 for p in partitions), sum(p.lag for p in partitions)

    async def before(self, fault: str, publishing: asyncio.Task, timeout: float = 180) -> None:
        """Wait until the stream is in full flow, and note ``fault`` with what the broker says is in
        flight: the caller does the fault right after, milliseconds after that reading."""
        committed, waiting = await self.until_flowing(publishing, timeout)
        self.moments.append(FaultMoment(fault, committed, waiting, not publishing.done()))

    async def until_flowing(self, publishing: asyncio.Task, timeout: float = 180) -> tuple[int, int]:
        """Until the group has committed more than at the last fault (before the first: the first
        documents are indexed; after a fault: the work resumed) while events still wait; returns
        the events committed and waiting then.

        Gives up once the publisher has finished and the group caught up, or after ``timeout``:
        a fault done then finds nothing in flight, and ``assert_mid_stream`` says so.
        """
        since = self.moments[-1].committed if self.moments else 0
        committed, waiting = since, 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(KafkaError):  # a broker restarting: ask again
                committed, waiting = await self.read()
                if committed > since and waiting > 0:
                    break
                if publishing.done() and waiting == 0:
                    break
            await asyncio.sleep(0.1)
        return committed, waiting

    def assert_mid_stream(self, remedy: str, *, while_publishing: bool = False) -> None:
        """Every fault found events waiting (and, with ``while_publishing``, the publisher still
        sending); else the scenario tested a quiet system, and ``remedy`` says what to change."""
        late = [
            moment
            for moment in self.moments
            if moment.waiting == 0 or (while_publishing and not moment.publishing)
        ]
        assert self.moments, "no fault was noted"
        assert not late, f"faults landed after the work they were meant to interrupt: {late}; {remedy}"
