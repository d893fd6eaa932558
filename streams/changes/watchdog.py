"""Notices a stage worker that stopped making progress on a partition, so that it can be restarted.

faust can come out of a rebalance with a partition of the source topic that never progresses
again: the worker looks healthy, yet the group's committed offset stays short of the end (seen
here after ``kill -9`` and a restart; faust-streaming issues #217 and #629 describe the
causes: the flow resumed before the seek to the committed offsets, and partitions never fetched).
The stage is at-least-once with idempotent output, so the cure is cheap and always the same:
restart the worker, which replays from the committed offsets.

The detector watches the group's committed offsets from the outside, as the broker reports them,
so it does not depend on the faust internals that went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.lag import PartitionLag

__all__ = ["Stall", "StallDetector"]


@dataclass(frozen=True)
class Stall:
    """A partition with events waiting whose committed offset has not moved for ``seconds``."""

    partition: int
    committed: int | None
    end_offset: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"partition {self.partition}: committed offset {self.committed} of {self.end_offset} "
            f"has not moved for {self.seconds:.0f} s"
        )


class StallDetector:
    """Fed the group's lag now and then; reports partitions with lag and no progress for too long."""

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._stall_after_s = stall_after_s
        self._clock = clock
        #: partition → (committed offset last seen, when it was first seen at that value)
        self._seen: dict[int, tuple[int | None, float]] = {}

    def reset(self) -> None:
        """Forget what was seen: while the worker rebalances or recovers, no progress is expected."""
        self._seen.clear()

    def observe(self, partitions: Iterable[PartitionLag]) -> list[Stall]:
        now = self._clock()
        stalls = []
        for p in partitions:
            if p.lag == 0:
                self._seen.pop(p.partition, None)
                continue
            committed, since = self._seen.get(p.partition, (None, None))
            if since is None or committed != p.committed:
                self._seen[p.partition] = (p.committed, now)
            elif now - since >= self._stall_after_s:
                stalls.append(Stall(p.partition, p.committed, p.end_offset, now - since))
        return stalls
