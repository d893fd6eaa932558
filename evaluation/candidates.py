"""The candidates of an evaluation, kept so that fusions can be compared without re-indexing.

For every query of a set: the vector and lexical hits (chunk id, document id, score) exactly as
the API returned them in those modes, as deep as hybrid mode reads each retriever (the same
retriever, equally deep, so these are the lists hybrid fuses), and the API's own hybrid hits,
against which an offline fusion can be checked. Scores are the API's: cosine similarity for
vectors, BM25 for the lexical index.

Written as gzipped JSON (``eval-candidates-<run id>-<set>.json.gz``): parquet would need pyarrow,
which the project does not depend on, and one set's file is a few MB.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.cases import EvalCase
from evaluation.runner import ChunkHit, ModeResult

__all__ = ["CandidateQuery", "CandidateSet", "load_candidates", "save_candidates"]

#: The modes whose hits are dumped: the two retrievers and the fusion the API made of them.
DUMPED_MODES = ("vector", "lexical", "hybrid")


@dataclass(frozen=True)
class CandidateQuery:
    query_id: str
    query: str
    relevance: dict[str, int]
    #: mode → hits, best first
    hits: dict[str, list[ChunkHit]]


@dataclass(frozen=True)
class CandidateSet:
    name: str
    run_id: str
    #: the retrieval settings the hits were found with (fusion weights, k, candidate depth)
    settings: dict[str, Any]
    #: hits asked for per retriever and query
    depth: int
    queries: list[CandidateQuery]


def save_candidates(
    name: str,
    run_id: str,
    settings: Mapping[str, Any],
    depth: int,
    cases: Sequence[EvalCase],
    modes: Mapping[str, ModeResult],
    results_dir: Path,
) -> Path:
    """Write the dump of one set; returns its path."""
    dumped = [mode for mode in DUMPED_MODES if mode in modes and modes[mode].available]
    queries = [
        {
            "id": case.query_id,
            "query": case.query,
            "relevance": dict(case.relevance),
            **{
                mode: [[hit.chunk_id, hit.doc_id, hit.score] for hit in modes[mode].hits[index]]
                for mode in dumped
            },
        }
        for index, case in enumerate(cases)
    ]
    payload = {"set": name, "run_id": run_id, "settings": dict(settings), "depth": depth, "queries": queries}
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"eval-candidates-{run_id}-{name}.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        json.dump(payload, out)
    return path


def load_candidates(path: Path) -> CandidateSet:
    with gzip.open(path, "rt", encoding="utf-8") as source:
        payload = json.load(source)
    queries = [
        CandidateQuery(
            query_id=row["id"],
            query=row["query"],
            relevance={doc_id: int(grade) for doc_id, grade in row["relevance"].items()},
            hits={
                mode: [ChunkHit(chunk_id, doc_id, float(score)) for chunk_id, doc_id, score in row[mode]]
                for mode in DUMPED_MODES
                if mode in row
            },
        )
        for row in payload["queries"]
    ]
    return CandidateSet(payload["set"], payload["run_id"], payload["settings"], payload["depth"], queries)
