"""Where a consumer's time goes, part by part, batch by batch.

Planning (decode, chunk, diff, tokenise, encode) of one batch runs while the batch before it is
written (chunk log, Chroma, dead letters, commit), so the parts of a batch add up to more than
its wall time. What bounds throughput is the critical path: waiting for a batch to arrive,
planning it, and whatever of the previous write planning did not hide (``write_wait``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

__all__ = ["CRITICAL_PATH", "BatchTimings"]

#: The parts a consumer's worker waits on in sequence; the write parts overlap the next plan.
CRITICAL_PATH = ("queue_wait", "decode", "diff", "chunk", "tokenise", "encode", "reuse_vectors", "write_wait")


@dataclass
class BatchTimings:
    """Wall seconds per part of one batch's work (or, summed, of many batches')."""

    #: Waiting for a fetched batch: the consumer idles, or Kafka is behind it.
    queue_wait: float = 0.0
    #: Parsing and validating the records.
    decode: float = 0.0
    #: Reading what the index holds of the batch's documents (Chroma ``existing_chunks``).
    diff: float = 0.0
    #: Splitting documents into chunks and comparing them with what is stored.
    chunk: float = 0.0
    tokenise: float = 0.0
    #: The model's forward passes (encode minus tokenising).
    encode: float = 0.0
    #: Reading the vectors of chunks that only changed metadata, to publish them again.
    reuse_vectors: float = 0.0
    #: After planning, waiting for the previous batch's write to finish: the write not hidden.
    write_wait: float = 0.0
    chunk_log: float = 0.0
    chroma_write: float = 0.0
    dead_letters: float = 0.0
    commit: float = 0.0

    @contextmanager
    def measure(self, part: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``part``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - started)

    def add(self, part: str, seconds: float) -> None:
        setattr(self, part, getattr(self, part) + seconds)

    def accumulate(self, other: BatchTimings) -> None:
        """Add every part of ``other`` to this one."""
        for part in fields(self):
            self.add(part.name, getattr(other, part.name))

    def critical_path(self) -> float:
        return sum(getattr(self, part) for part in CRITICAL_PATH)

    def as_dict(self) -> dict[str, float]:
        return {part.name: round(getattr(self, part.name), 6) for part in fields(self)}

    def summary(self) -> str:
        """The parts that took a millisecond or more, as ``part 0.12s`` pairs for a log line."""
        return " ".join(
            f"{part.name} {getattr(self, part.name):.3f}s"
            for part in fields(self)
            if getattr(self, part.name) >= 0.001
        )
