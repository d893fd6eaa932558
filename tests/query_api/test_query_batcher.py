"""Concurrent searches share the query model through one batching thread."""

import asyncio
import threading

import numpy as np
import pytest

from query_api.query_batcher import QueryBatcher


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
