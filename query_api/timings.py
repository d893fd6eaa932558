"""Where a request's time went, for the ``Server-Timing`` response header.

Browsers' developer tools and most HTTP clients show it; the query bench sums it per phase.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Timings"]


class Timings:
    """Named wall-clock spans of one request, in milliseconds; a span measured twice adds up."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.descriptions: dict[str, str] = {}

    def describe(self, name: str, description: str) -> None:
        """Say how a step was done (Server-Timing's ``desc``), e.g. which index answered."""
        self.descriptions[name] = description

    def add(self, name: str, ms: float) -> None:
        """Count ``ms`` more for the step (measured elsewhere, e.g. on another thread)."""
        self.ms[name] = self.ms.get(name, 0.0) + ms

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        # Wall time, awaits included: what the request waited for, not the CPU it used.
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - started) * 1000)

    def header(self) -> str:
        """The ``Server-Timing`` value, e.g. ``embed;dur=3.10, vector;dur=0.92;desc="replica"``."""
        parts = []
        for name, ms in self.ms.items():
            description = self.descriptions.get(name)
            parts.append(f"{name};dur={ms:.2f}" + (f';desc="{description}"' if description else ""))
        return ", ".join(parts)
