"""Evaluation cases from the sample corpus: a Wikipedia short description finds its own article."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["EvalCase", "build_cases", "shared_query_count"]


@dataclass(frozen=True)
class EvalCase:
    query: str
    relevant_doc_id: str


def build_cases(
    articles: Sequence[dict[str, str]], queries: int | None = None, seed: int = 0
) -> list[EvalCase]:
    """One case per article with a short description (query = the description, the one relevant
    document = the article), then a sample of ``queries`` of them drawn with ``seed``.

    Generic descriptions ("American actor") are kept: several articles then answer the same
    query equally well, and only one counts, which is what the real corpus is like.
    """
    cases = [
        EvalCase(query=description, relevant_doc_id=f"wiki/{article['title']}")
        for article in articles
        if (description := (article.get("description") or "").strip())
    ]
    if queries is not None and queries < len(cases):
        cases = random.Random(seed).sample(cases, queries)
    return cases


def shared_query_count(cases: Sequence[EvalCase]) -> int:
    """How many cases share their query text with another case (they cannot all be rank 1)."""
    counts = Counter(case.query for case in cases)
    return sum(count for count in counts.values() if count > 1)
