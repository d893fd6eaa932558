"""A task that runs in the background for as long as its owner is open (the API's views and
tails, the control topic's follower)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self


class BackgroundLoop:
    """``start()`` runs ``_run()`` as a task; ``stop()`` cancels and awaits it. Both are
    idempotent, and ``async with`` does the two."""

    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=type(self).__name__)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
