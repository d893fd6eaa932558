"""What the ingest bench reports from its rounds: each path's median and spread, and the ratios
between paths taken round by round."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engines.embedder import EMBEDDING_MEMORY_ENV


@dataclass(frozen=True)
class Spread:
    """The median of some rounds' figures, and the lowest and highest of them."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no rounds to summarise")
        return cls(statistics.median(values), min(values), max(values))

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}–{self.high:.2f})"


def ratios_per_round(rounds: Sequence[Mapping[str, float]], numerator: str, denominator: str) -> list[float]:
    """``numerator`` ÷ ``denominator`` in each round that measured both.

    Taken within a round, not as a ratio of medians: the machine's state moves between rounds,
    and both paths of one round share it, so the per-round ratio is the steadier figure.
    """
    return [
        figures[numerator] / figures[denominator]
        for figures in rounds
        if numerator in figures and denominator in figures and figures[denominator] > 0
    ]


def summarise(
    rounds: Sequence[Mapping[str, float]], ratios: Sequence[tuple[str, str]]
) -> dict[str, dict[str, Spread]]:
    """Per path, the spread of its chunks/s over the rounds; per (numerator, denominator), the
    spread of the per-round ratio. A path or ratio no round measured is left out."""
    paths = list(dict.fromkeys(path for figures in rounds for path in figures))
    per_path = {path: Spread.of([f[path] for f in rounds if path in f]) for path in paths}
    per_ratio = {}
    for numerator, denominator in ratios:
        values = ratios_per_round(rounds, numerator, denominator)
        if values:
            per_ratio[f"{numerator} ÷ {denominator}"] = Spread.of(values)
    return {"chunks_per_s": per_path, "ratios": per_ratio}


def without_ragstream_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` less what ragstream's embedder sets at import (its kernel-cache caps), so a
    child process runs the library's defaults, whatever this process has imported."""
    return {name: value for name, value in environ.items() if name not in EMBEDDING_MEMORY_ENV}
