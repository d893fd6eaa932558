"""The few input shapes the embedder runs, so that torch's CPU kernel caches always hit.

oneDNN (and ideep above it) compile a kernel per input shape and keep it in a cache. Padded to
the longest text of each call, every batch had a new shape: either the caches grew without bound
(memory crept up batch after batch) or, capped, every batch recompiled its kernels (a third of
the speed gone). Padding the sequence length up to a multiple of ``LENGTH_STEP`` and a short
batch's rows up to a power of two leaves at most a few dozen shapes, which a modest cache holds
for good: memory stays flat and every kernel is compiled once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LENGTH_STEP", "SubBatch", "bucket_length", "bucket_rows", "plan_sub_batches"]

#: Sequence lengths are padded up to a multiple of this (and capped at the model's maximum).
#: 32 wastes ~16 padding tokens a batch on average (a few percent of a 200-token batch) and
#: gives 8 lengths for a 256-token model.
LENGTH_STEP = 32


def bucket_length(length: int, max_length: int, step: int = LENGTH_STEP) -> int:
    """The padded length for a batch whose longest input has ``length`` tokens."""
    return min(max_length, max(step, -(-length // step) * step))


def bucket_rows(rows: int, batch_size: int) -> int:
    """The padded row count of a batch of ``rows`` inputs: the next power of two, at most
    ``batch_size``. Only a call's last batch is short; it wastes at most half its rows."""
    padded = 1
    while padded < rows:
        padded *= 2
    return min(padded, batch_size) if rows <= batch_size else rows


@dataclass(frozen=True, slots=True)
class SubBatch:
    """Inputs ``indices`` (positions in the call) run as one ``rows`` × ``length`` forward."""

    indices: list[int]
    rows: int
    length: int


def plan_sub_batches(lengths: Sequence[int], batch_size: int, max_length: int) -> list[SubBatch]:
    """Longest inputs first, ``batch_size`` at a time, each batch padded to its bucket.

    Sorting by length keeps the inputs of a batch alike, so little of the padding is wasted.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        longest = min(max_length, max(lengths[i] for i in indices))
        batches.append(
            SubBatch(indices, bucket_rows(len(indices), batch_size), bucket_length(longest, max_length))
        )
    return batches
