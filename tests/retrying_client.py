"""A search client that does what a careful application does behind a load balancer, for the
failover tests: it retries once, and counts what it saw."""

from __future__ import annotations

import asyncio
import time

import httpx


class RetryingClient:
    """What a careful application does behind a load balancer: a search that meets a dropped
    connection, a 503 or a 500 from the proxy is sent once more. Counts both what it saw first
    and what it ended with."""

    #: A dropped connection, the API unavailable, and the 500 Serve's proxy answers for a request
    #: in flight on a replica that died (seen once in four runs of the replica kill).
    RETRIED = frozenset({0, 500, 502, 503, 504})

    def __init__(self, proxy: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
        self.proxy = proxy
        self.headers = headers or {}
        self.first_failures: list[tuple[float, int]] = []
        self.failures: list[tuple[float, int]] = []
        self.answered_by: list[tuple[float, str]] = []

    async def search(self, query: str) -> None:
        sent = time.monotonic()
        status, replica = await self._try(query)
        if status != 200:
            self.first_failures.append((sent, status))
        if status in self.RETRIED:
            await asyncio.sleep(0.2)
            status, replica = await self._try(query)
        if status != 200:
            self.failures.append((sent, status))
        else:
            self.answered_by.append((sent, replica))

    async def _try(self, query: str) -> tuple[int, str]:
        try:
            response = await self.proxy.post(
                "/v1/search", json={"query": query, "k": 5}, headers=self.headers, timeout=30
            )
        except httpx.TransportError:
            return 0, ""
        return response.status_code, response.headers.get("x-ragstream-replica", "")

    def replicas_since(self, moment: float) -> set[str]:
        return {replica for sent, replica in self.answered_by if sent >= moment}


async def steady_searches(client: RetryingClient, stop: asyncio.Event, per_second: float = 10) -> None:
    """Searches at a steady rate until ``stop``, each on its own: a slow answer does not hold the
    next one back."""
    tasks = set()
    while not stop.is_set():
        tasks.add(asyncio.create_task(client.search(f"storm lighthouse {len(tasks)}")))
        await asyncio.sleep(1 / per_second)
    await asyncio.gather(*tasks)
