"""Events consumed per second, from the timestamps the consumers put on their own counters.

Each consumer publishes its cumulative count after every batch, stamped with its clock. The rate
is read from those readings, not from when someone asks: a rate measured between two requests
stayed null for a client that polled less often than its window, and on every replica behind the
load balancer that had seen fewer than two requests, which while a backlog drained was all of them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["EventRate"]


@dataclass(frozen=True)
class _Reading:
    at: float
    total: int


class EventRate:
    """Per consumer, its readings of the last ``window_s`` seconds and the one just before them."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._readings: dict[str, deque[_Reading]] = {}

    def record(self, consumer_id: str, at: float, total: int) -> None:
        """A consumer's cumulative count ``total`` as of unix time ``at``."""
        readings = self._readings.setdefault(consumer_id, deque())
        if readings and at < readings[-1].at:
            return  # replayed out of order: the newer reading already says more
        readings.append(_Reading(at, total))
        while len(readings) > 1 and readings[1].at <= at - self.window_s:
            readings.popleft()

    def per_second(self, now: float) -> float | None:
        """Events per second over the last ``window_s`` at unix time ``now``; None until a consumer
        has reported. Each consumer's growth is measured from its newest reading before the window
        (or from its first, the events of which may predate it), so an idle pipeline reads 0."""
        if not self._readings:
            return None
        start = now - self.window_s
        rate = 0.0
        for readings in self._readings.values():
            before = [reading for reading in readings if reading.at <= start]
            baseline = before[-1] if before else readings[0]
            span = now - baseline.at
            if span > 0:
                # A restarted consumer counts from zero under a new id: growth never goes negative.
                rate += max(readings[-1].total - baseline.total, 0) / span
        return rate
