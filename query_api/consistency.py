"""Read-your-writes: consistency tokens, and waiting until the index includes the write they name.

A token names the topic, partition and offset of one published event. The consumers commit an
offset only after Chroma (and the chunk log) acknowledged the batch that holds it, so "the group's
committed offset on that partition is past the event's offset" means the event is in Chroma. The
BM25 index follows the chunk log on its own; once the event is committed, every chunk change it
caused is in the chunk log below that log's end offsets read at that moment, so a lexical or
hybrid search also waits until the view has applied up to them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

import orjson

from query_api.services import Services

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


async def wait_until_indexed(
    services: Services, token: ConsistencyToken, *, lexical: bool, timeout: float | None = None
) -> None:
    """Return once vector search (and BM25 search too when ``lexical``) includes the token's write.

    Raises ``IndexBehind`` after ``timeout`` seconds (default: the read-your-writes setting),
    ``InvalidToken`` when the token names a topic or partition the index is not built from, and
    ``KafkaError`` when the broker does not answer.
    """
    settings = services.settings
    if token.topic != settings.input_topic:
        raise InvalidToken(
            f"the token names topic {token.topic!r}, but this index is built from {settings.input_topic!r}"
        )
    loop = asyncio.get_running_loop()
    wait_s = settings.read_your_writes_timeout_s if timeout is None else timeout
    deadline = loop.time() + wait_s
    await services.lag_reader.start()
    while True:
        committed = await _committed(services, token)
        if committed is not None and committed > token.offset:
            break
        if loop.time() >= deadline:
            behind = token.offset + 1 - (committed or 0)
            raise IndexBehind(
                f"the index did not include the write within {wait_s:g} s: on partition "
                f"{token.partition} of {token.topic} the committed offset is "
                f"{'none yet' if committed is None else committed}, the write needs it past "
                f"{token.offset} ({behind} event(s) behind)",
                partition=token.partition,
                committed=committed,
                required=token.offset + 1,
            )
        await asyncio.sleep(POLL_INTERVAL_S)
    if not lexical:
        return
    chunk_log = await services.lag_reader.read(settings.chunks_topic, settings.consumer_group)
    targets = {p.partition: p.end_offset for p in chunk_log}
    if await services.lexical.wait_for(targets, max(deadline - loop.time(), 0.0)):
        return
    applied = services.lexical.applied_offsets()
    missing = {p: end - applied.get(p, 0) for p, end in targets.items() if applied.get(p, 0) < end}
    raise IndexBehind(
        f"the vector index includes the write, but the BM25 index did not within {wait_s:g} s: "
        f"{sum(missing.values())} chunk log record(s) of {settings.chunks_topic} not applied yet "
        f"(per partition: {missing})",
        partition=token.partition,
        committed=committed,
        required=token.offset + 1,
    )


async def _committed(services: Services, token: ConsistencyToken) -> int | None:
    settings = services.settings
    for lag in await services.lag_reader.read(token.topic, settings.consumer_group):
        if lag.partition == token.partition:
            return lag.committed
    raise InvalidToken(f"the token names partition {token.partition}, which {token.topic} does not have")
