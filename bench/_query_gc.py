"""The API's garbage collection pauses over a phase of the query bench, read from ``/metrics``."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from query_api.gc_pauses import GC_PAUSE_METRIC

__all__ = ["gc_delta", "gc_totals", "read_gc_pauses"]

#: A pause at least this long is one a search notices by itself.
LONG_PAUSE_S = 0.1


async def read_gc_pauses(url: str) -> dict[str, float]:
    """Totals since the API started: ``full`` collections, ``seconds`` paused in all generations,
    and ``long`` pauses (over 100 ms, any generation)."""
    # Only the pause series: a whole scrape would also ask Kafka for the consumer lag.
    series = [("name[]", GC_PAUSE_METRIC + suffix) for suffix in ("_bucket", "_count", "_sum")]
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        response = await client.get(f"{url}/metrics", params=series)
    response.raise_for_status()
    return gc_totals(response.text)


def gc_totals(metrics_text: str) -> dict[str, float]:
    full = seconds = long = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != GC_PAUSE_METRIC:
            continue
        counts: dict[str, float] = {}
        within: dict[str, float] = {}
        for sample in family.samples:
            generation = sample.labels.get("generation", "")
            if sample.name.endswith("_count"):
                counts[generation] = sample.value
            elif sample.name.endswith("_sum"):
                seconds += sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == LONG_PAUSE_S:
                within[generation] = sample.value
        full += counts.get("2", 0.0)
        long += sum(count - within.get(generation, count) for generation, count in counts.items())
    return {"full": full, "seconds": seconds, "long": long}


def gc_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    return {name: after[name] - before[name] for name in before}
