"""The replica's own vector index: what it returns after upserts, replacements and deletes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from query_api.vector_index import VectorChange, VectorIndex


def unit_vectors(count: int, dimension: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def upserts(vectors: np.ndarray, prefix: str = "c") -> list[VectorChange]:
    return [VectorChange(f"{prefix}{i}", False, vector) for i, vector in enumerate(vectors)]


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, prefix: str = "c") -> list[str]:
    order = np.argsort(-(vectors @ query))[:k]
    return [f"{prefix}{i}" for i in order]


def test_nearest_agrees_with_exact_cosine_search_and_scores_are_similarities() -> None:
    vectors = unit_vectors(3000)
    index = VectorIndex(initial_capacity=16)  # grows many times on the way
    index.apply(upserts(vectors), threads=2)
    queries = unit_vectors(20, seed=1)

    results = index.nearest(queries, 10)

    assert index.num_vectors == 3000 and index.complete
    agreed = [
        len(set(exact_top(vectors, q, 10)) & {c.id for c in got})
        for q, got in zip(queries, results, strict=True)
    ]
    assert sum(agreed) >= 0.98 * 200  # HNSW is approximate, but at ef 200 on 3,000 points barely
    best = results[0][0]
    assert best.score == pytest.approx(float(vectors[int(best.id[1:])] @ queries[0]), abs=1e-5)
    assert [c.score for c in results[0]] == sorted((c.score for c in results[0]), reverse=True)


def test_a_deleted_chunk_is_never_returned_and_its_slot_is_reused() -> None:
    vectors = unit_vectors(200)
    index = VectorIndex(initial_capacity=200)
    index.apply(upserts(vectors))
    index.apply([VectorChange(f"c{i}", True) for i in range(0, 200, 2)])
    index.apply(upserts(unit_vectors(100, seed=2), prefix="n"))

    found = {c.id for row in index.nearest(unit_vectors(30, seed=3), 50) for c in row}

    assert index.num_vectors == 200
    assert not any(chunk_id.startswith("c") and int(chunk_id[1:]) % 2 == 0 for chunk_id in found)
    assert any(chunk_id.startswith("n") for chunk_id in found)
    assert index._index is not None and index._index.get_max_elements() == 200  # no growth needed


def test_an_upserted_chunk_is_found_at_its_new_vector_only() -> None:
    vectors = unit_vectors(100)
    index = VectorIndex()
    index.apply(upserts(vectors))
    moved = -vectors[7]
    index.apply([VectorChange("c7", False, moved)])

    (near_new,) = index.nearest(moved[None, :], 1)
    (near_old,) = index.nearest(vectors[7][None, :], 100)

    assert near_new[0].id == "c7" and near_new[0].score == pytest.approx(1.0, abs=1e-5)
    assert next(c.score for c in near_old if c.id == "c7") == pytest.approx(-1.0, abs=1e-5)
    assert index.num_vectors == 100


def test_the_last_change_of_a_chunk_in_one_batch_wins() -> None:
    vectors = unit_vectors(3)
    index = VectorIndex()
    index.apply(
        [VectorChange("a", False, vectors[0]), VectorChange("a", True), VectorChange("b", False, vectors[1])]
    )

    assert index.num_vectors == 1
    assert [c.id for c in index.nearest(vectors[:1], 5)[0]] == ["b"]


def test_a_chunk_logged_without_its_vector_makes_the_index_incomplete_until_replaced_or_deleted() -> None:
    vectors = unit_vectors(2)
    index = VectorIndex()
    index.apply([VectorChange("a", False, vectors[0]), VectorChange("b", False, None)])
    assert not index.complete

    index.apply([VectorChange("b", False, vectors[1])])
    assert index.complete
    index.apply([VectorChange("c", False, None)])
    index.apply([VectorChange("c", True)])
    assert index.complete and index.num_vectors == 2


def test_an_empty_index_returns_nothing_and_k_beyond_its_size_returns_all() -> None:
    index = VectorIndex()
    assert index.nearest(unit_vectors(2), 5) == [[], []]
    index.apply(upserts(unit_vectors(3)))
    assert len(index.nearest(unit_vectors(1, seed=4), 10)[0]) == 3


def test_a_vector_of_another_dimension_is_left_out_and_makes_the_index_incomplete() -> None:
    index = VectorIndex()
    index.apply(upserts(unit_vectors(2, dimension=8)))
    index.apply([VectorChange("x", False, unit_vectors(1, dimension=4)[0])])

    assert not index.complete and index.num_vectors == 2


def test_a_chunk_re_upserted_is_found_by_every_search_meanwhile() -> None:
    # Metadata edits re-log a chunk with the vector it has: searches must never miss it then.
    vectors = unit_vectors(500)
    index = VectorIndex()
    index.apply(upserts(vectors))
    stop, misses, searches = threading.Event(), [], [0]

    def search() -> None:
        while not stop.is_set():
            (top,) = index.nearest(vectors[7][None, :], 1)
            searches[0] += 1
            if [c.id for c in top] != ["c7"]:
                misses.append(top)

    searcher = threading.Thread(target=search)
    searcher.start()
    for _ in range(300):
        index.apply([VectorChange("c7", False, vectors[7]), *upserts(vectors[100:110], prefix="x")])
    stop.set()
    searcher.join()

    assert searches[0] > 0 and misses == []


def tenant_upserts(vectors: np.ndarray, tenant: str | None, prefix: str) -> list[VectorChange]:
    return [VectorChange(f"{prefix}{i}", False, vector, tenant) for i, vector in enumerate(vectors)]


def test_a_tenants_search_finds_its_own_chunks_exactly_as_a_search_of_them_alone() -> None:
    big, small, shared = unit_vectors(2000, seed=4), unit_vectors(30, seed=5), unit_vectors(500, seed=6)
    index = VectorIndex()
    index.apply(tenant_upserts(big, "acme", "a") + tenant_upserts(small, "tiny", "t"))
    index.apply(tenant_upserts(shared, None, "s"))
    query = unit_vectors(1, seed=7)

    (acme,) = index.nearest(query, 10, tenant="acme")
    (tiny,) = index.nearest(query, 10, tenant="tiny")
    (nobody,) = index.nearest(query, 10, tenant="nobody")
    (everyone,) = index.nearest(query, 3000)

    assert [c.id for c in tiny] == exact_top(small, query[0], 10, prefix="t")  # a small tenant: all 10
    assert len(set(c.id for c in acme) & set(exact_top(big, query[0], 10, prefix="a"))) >= 9
    assert nobody == []
    assert {c.id[0] for c in everyone} == {"a", "t", "s"}  # the whole index still holds every chunk


def test_a_chunk_deleted_or_moved_to_another_tenant_leaves_its_old_tenants_index() -> None:
    vectors = unit_vectors(40, seed=8)
    index = VectorIndex()
    index.apply(tenant_upserts(vectors, "acme", "c"))
    index.apply(
        [
            VectorChange("c0", True),  # deleted
            VectorChange("c1", False, vectors[1], "other"),  # now another tenant's
            VectorChange("c2", False, vectors[2], None),  # now no tenant's
        ]
    )

    acme = {c.id for c in index.nearest(vectors[:3], 40, tenant="acme")[0]}
    other = [c.id for c in index.nearest(vectors[1:2], 40, tenant="other")[0]]

    assert acme == {f"c{i}" for i in range(3, 40)}
    assert other == ["c1"]
    assert "c2" in {c.id for c in index.nearest(vectors[2:3], 1)[0]}


def test_searches_go_between_the_insertions_of_one_large_batch_of_changes() -> None:
    # A live index is searched while the chunk log's changes go in: a search waits for one
    # insertion, not for the whole batch.
    index = VectorIndex()
    index.apply(upserts(unit_vectors(2000)))
    batch = upserts(unit_vectors(300, seed=2), prefix="new")
    query = unit_vectors(1, seed=3)
    applying, applied = threading.Event(), threading.Event()
    searched_meanwhile = [0]

    def search() -> None:
        applying.wait(5)
        while True:
            index.nearest(query, 10)
            if applied.is_set():
                return
            searched_meanwhile[0] += 1

    searcher = threading.Thread(target=search)
    searcher.start()
    applying.set()
    index.apply(batch)
    applied.set()
    searcher.join()

    assert index.num_vectors == 2300
    assert searched_meanwhile[0] >= 50  # one batch of 300 holds up no search for all of its time


def test_scores_are_cosines_even_for_vectors_a_little_off_length_one() -> None:
    # Embeddings normalised in bf16 come out up to ~0.5% off length 1; Chroma's cosine space
    # scores them as cosines, and so must the replica.
    vectors = unit_vectors(50, seed=9)
    index = VectorIndex()
    index.apply(upserts(vectors * np.linspace(0.995, 1.005, 50, dtype=np.float32)[:, None]))
    query = unit_vectors(1, seed=10)[0]

    (found,) = index.nearest((query * 0.996)[None, :], 5)

    for chunk in found:
        assert chunk.score == pytest.approx(float(vectors[int(chunk.id[1:])] @ query), abs=1e-5)
