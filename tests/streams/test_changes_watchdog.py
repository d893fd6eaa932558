"""The stage's watchdog: which partitions count as stalled."""

from __future__ import annotations

from streams.changes.watchdog import StallDetector
from streams.lag import PartitionLag


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lag(partition: int, committed: int | None, end: int) -> PartitionLag:
    return PartitionLag("docs.events", partition, committed, end, end - (committed or 0))


def test_a_partition_with_lag_and_no_progress_for_the_timeout_is_stalled():
    clock = Clock()
    detector = StallDetector(30, clock)
    assert detector.observe([lag(0, 5, 9), lag(1, None, 3)]) == []
    clock.now = 29
    assert detector.observe([lag(0, 5, 9), lag(1, None, 3)]) == []
    clock.now = 30

    stalls = detector.observe([lag(0, 5, 9), lag(1, None, 3)])

    assert [(s.partition, s.committed, s.end_offset, s.seconds) for s in stalls] == [
        (0, 5, 9, 30),
        (1, None, 3, 30),
    ]
    assert str(stalls[0]) == "partition 0: committed offset 5 of 9 has not moved for 30 s"


def test_progress_or_an_empty_backlog_restarts_the_clock():
    clock = Clock()
    detector = StallDetector(30, clock)
    detector.observe([lag(0, 5, 9), lag(1, 2, 3)])
    clock.now = 20
    detector.observe([lag(0, 6, 9), lag(1, 3, 3)])  # 0 moved, 1 caught up
    clock.now = 45
    assert detector.observe([lag(0, 6, 9), lag(1, 3, 8)]) == []  # 1 has lag again: a new clock

    clock.now = 49
    assert detector.observe([lag(0, 6, 9), lag(1, 3, 8)]) == []
    clock.now = 50
    assert [s.partition for s in detector.observe([lag(0, 6, 9), lag(1, 3, 8)])] == [0]
    clock.now = 75
    assert [s.partition for s in detector.observe([lag(0, 6, 9), lag(1, 3, 8)])] == [0, 1]


def test_reset_forgets_what_was_seen():
    clock = Clock()
    detector = StallDetector(30, clock)
    detector.observe([lag(0, 5, 9)])
    clock.now = 25
    detector.reset()
    detector.observe([lag(0, 5, 9)])
    clock.now = 50
    assert detector.observe([lag(0, 5, 9)]) == []
    clock.now = 55
    assert [s.partition for s in detector.observe([lag(0, 5, 9)])] == [0]
