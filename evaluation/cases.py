"""Evaluation cases: a query and the documents judged relevant to it, with graded relevance.

The built-in cases come from the sample corpus (a Wikipedia short description finds its own
article, the one relevant document); a BEIR set's cases come from its qrels (``beir.py``), where a
query may have several relevant documents of different grades.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["EvalCase", "build_cases", "shared_query_count"]


@dataclass(frozen=True)
class EvalCase:
    query: str
    #: document id → graded relevance; only grades above 0 count as relevant (trec_eval's rule).
    relevance: Mapping[str, int]
    #: the query's id in its set ("" for generated cases).
    query_id: str = ""

    @classmethod
    def known_item(cls, query: str, doc_id: str, query_id: str = "") -> EvalCase:
        """A case with exactly one relevant document."""
        return cls(query=query, relevance={doc_id: 1}, query_id=query_id)

    @property
    def relevant_doc_id(self) -> str:
        """The most relevant document (the only one of a known-item case)."""
        return max(self.relevance, key=lambda doc_id: self.relevance[doc_id])

    @property
    def relevant_doc_ids(self) -> frozenset[str]:
        return frozenset(doc_id for doc_id, grade in self.relevance.items() if grade > 0)


def build_cases(
    articles: Sequence[dict[str, str]], queries: int | None = None, seed: int = 0
) -> list[EvalCase]:
    """One case per article with a short description (query = the description, the one relevant
    document = the article), then a sample of ``queries`` of them drawn with ``seed``.

    Generic descriptions ("American actor") are kept: several articles then answer the same
    query equally well, and only one counts, which is what the real corpus is like.
    """
    cases = [
        EvalCase.known_item(description, f"wiki/{article['title']}", query_id=article["title"])
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
