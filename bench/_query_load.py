"""The query bench's load generator, in a process of its own so that its CPU shows apart from the
server's: N clients (one keep-alive connection each) send ``/v1/search`` requests. aiohttp, not httpx:
it costs the client a third of the CPU per request, CPU the server under test shares.

    python bench/_query_load.py < plan.json > result.json

Closed loop (``rate`` 0): each client sends its next request as soon as the last one is answered,
so latency includes waiting behind the other clients' requests. Open loop (``rate`` > 0):
requests arrive as a Poisson process of that rate (independent users: random gaps, bursts
included), each taken by a free client, and latency counts from the arrival, so a slow answer is
not hidden by the requests it held back.

With ``retry_once`` a client does what a careful application does behind a load balancer: a
request that meets a dropped connection, a 502/503/504 or the 500 of Serve's proxy is sent once
more, after ``retry_pause_s``; its latency then counts both tries, and the first try's outcome is
kept apart.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import resource
import sys
import time
from typing import Any, NamedTuple

import aiohttp
import orjson

JSON = {"content-type": "application/json"}
#: The line written to stdout when the warm-up ends; the result follows as one JSON line.
MEASURING = "measuring"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def arrivals(rate: float, seconds: float, seed: int = 11) -> list[float]:
    """Poisson arrival times (s from the start) over ``seconds``: exponential gaps of mean 1/rate."""
    rng, times, now = random.Random(seed), [], 0.0
    while True:
        now += rng.expovariate(rate)
        if now >= seconds:
            return times
        times.append(now)


async def _client(
    api: aiohttp.ClientSession,
    plan: dict[str, Any],
    tickets: itertools.count[int],
    due_times: list[float] | None,
    started: float,
    samples: list[Sample],
    steps: list[dict[str, float]],
) -> None:
    """Send requests until the phase ends, one sample each, and ``steps`` gets each answer's
    Server-Timing, by step."""
    queries: list[str] = plan["queries"]
    ends = started + plan["warmup_s"] + plan["seconds"]
    while True:
        ticket = next(tickets)
        if due_times is not None and ticket >= len(due_times):
            return
        due = started + due_times[ticket] if due_times is not None else time.perf_counter()
        if due >= ends:
            return
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        body = orjson.dumps({"query": queries[ticket % len(queries)], "k": plan["k"], "mode": plan["mode"]})
        answer = first = await _search(api, body)
        if plan.get("retry_once") and first.status in RETRIED_STATUSES:
            await asyncio.sleep(plan.get("retry_pause_s", 0.0))
            answer = await _search(api, body)
        latency = time.perf_counter() - due
        took_ms = orjson.loads(answer.content).get("took_ms", -1.0) if answer.status == 200 else -1.0
        samples.append(Sample(due - started, latency, took_ms, answer.status, first.status, answer.replica))
        measured = due - started >= plan["warmup_s"] and answer.status == 200
        steps.append(_server_timing(answer.timing) if measured else {})


class Sample(NamedTuple):
    sent_at_s: float
    latency_s: float
    took_ms: float
    #: The answer's status: 0 for a dropped connection.
    status: int
    #: With ``retry_once``, the first try's status; else the same as ``status``.
    first_status: int
    #: ``X-Ragstream-Replica``: which replica answered, where the API names it.
    replica: str


class Answer(NamedTuple):
    status: int
    content: bytes
    timing: str
    replica: str


#: Outcomes a retry may cure: the connection dropped (0), the API is unavailable for now, or
#: Serve's proxy answered 500 because the replica it had sent the request to died with it (the
#: proxy's answer for a lost replica; a 500 of the API's own fails again and still counts). A
#: search changes nothing, so sending it again is safe. As tests/retrying_client.py does.
RETRIED_STATUSES = frozenset({0, 500, 502, 503, 504})


async def _search(api: aiohttp.ClientSession, body: bytes) -> Answer:
    try:
        async with api.post("/v1/search", data=body, headers=JSON) as response:
            headers = response.headers
            return Answer(
                response.status,
                await response.read(),
                headers.get("Server-Timing", ""),
                headers.get("X-Ragstream-Replica", ""),
            )
    except (TimeoutError, aiohttp.ClientError):
        # A dropped connection is an error to count, not a reason to stop measuring.
        return Answer(0, b"", "", "")


def _server_timing(header: str) -> dict[str, float]:
    """``embed;dur=3.1, vector;dur=1.0;desc="replica"`` → {"embed": 3.1, "vector (replica)": 1.0}:
    a step's description (which index answered) keeps its own column."""
    steps = {}
    for part in header.split(","):
        name, *params = part.strip().split(";")
        fields = dict(param.split("=", 1) for param in params if "=" in param)
        if name and "dur" in fields:
            description = fields.get("desc", "").strip('"')
            steps[f"{name} ({description})" if description else name] = float(fields["dur"])
    return steps


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    clients = plan["clients"]
    samples: list[Sample] = []
    steps: list[dict[str, float]] = []
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(plan["url"], connector=connector, timeout=timeout) as api:
        tickets = itertools.count()
        rate = plan["rate"]
        due_times = arrivals(rate, plan["warmup_s"] + plan["seconds"]) if rate else None
        started = time.perf_counter()
        tasks = [_client(api, plan, tickets, due_times, started, samples, steps) for _ in range(clients)]
        cpu_at_mark: list[float] = []
        # The parent samples every process's CPU at this line: the measured requests start.
        mark = asyncio.get_running_loop().call_later(plan["warmup_s"], _announce_measuring, cpu_at_mark)
        await asyncio.gather(*tasks)
        mark.cancel()
    measured = sorted((s for s in samples if s.sent_at_s >= plan["warmup_s"]), key=lambda s: s.sent_at_s)
    return {
        "latencies_s": [s.latency_s for s in measured],
        "took_ms": [s.took_ms for s in measured],
        "statuses": [s.status for s in measured],
        "first_statuses": [s.first_status for s in measured],
        "sent_at_s": [s.sent_at_s - plan["warmup_s"] for s in measured],
        "replicas": [s.replica for s in measured],
        "server_timing": [step for step in steps if step],
        "client_cpu_s": _cpu_seconds() - (cpu_at_mark[0] if cpu_at_mark else 0.0),
    }


def _announce_measuring(cpu_at_mark: list[float]) -> None:
    cpu_at_mark.append(_cpu_seconds())
    sys.stdout.write(MEASURING + "\n")
    sys.stdout.flush()


def main() -> None:
    plan = json.load(sys.stdin)
    sys.stdout.write(json.dumps(asyncio.run(run(plan))) + "\n")


if __name__ == "__main__":
    main()
