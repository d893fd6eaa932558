"""Catches the records faust skipped, so that the stage handles every offset of its partitions.

faust-streaming can lose its place in a partition after a restart and a rebalance. Seen here
after ``kill -9``: a worker handled offsets 88 and 89 of a partition, then 102. faust takes such
a jump for a gap in the log (which transactions' markers and compaction do leave), marks the
offsets between as done and commits past them, so those documents' changes were never emitted.
A skip with no later record behind it leaves the committed offset short instead; the watchdog
catches that one.

So the stage checks each record's offset against the one it expects next in that partition,
starting from the group's committed offset when it first meets the partition, and reads any
offsets in between straight from the broker, to handle them first, in order, and then acknowledge
them to faust so that its commits pass them. Offsets that hold no record (markers, compacted away)
read as nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["OffsetContinuity"]


class OffsetContinuity:
    """Per partition, the offset the next record should have."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def knows(self, partition: int) -> bool:
        return partition in self._next

    def start_at(self, partition: int, offset: int) -> None:
        """Expect ``offset`` next: where the consumer was told to resume."""
        self._next[partition] = offset

    def forget(self, partitions: Iterable[int]) -> None:
        """After a rebalance the consumer resumes from the committed offsets: start again there."""
        for partition in partitions:
            self._next.pop(partition, None)

    def skipped_before(self, partition: int, offset: int) -> range:
        """The offsets between the last record and this one (none if it follows on), then expects
        the offset after it. A record at or below the expected offset is a replay (the consumer
        sought back) and skips nothing."""
        expected = self._next[partition]
        self._next[partition] = offset + 1
        return range(expected, offset) if offset > expected else range(0)
