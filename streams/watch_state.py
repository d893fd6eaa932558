"""What a folder watcher has published, kept in a small JSON file so that a restart can reconcile.

One file per (watched folder, namespace, target topic) under ``<state_dir>/watch/``. It records
only acknowledged events: a crash between publishing and saving republishes (harmless, the index
is idempotent) and never forgets a change. An exclusive lock keeps a second watcher of the same
folder from writing it at the same time.
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

log = logging.getLogger(__name__)

STATE_FORMAT = 1


class WatchStateError(Exception):
    """The state file cannot be used."""


class WatchStateLocked(WatchStateError):
    """Another watcher holds the state of this folder."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"another watcher is running on this folder (it holds {path})")
        self.path = path


@dataclass(frozen=True, slots=True)
class TrackedFile:
    """A published file: its content hash, and the stat that lets a restart skip re-reading it."""

    sha256: str
    size: int
    #: None when the file was written too shortly before it was read for its mtime to prove that
    #: it did not change again within the same timestamp tick (git's "racily clean" entries).
    mtime_ns: int | None
    version: int


def state_file(state_dir: Path, root: Path, namespace: str | None, target: str) -> Path:
    """Where the state of watching ``root`` into ``target`` under ``namespace`` lives."""
    key = "\0".join([str(root.resolve()), namespace or "", target])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return state_dir / "watch" / f"{root.resolve().name or 'root'}-{digest}.json"


def _parse_state(raw: bytes) -> tuple[int, dict[str, TrackedFile]]:
    """The high-water version and the tracked files of a saved state; raises ValueError,
    KeyError or TypeError (or orjson's) for anything else."""
    data = orjson.loads(raw)
    if data.get("format") != STATE_FORMAT:
        raise ValueError(f"unknown format {data.get('format')!r}")
    return int(data["high_water"]), {rel: TrackedFile(**entry) for rel, entry in data["files"].items()}


class WatchState:
    """The files published from one folder, keyed by path relative to it (POSIX form).

    Use as a context manager: entering takes the lock and loads the file, leaving releases it.
    """

    def __init__(self, path: Path, *, description: dict[str, str] | None = None) -> None:
        self.path = path
        self.description = description or {}
        self.files: dict[str, TrackedFile] = {}
        self._high_water = 0
        self._sorted: list[str] | None = None
        self._lock: IO[bytes] | None = None

    def __enter__(self) -> WatchState:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_suffix(".lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise WatchStateLocked(self.path) from None
        self._lock = lock
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self) -> None:
        self._sorted = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            self._high_water, self.files = _parse_state(raw)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_suffix(".corrupt")
            os.replace(self.path, aside)
            self.files, self._high_water = {}, 0
            # Without it every file is republished (harmless), but removals made while no watcher
            # ran are not noticed: say so.
            log.warning(
                "watch state %s unreadable (%s), moved to %s: every file will be republished, "
                "and files removed while no watcher ran stay in the index",
                self.path,
                exc,
                aside,
            )

    def save(self) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
        data = {
            "format": STATE_FORMAT,
            **self.description,
            "high_water": self._high_water,
            "files": {
                rel: {"sha256": f.sha256, "size": f.size, "mtime_ns": f.mtime_ns, "version": f.version}
                for rel, f in sorted(self.files.items())
            },
        }
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as out:
            out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)

    def next_version(self) -> int:
        """A version above every one handed out before, from the clock when it moved on.

        Deletes need versions too, and a document deleted then recreated must win over its
        deletion even if the clock stepped back in between.
        """
        self._high_water = max(time.time_ns() // 1000, self._high_water + 1)
        return self._high_water

    def under(self, prefix: str) -> list[str]:
        """Tracked paths equal to ``prefix`` or inside it (every path for ``""``)."""
        if not prefix:
            return list(self.files)
        # A burst of notifications asks this for each path: a binary search keeps a large
        # folder from making that quadratic.
        if self._sorted is None:
            self._sorted = sorted(self.files)
        inside = prefix + "/"
        found = []
        for relative in itertools.islice(self._sorted, bisect.bisect_left(self._sorted, prefix), None):
            if not relative.startswith(prefix):
                break
            if relative == prefix or relative.startswith(inside):
                found.append(relative)
        return found

    def record(self, relative: str, tracked: TrackedFile | None) -> None:
        if tracked is None:
            if self.files.pop(relative, None) is not None:
                self._sorted = None
        else:
            if relative not in self.files:
                self._sorted = None
            self.files[relative] = tracked
