"""The fetch queue hands the worker every batch already queued as one, in offset order."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.fetch_queue import FetchQueue

A, B = TopicPartition("docs.changes", 0), TopicPartition("docs.changes", 1)


def record(tp: TopicPartition, offset: int) -> ConsumerRecord:
    value = f"event {offset}".encode()
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, value, None, 0, len(value), [])


async def test_batches_queued_while_the_worker_was_busy_come_out_as_one_in_offset_order() -> None:
    queue = FetchQueue(max_batches=3, max_bytes=1 << 20)
    queue.put(0, {A: [record(A, 0), record(A, 1)]})
    queue.put(0, {A: [record(A, 2)], B: [record(B, 7)]})
    queue.put(0, {B: [record(B, 8)]})

    fetched = await queue.get()

    assert [r.offset for r in fetched.batch[A]] == [0, 1, 2]
    assert [r.offset for r in fetched.batch[B]] == [7, 8]
    assert queue.queued_bytes == 0
    assert not queue.full()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await queue.get()


async def test_a_batch_of_an_older_generation_is_never_merged_with_a_newer_one() -> None:
    queue = FetchQueue(max_batches=3, max_bytes=1 << 20)
    queue.put(0, {A: [record(A, 0)]})
    queue.put(1, {A: [record(A, 0)]})

    first, second = await queue.get(), await queue.get()

    assert first is not None and second is not None
    assert (first.generation, second.generation) == (0, 1)
    assert [r.offset for r in first.batch[A]] == [0]
