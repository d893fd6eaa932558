"""Micro-batching: the requests that arrive while a call is in flight go together into the next.

Concurrent searches each need a query embedded and a nearest-neighbour query answered. Done one
request at a time, each pays the call's fixed cost (a model call, an HTTP round trip); batched,
they share it, and under load latency is about one batch's time instead of a queue of singles.
Alone, a request goes out at once: nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

__all__ = ["BatcherClosed", "MicroBatcher", "OneThreadBatcher"]

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosed(RuntimeError):
    """The batcher was closed: it takes no more requests, and those waiting fail."""


class MicroBatcher(Generic[T, R]):
    """``await submit(item)`` → ``run([..., item, ...])``'s result for it.

    ``run`` gets the items of one batch and returns one result per item, in order. Items whose
    ``key`` differs never share a batch (say, queries with different filters); batches of
    different keys run concurrently, at most ``max_batch`` items each.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int,
        key: Callable[[T], Hashable] = lambda _: None,
        name: str = "batch",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run, self._max_batch, self._key, self._name = run, max_batch, key, name
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise BatcherClosed(f"the {self._name} batcher is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve(), name=f"{self._name} batcher")
        return await future

    async def close(self) -> None:
        """Take no more requests; those still waiting fail with ``BatcherClosed``. Idempotent."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for _, future in self._waiting:
            if not future.done():
                future.set_exception(BatcherClosed(f"the {self._name} batcher closed"))
        self._waiting.clear()

    async def _serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                groups: dict[Hashable, list[tuple[T, asyncio.Future[R]]]] = {}
                for item, future in waiting:
                    # A request that gave up (client gone, timeout) costs nothing more.
                    if not future.done():
                        groups.setdefault(self._key(item), []).append((item, future))
                batches = [
                    group[start : start + self._max_batch]
                    for group in groups.values()
                    for start in range(0, len(group), self._max_batch)
                ]
                await asyncio.gather(*(self._call(batch) for batch in batches))

    async def _call(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        futures = [future for _, future in batch]
        try:
            results = await self._run([item for item, _ in batch])
        except asyncio.CancelledError:
            # close() cancelled the worker with this batch in flight: its requests must not hang.
            _fail(futures, BatcherClosed(f"the {self._name} batcher closed"))
            raise
        except Exception as exc:  # noqa: BLE001
            # Not swallowed: what ``run`` raised is what each request of the batch raises, and the
            # worker lives on to serve the next batch.
            log.debug("%s of %d failed: %r", self._name, len(batch), exc)
            _fail(futures, exc)
            return
        if len(results) != len(batch):
            _fail(futures, RuntimeError(f"{self._name}: {len(results)} results for {len(batch)} items"))
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(futures: list[asyncio.Future[R]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


class OneThreadBatcher(Generic[T, R]):
    """``await submit(item)`` → ``run([..., item, ...])``'s result for it, ``run`` being blocking
    work (a model call, an index search) done on one thread of its own, off the event loop.

    One thread, not a pool: concurrent calls of CPU-bound work on a small machine only slow each
    other down, and the items that arrive meanwhile go together into the next call instead.
    """

    def __init__(
        self,
        run: Callable[[list[T]], list[R]],
        max_batch: int,
        key: Callable[[T], Hashable] = lambda _: None,
        name: str = "batch",
    ) -> None:
        self._sync_run = run
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name.replace(" ", "-"))
        self._batcher: MicroBatcher[T, R] = MicroBatcher(self._run, max_batch, key, name)

    async def submit(self, item: T) -> R:
        return await self._batcher.submit(item)

    async def close(self) -> None:
        """Take no more items; those still waiting fail with ``BatcherClosed``. Idempotent."""
        await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, items: list[T]) -> list[R]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._sync_run, items)
