"""Whether a replica belongs in the load balancer: its views current, Kafka and Chroma reachable.

Ray Serve asks each replica's ``check_health`` every few seconds and replaces a replica that
fails it; ``ReplicaHealth.problem`` is what that check reads. A replica that has fallen behind the
chunk log would answer with an index older than its peers', so it fails at once. An unreachable
Kafka or Chroma fails it only after ``grace_s``: a broker restart or a leader election reaches
every replica at the same moment, and replacing all of them then would turn a blip into an outage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from query_api.chunk_log_view import records_behind
from query_api.services import Services

__all__ = ["ReplicaHealth"]

T = TypeVar("T")

#: Longest a single probe of Kafka or Chroma may take before it counts as unreachable.
PROBE_TIMEOUT_S = 3.0


class ReplicaHealth:
    """Remembers since when each dependency has been failing, across calls of ``problem``."""

    def __init__(
        self, max_view_lag: int, grace_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_view_lag = max_view_lag
        self._grace_s = grace_s
        self._clock = clock
        self._failing_since: dict[str, float] = {}

    async def problem(self, services: Services) -> str | None:
        """Why this replica should leave the load balancer, or None while it should serve."""
        # ``services`` are the generation it serves (its chunk log's name says which): a generation
        # being built beside it, or kept for a rollback, may lag behind without harm.
        view = services.chunk_log_view
        if not view.caught_up:
            return f"the views have not replayed {view.topic} yet"
        (behind, kafka_failure), (_, chroma_failure) = await asyncio.gather(
            _probe(self._view_lag(services)), _probe(services.chroma.heartbeat())
        )
        if behind is not None and behind > self._max_view_lag:
            return f"the views are {behind} records behind {view.topic} (the bound is {self._max_view_lag})"
        reasons = [self._lasting("Kafka", kafka_failure), self._lasting("Chroma", chroma_failure)]
        return "; ".join(reason for reason in reasons if reason) or None

    async def _view_lag(self, services: Services) -> int:
        await services.lag_reader.start()
        view = services.chunk_log_view
        return records_behind(view.applied_offsets(), await services.lag_reader.end_offsets(view.topic))

    def _lasting(self, name: str, failure: str | None) -> str | None:
        """``failure`` once it has lasted ``grace_s``; forgets it as soon as a probe succeeds."""
        if failure is None:
            self._failing_since.pop(name, None)
            return None
        since = self._failing_since.setdefault(name, self._clock())
        lasted = self._clock() - since
        if lasted < self._grace_s:
            return None
        return f"{name} unreachable for {lasted:.0f} s: {failure}"


async def _probe(call: Awaitable[T]) -> tuple[T | None, str | None]:
    """The call's result and None, or None and a line saying why it failed."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            return await call, None
    except TimeoutError:
        return None, f"no answer within {PROBE_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001
        # Blind: whatever a probe raises (chromadb raises a bare Exception for an error status) is
        # its answer, not swallowed: check_health logs it once it has lasted the grace period.
        return None, f"{type(exc).__name__}: {exc}"
