"""How long this process took to start serving, part by part: one line in its log when it is ready.

A replica that replaces a dead one is measured from the kill to its first answer; this line says
where its own share of that time went (a replica's process may also have been started by Ray
well before it became one: its age says so).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["StartupTimeline", "process_age_s"]


def process_age_s() -> float | None:
    """Seconds since this process started, from /proc; None where /proc cannot tell."""
    try:
        # Field 22, the start time in clock ticks after boot; the name (field 2) may hold spaces.
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")


class StartupTimeline:
    """``mark(part)`` after each part of the start-up; ``summary()`` says how long each took."""

    def __init__(self) -> None:
        self._age_at_start = process_age_s()
        self._started = self._last = time.monotonic()
        self._parts: list[tuple[str, float]] = []

    def mark(self, part: str) -> None:
        now = time.monotonic()
        self._parts.append((part, now - self._last))
        self._last = now

    def summary(self) -> str:
        total = self._last - self._started
        parts = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in self._parts)
        if self._age_at_start is None:
            return f"start-up took {total:.1f} s: {parts}"
        return (
            f"ready {self._age_at_start + total:.1f} s after the process started "
            f"({self._age_at_start:.1f} s of it before the app's start-up began); "
            f"start-up took {total:.1f} s: {parts}"
        )
