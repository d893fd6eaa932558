"""The API's sign to the consumers on its host that searches are running: a file it touches.

Consumers embed at a lower priority only while searches run (``consumers/priority.py``); they
learn that from this file's modification time, which costs them one ``stat`` and the API one
``utime`` every ``TOUCH_EVERY_S`` at most, however many searches it serves. A file, not a
message: it reaches exactly the consumers that share this host's CPUs, whichever process serves
(uvicorn, or a Ray Serve replica) and whichever process embeds (a Ray worker), and no others.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: Often enough for a consumer's window (``search_activity_window_s``, 2 s by default) to
#: always see the latest search, rarely enough to cost nothing next to a search.
TOUCH_EVERY_S = 0.5

_next_touch: dict[Path, float] = {}


def note_search(path: Path) -> None:
    """Say that a search is running now: touch ``path``, unless it was touched under
    ``TOUCH_EVERY_S`` ago by this process."""
    now = time.monotonic()
    if now < _next_touch.get(path, 0.0):
        return
    _next_touch[path] = now + TOUCH_EVERY_S
    try:
        try:
            os.utime(path)
        except FileNotFoundError:
            path.touch()
    except OSError as exc:
        # Searches must not fail for it; consumers then simply never yield to them.
        _next_touch[path] = now + 60.0
        log.warning("cannot mark searches as running in %s (%s); consumers will not yield to them", path, exc)
