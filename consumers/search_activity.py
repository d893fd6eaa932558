"""Whether searches are running on this host: the consumers' side of ``query_api/search_activity.py``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

#: How stale the file's time may be: a ``stat`` per batch of 32 chunks would do too, but a
#: caller asking in a loop must not turn this into a syscall per call.
CHECK_EVERY_S = 0.5


class SearchActivity:
    """``searching()`` is true while the API on this host served a search in the last ``window_s``."""

    def __init__(
        self,
        path: Path,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._window_s = window_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._next_check = float("-inf")
        self._last_search = float("-inf")  # wall-clock seconds, as the file's modification time

    def searching(self) -> bool:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + CHECK_EVERY_S
            try:
                self._last_search = os.stat(self._path).st_mtime
            except FileNotFoundError:  # no search served since the host started, or ever
                self._last_search = float("-inf")
        return self._wall_clock() - self._last_search <= self._window_s
