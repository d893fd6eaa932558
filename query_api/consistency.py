"""Read-your-writes: consistency tokens, and waiting until the index includes the write they name.

A token names the topic, partition and offset of one published event. Every hop on the way to the
index (see ``streams.hops``) commits an offset only after its output is acknowledged: the changes
stage after the broker acknowledged what it emitted, the indexers after Chroma (and the chunk log)
acknowledged the batch. So the write is in Chroma once

- without the stage: the indexers' committed offset on the token's partition is past its offset;
- with the stage: the stage's committed offset is past it, and then the indexers' committed offset
  on the changes partition of the same number reaches that partition's end offset read at that
  moment (the stage's output for this event lies below it; the stage keys by doc_id with the same
  partitioner, so a document keeps its partition number when both topics have as many partitions;
  when they do not, every changes partition is waited for).

The BM25 index follows the chunk log on its own; once the event is in Chroma, every chunk change it
caused is in the chunk log below that log's end offsets read at that moment, so a lexical or hybrid
search also waits until the view has applied up to them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

import orjson

from query_api.services import Services
from streams.hops import Hop, pipeline_hops

__all__ = [
    "ConsistencyError",
    "ConsistencyToken",
    "IndexBehind",
    "InvalidToken",
    "wait_until_indexed",
]

#: How often the committed offsets are read while waiting.
POLL_INTERVAL_S = 0.02

_TOKEN_FORMAT = 1


class ConsistencyError(Exception):
    """Root of this module's errors."""


class InvalidToken(ConsistencyError):
    """The token is malformed, or names a write this index is not built from."""


class IndexBehind(ConsistencyError):
    """The index did not include the write within the wait; says how far behind it is."""

    def __init__(self, message: str, *, partition: int, committed: int | None, required: int) -> None:
        super().__init__(message)
        self.partition = partition
        self.committed = committed
        self.required = required


@dataclass(frozen=True, slots=True)
class ConsistencyToken:
    """Where one event was written; ``encode()`` gives the opaque, URL-safe form clients hold."""

    topic: str
    partition: int
    offset: int

    def encode(self) -> str:
        raw = orjson.dumps({"f": _TOKEN_FORMAT, "t": self.topic, "p": self.partition, "o": self.offset})
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, token: str) -> ConsistencyToken:
        """Parse a token from ``encode()``; anything else raises ``InvalidToken``."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = orjson.loads(raw)
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            raise InvalidToken("consistent_with is not a consistency token returned by a write") from None
        if (
            not isinstance(data, dict)
            or data.get("f") != _TOKEN_FORMAT
            or not isinstance(data.get("t"), str)
            or not all(isinstance(data.get(key), int) and data[key] >= 0 for key in ("p", "o"))
        ):
            raise InvalidToken("consistent_with is not a consistency token returned by a write")
        return cls(topic=data["t"], partition=data["p"], offset=data["o"])


async def wait_until_indexed(services: Services, token: ConsistencyToken, *, lexical: bool) -> None:
    """Return once vector search (and BM25 search too when ``lexical``) includes the token's write.

    Raises ``IndexBehind`` after ``read_your_writes_timeout_s`` seconds, ``InvalidToken`` when the
    token names a topic or partition the index is not built from, and ``KafkaError`` when the
    broker does not answer.
    """
    settings = services.settings
    if token.topic != settings.events_topic:
        raise InvalidToken(
            f"the token names topic {token.topic!r}, but this index is built from {settings.events_topic!r}"
        )
    loop = asyncio.get_running_loop()
    wait_s = settings.read_your_writes_timeout_s
    deadline = loop.time() + wait_s
    await services.lag_reader.start()
    hops = pipeline_hops(settings)
    # First hop: past the token's offset on the events topic.
    targets = {token.partition: token.offset + 1}
    for number, hop in enumerate(hops):
        await _wait_for_hop(services, hop, targets, deadline, wait_s)
        if number + 1 < len(hops):
            targets = await _downstream_targets(services, token.partition, hops[number + 1].topic)
    if not lexical:
        return
    chunk_log = await services.lag_reader.read(settings.chunks_topic, settings.consumer_group)
    targets = {p.partition: p.end_offset for p in chunk_log}
    if await services.chunk_log_view.wait_for(targets, max(deadline - loop.time(), 0.0)):
        return
    applied = services.chunk_log_view.applied_offsets()
    missing = {p: end - applied.get(p, 0) for p, end in targets.items() if applied.get(p, 0) < end}
    raise IndexBehind(
        f"the vector index includes the write, but the BM25 index did not within {wait_s:g} s: "
        f"{sum(missing.values())} chunk log record(s) of {settings.chunks_topic} not applied yet "
        f"(per partition: {missing})",
        partition=token.partition,
        committed=token.offset + 1,
        required=token.offset + 1,
    )


async def _wait_for_hop(
    services: Services, hop: Hop, targets: dict[int, int], deadline: float, wait_s: float
) -> None:
    """Until ``hop``'s group has committed at least ``targets[partition]`` on every partition named."""
    loop = asyncio.get_running_loop()
    while True:
        committed = await _committed(services, hop, set(targets))
        behind = {
            p: need - (committed.get(p) or 0) for p, need in targets.items() if (committed.get(p) or 0) < need
        }
        if not behind:
            return
        if loop.time() >= deadline:
            partition = min(behind)
            now = committed.get(partition)
            raise IndexBehind(
                f"the index did not include the write within {wait_s:g} s: on partition {partition} of "
                f"{hop.topic} the {hop.name}'s committed offset is {'none yet' if now is None else now}, "
                f"the write needs it past {targets[partition] - 1} ({sum(behind.values())} event(s) behind)",
                partition=partition,
                committed=now,
                required=targets[partition],
            )
        await asyncio.sleep(POLL_INTERVAL_S)


async def _downstream_targets(services: Services, partition: int, topic: str) -> dict[int, int]:
    """The end offsets of the next hop's topic that the write's output lies below."""
    ends = {
        p.partition: p.end_offset
        for p in await services.lag_reader.read(topic, services.settings.consumer_group)
    }
    events = await services.lag_reader.read(services.settings.events_topic, services.settings.consumer_group)
    if len(events) == len(ends) and partition in ends:
        return {partition: ends[partition]}
    return ends


async def _committed(services: Services, hop: Hop, partitions: set[int]) -> dict[int, int | None]:
    found = {lag.partition: lag.committed for lag in await services.lag_reader.read(hop.topic, hop.group)}
    missing = partitions - found.keys()
    if missing:
        raise InvalidToken(f"the token names partition {min(missing)}, which {hop.topic} does not have")
    return found
