"""A tenant's vector search on the replica's own index: its own graph against the whole graph
walked with the tenant as a filter, both against the exact answer.

    .venv/bin/python bench/tenant_vectors.py [--chunks 100000] [--shares 50 10 1 0.1] [--k 100]

Builds ``query_api.vector_index.VectorIndex`` over the chunk vectors of the query bench's
embedding cache (``bench/results/cache``, written by ``bench/query.py``; random unit vectors
where there is none), gives each tenant its share of the chunks (the rest belong to none),
and times, per tenant, ``--queries`` searches of ``k`` one at a time:

- the tenant's own index, as the API searches for a key bound to a tenant;
- the whole index with hnswlib's filter callback admitting only the tenant's chunks, the
  alternative that needs no second copy of the vectors;
- exact search over the tenant's vectors (numpy), the baseline both are scored against
  (recall@k: the share of the exact top k each returns).

And the whole index unfiltered, a search without a tenant, for scale.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from query_api.vector_index import VectorChange, VectorIndex

console = Console()
CACHE = Path(__file__).resolve().parent / "results" / "cache"


def chunk_vectors(count: int, dimension: int, seed: int) -> tuple[np.ndarray, str]:
    """Up to ``count`` unit vectors: the query bench's cached chunk embeddings where the cache
    holds at least 90% of that (its 100,001 serve the default 100,000 + 200 queries), else random."""
    for cached in sorted(CACHE.glob("query-embeddings-*.npz")):
        vectors = np.load(cached)["vectors"]
        if len(vectors) >= 0.9 * count:
            origin = f"chunk embeddings of {cached.name}"
            return np.ascontiguousarray(vectors[:count], dtype=np.float32), origin
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), "random unit vectors (no bench cache)"


def timed(search: Callable[[np.ndarray], list[str]], queries: np.ndarray) -> tuple[list[list[str]], float]:
    """Each query's ids, and the median ms of one search."""
    found, ms = [], []
    for query in queries:
        started = time.perf_counter()
        found.append(search(query))
        ms.append((time.perf_counter() - started) * 1000)
    return found, statistics.median(ms)


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return sum(len(set(f) & set(e)) for f, e in zip(found, exact, strict=True)) / sum(len(e) for e in exact)


def measure_tenant(
    index: VectorIndex, vectors: np.ndarray, members: list[int], tenant: str, queries: np.ndarray, depth: int
) -> list[str]:
    """The table's cells for one tenant: its own index, the whole graph filtered, exact search."""
    own_vectors = vectors[members]
    k = min(depth, len(members))
    # The whole graph and its labels, as the filtered alternative would search it.
    whole, label_of, id_of = index._index, index._label_of, index._id_of
    assert whole is not None
    admitted = {label_of[f"c{i}"] for i in members}

    def exact(query: np.ndarray) -> list[str]:
        return [f"c{members[i]}" for i in np.argsort(-(own_vectors @ query))[:k]]

    def filtered(query: np.ndarray) -> list[str]:
        whole.set_ef(max(200, k))
        labels, _ = whole.knn_query(query[None], k=k, num_threads=1, filter=admitted.__contains__)
        return [id_of[int(label)] for label in labels[0]]

    truth, exact_ms = timed(exact, queries)
    own, own_ms = timed(lambda query: [c.id for c in index.nearest(query[None], depth, tenant)[0]], queries)
    walked, walked_ms = timed(filtered, queries)
    return [
        f"{own_ms:.2f}", f"{recall(own, truth):.3f}", f"{walked_ms:.2f}", f"{recall(walked, truth):.3f}",
        f"{exact_ms:.2f}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=384, help="of random vectors, without a cache")
    parser.add_argument(
        "--shares", type=float, nargs="+", default=[50, 10, 1, 0.1], help="%% of chunks per tenant"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100, help="hits per search (hybrid's candidate depth)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    if sum(args.shares) > 100:
        parser.error("the shares add up to more than 100%")

    vectors, origin = chunk_vectors(args.chunks + args.queries, args.dimension, args.seed)
    # Queries are chunks left out of the index: near some chunks, as real queries are.
    queries, vectors = vectors[: args.queries], vectors[args.queries :]
    owner: list[str | None] = [None] * len(vectors)
    order = np.random.default_rng(args.seed).permutation(len(vectors))
    start = 0
    for number, share in enumerate(args.shares):
        size = max(1, round(len(vectors) * share / 100))
        for position in order[start : start + size]:
            owner[position] = f"t{number}"
        start += size

    console.print(
        f"{len(vectors)} chunks ({origin}), {args.queries} queries, k = {args.k}; building the index"
    )
    index = VectorIndex()
    started = time.perf_counter()
    index.apply(
        [VectorChange(f"c{i}", False, vector, owner[i]) for i, vector in enumerate(vectors)], threads=2
    )
    console.print(f"built in {time.perf_counter() - started:.0f} s")
    _, unfiltered_ms = timed(lambda q: [c.id for c in index.nearest(q[None], args.k)[0]], queries)
    table = Table(title=f"one tenant's vector search, {args.k} hits: median ms per search, recall@{args.k}")
    for column in ("tenant", "chunks", "own index ms", "recall", "whole + filter ms", "recall", "exact ms"):
        table.add_column(column, justify="right")
    for number, share in enumerate(args.shares):
        members = [i for i, who in enumerate(owner) if who == f"t{number}"]
        cells = measure_tenant(index, vectors, members, f"t{number}", queries, args.k)
        table.add_row(f"t{number} ({share:g}%)", str(len(members)), *cells)
    console.print(table)
    console.print(
        f"the whole index without a filter (a search of no tenant): {unfiltered_ms:.2f} ms per search"
    )


if __name__ == "__main__":
    main()
