"""Concurrent searches share the query model, and the replica's vector search, through one
batching thread."""

import asyncio
import threading

import numpy as np
import pytest

from query_api.query_embedding import QueryBatcher
from query_api.vector_index import VectorChange, VectorIndex, VectorSearchFailed


class CountingEncoder:
    """A deterministic stand-in for the model: the vector says which text it is for."""

    dimension = 4

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(5)
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        if self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on!r}")
        return np.array([[len(t), ord(t[0]), 0, 1] for t in texts], dtype=np.float32)


async def test_concurrent_queries_each_get_their_own_vector_in_few_calls():
    encoder = CountingEncoder()
    batcher = QueryBatcher(encoder, max_batch=8)
    encoder.gate.clear()  # hold the first call so that the others queue up behind it
    first = asyncio.create_task(batcher.embed("first"))
    await asyncio.sleep(0.05)
    queries = [f"{chr(97 + i)}-query-{'x' * i}" for i in range(20)]
    pending = [asyncio.create_task(batcher.embed(q)) for q in queries]
    await asyncio.sleep(0.05)
    encoder.gate.set()
    vectors = await asyncio.gather(first, *pending)
    for query, vector in zip(["first", *queries], vectors, strict=True):
        assert vector.shape == (1, 4)
        assert vector[0, 0] == len(query) and vector[0, 1] == ord(query[0])
    # 1 call for "first", then the 20 that waited in batches of at most 8.
    assert [len(call) for call in encoder.calls] == [1, 8, 8, 4]
    assert len(encoder.threads) == 1
    await batcher.close()


async def test_the_same_query_asked_at_once_is_encoded_once():
    encoder = CountingEncoder()
    batcher = QueryBatcher(encoder)
    encoder.gate.clear()
    blocker = asyncio.create_task(batcher.embed("blocker"))
    await asyncio.sleep(0.05)
    same = [asyncio.create_task(batcher.embed("same query")) for _ in range(5)]
    await asyncio.sleep(0.05)
    encoder.gate.set()
    await blocker
    vectors = await asyncio.gather(*same)
    assert all(np.array_equal(v, vectors[0]) for v in vectors)
    assert encoder.calls[1] == ["same query"]
    await batcher.close()


async def test_a_failing_batch_fails_its_queries_and_the_next_ones_still_work():
    encoder = CountingEncoder(fail_on="bad")
    batcher = QueryBatcher(encoder)
    with pytest.raises(ValueError, match="cannot encode 'bad'"):
        await batcher.embed("bad")
    assert (await batcher.embed("good"))[0, 0] == 4
    await batcher.close()


async def test_a_closed_batcher_refuses_queries():
    batcher = QueryBatcher(CountingEncoder())
    await batcher.embed("warm")
    await batcher.close()
    await batcher.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.embed("late")


async def test_a_query_in_flight_when_the_batcher_closes_fails_instead_of_hanging():
    encoder = CountingEncoder()
    encoder.gate.clear()  # the model call never returns on its own
    batcher = QueryBatcher(encoder)
    in_flight = asyncio.create_task(batcher.embed("stuck"))
    await asyncio.sleep(0.05)
    await batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(in_flight, timeout=2)
    encoder.gate.set()


class LookupEncoder:
    """Encodes each known text as its own unit vector, and counts the calls."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.dimension = len(next(iter(vectors.values())))
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(5)
        self.calls.append(list(texts))
        return np.stack([self.vectors[text] for text in texts])


def unit_vectors(count: int, seed: int, dimension: int = 16) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def indexed(tenants: dict[str | None, np.ndarray]) -> VectorIndex:
    """An index of each tenant's vectors, chunk ids ``<tenant or s><i>``."""
    index = VectorIndex()
    for tenant, vectors in tenants.items():
        prefix = tenant or "s"
        index.apply([VectorChange(f"{prefix}{i}", False, v, tenant) for i, v in enumerate(vectors)])
    return index


async def test_concurrent_searches_are_embedded_together_and_each_gets_its_own_nearest_chunks():
    index = indexed({None: unit_vectors(300, seed=1)})
    queries = {f"query {i}": vector for i, vector in enumerate(unit_vectors(12, seed=2))}
    encoder = LookupEncoder(queries | {"blocker": unit_vectors(1, seed=3)[0]})
    batcher = QueryBatcher(encoder, max_batch=16, index=index)
    encoder.gate.clear()  # the first call waits, so that the twelve searches queue up behind it
    blocker = asyncio.create_task(batcher.embed("blocker"))
    await asyncio.sleep(0.05)
    searches = [asyncio.create_task(batcher.nearest(query, 5)) for query in queries]
    await asyncio.sleep(0.05)
    encoder.gate.set()
    await blocker
    answers = await asyncio.gather(*searches)
    await batcher.close()

    assert encoder.calls == [["blocker"], list(queries)]  # one model call for the twelve
    expected = index.nearest(np.stack(list(queries.values())), 5)
    for answer, want, vector in zip(answers, expected, queries.values(), strict=True):
        assert answer.chunks == want
        assert np.array_equal(answer.vector[0], vector)
        assert answer.search_ms > 0


async def test_searches_of_two_tenants_at_once_each_see_only_their_tenants_chunks():
    index = indexed({"acme": unit_vectors(300, seed=4), "beta": unit_vectors(300, seed=5)})
    queries = {f"query {i}": vector for i, vector in enumerate(unit_vectors(24, seed=6))}
    batcher = QueryBatcher(LookupEncoder(queries), max_batch=8, index=index)
    try:
        answers = await asyncio.gather(
            *(batcher.nearest(query, 5, "acme" if i % 2 else "beta") for i, query in enumerate(queries))
        )
    finally:
        await batcher.close()

    for i, answer in enumerate(answers):
        assert answer.chunks is not None and len(answer.chunks) == 5
        assert {chunk.id[0] for chunk in answer.chunks} == {"a" if i % 2 else "b"}


async def test_a_search_the_replica_cannot_answer_still_gets_its_vector_for_chromas():
    class FailingIndex(VectorIndex):
        def nearest(self, vectors, k, tenant=None):
            raise VectorSearchFailed("Cannot return the results in a contigious 2D array")

    vector = unit_vectors(1, seed=7)[0]
    batcher = QueryBatcher(LookupEncoder({"q": vector}), index=FailingIndex())
    answer = await batcher.nearest("q", 5)
    await batcher.close()

    assert answer.chunks is None
    assert np.array_equal(answer.vector[0], vector)
