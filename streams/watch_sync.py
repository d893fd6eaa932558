"""Comparing a watched folder with what was published from it, into the events that make them agree.

The folder on disk is the truth: a change notification only says *where* to look. Every path is
checked by content hash, so a touched file, an identical rewrite or a burst of notifications for
one save costs no event, while anything that really changed, whenever it changed, is published.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from schemas import DocumentEvent, EventOp
from streams.files import SkippedFile, UnreadableFile, extract_text, is_document
from streams.ignore import IgnoreRules
from streams.watch_state import TrackedFile, WatchState

log = logging.getLogger(__name__)

#: An mtime this close to the moment a file was read does not prove that a later write in the same
#: timestamp tick did not happen (2 s covers the coarsest file systems).
_RACY_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class Change:
    """One path to bring up to date: an event to publish, and the state to record once it is."""

    relative: str
    #: None when only the state changes: a touched file, same content, new mtime.
    event: DocumentEvent | None
    #: What the state records for the path afterwards; None: it is no longer tracked.
    tracked: TrackedFile | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Found:
    """A document file present on disk, and where to read it (a symlink's target)."""

    relative: str
    path: Path
    stat: os.stat_result


class _TooLarge(Exception):
    pass


def normalise_namespace(namespace: str | None) -> str | None:
    """``"wiki/"`` → ``"wiki"``; raises ``ValueError`` for one that cannot prefix a doc_id."""
    if namespace is None:
        return None
    cleaned = namespace.strip().strip("/")
    if not cleaned or any(ord(ch) < 32 for ch in cleaned):
        raise ValueError(f"namespace {namespace!r} must be non-empty printable text")
    return cleaned


def covering(prefixes: Iterable[str]) -> list[str]:
    """The prefixes not inside another one: a changed folder covers the files in it."""
    given = set(prefixes)
    if "" in given:
        return [""]
    return sorted(p for p in given if not _ancestors(p).intersection(given))


def is_covered(path: str, prefixes: set[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or lies inside one of them."""
    return "" in prefixes or path in prefixes or bool(_ancestors(path).intersection(prefixes))


def _ancestors(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:depth]) for depth in range(1, len(parts))}


class FolderSync:
    """Plans the changes that bring the published state of ``root`` in line with the disk."""

    def __init__(
        self,
        root: Path,
        state: WatchState,
        *,
        max_bytes: int,
        namespace: str | None = None,
        rules: IgnoreRules | None = None,
    ) -> None:
        self.root = root.resolve()
        self.state = state
        self.max_bytes = max_bytes
        self.namespace = normalise_namespace(namespace)
        self.rules = rules if rules is not None else IgnoreRules.load(self.root)
        #: Documents looked at by the latest ``changes()``, and those of them found unchanged.
        self.scanned = 0
        self.unchanged = 0
        # symlink path → path of its target, both inside root: a change to the target is a
        # change to the link's document too.
        self._links: dict[str, str] = {}

    def doc_id(self, relative: str) -> str:
        return f"{self.namespace}/{relative}" if self.namespace else relative

    def reload_rules(self) -> None:
        self.rules = IgnoreRules.load(self.root)

    def links_into(self, prefixes: Iterable[str]) -> set[str]:
        """Tracked symlinks whose target lies at or under one of ``prefixes``."""
        targets = list(prefixes)
        return {
            link
            for link, target in self._links.items()
            if any(not p or target == p or target.startswith(p + "/") for p in targets)
        }

    def changes(self, prefixes: Iterable[str], *, trust_stat: bool) -> Iterator[Change | SkippedFile]:
        """What to publish for every path at or under ``prefixes`` (``""`` = the whole folder).

        A file whose size and mtime match the state is taken as unchanged without reading it
        when it was found by walking a folder, and when it is named in ``prefixes`` only with
        ``trust_stat``: a notification for a file is reason enough to read and hash it.
        Skipped files are yielded too, so that the caller can say why.
        """
        self.scanned = self.unchanged = 0
        for prefix in covering(prefixes):
            found: set[str] = set()
            unreadable: list[str] = []
            skipped: dict[str, str] = {}
            for link in [link for link in self._links if _inside(link, prefix)]:
                del self._links[link]
            for item in self._scan(prefix, unreadable):
                if isinstance(item, SkippedFile):
                    skipped[self._relative(item.path)] = item.reason
                    yield item
                    continue
                found.add(item.relative)
                self.scanned += 1
                yield from self._check(item, trust_stat or item.relative != prefix)
            for relative in sorted(self.state.under(prefix)):
                if relative in found or any(_inside(relative, folder) for folder in unreadable):
                    continue
                yield self._delete(relative, skipped.get(relative) or self._why_gone(relative))

    def apply(self, changes: Iterable[Change]) -> None:
        """Record changes whose events were acknowledged, and save the state."""
        for change in changes:
            self.state.record(change.relative, change.tracked)
        self.state.save()

    # Finding what is on disk.

    def _scan(self, prefix: str, unreadable: list[str]) -> Iterator[_Found | SkippedFile]:
        if not prefix:
            yield from self._walk(self.root, "", unreadable)
            return
        path = self.root / prefix
        if not self._reached_without_symlinks(prefix):
            return
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(st.st_mode):
            if not self.rules.ignores(prefix, is_dir=True):
                yield from self._walk(path, prefix, unreadable)
        else:
            yield from self._entry(prefix, path, st)

    def _walk(self, folder: Path, prefix: str, unreadable: list[str]) -> Iterator[_Found | SkippedFile]:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            # What was published from it stays: nothing says it is gone.
            unreadable.append(prefix)
            yield SkippedFile(folder, f"folder not readable ({exc.strerror}); its documents are kept")
            return
        for entry in entries:
            relative = f"{prefix}/{entry.name}" if prefix else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not self.rules.ignores(relative, is_dir=True):
                        yield from self._walk(Path(entry.path), relative, unreadable)
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield from self._entry(relative, Path(entry.path), st)

    def _entry(self, relative: str, path: Path, st: os.stat_result) -> Iterator[_Found | SkippedFile]:
        if not is_document(path) or self.rules.ignores(relative):
            return
        try:
            relative.encode()
        except UnicodeEncodeError:
            yield SkippedFile(path, "its name is not valid UTF-8, so it cannot be a doc_id")
            return
        if stat.S_ISREG(st.st_mode):
            yield _Found(relative, path, st)
        elif stat.S_ISLNK(st.st_mode):
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(self.root):
                reason = f"symlink leads outside the watched folder (to {target}), not followed"
                yield SkippedFile(path, reason)
                return
            try:
                target_stat = os.stat(target)
            except OSError:
                yield SkippedFile(path, "broken symlink")
                return
            if stat.S_ISREG(target_stat.st_mode):
                self._links[relative] = self._relative(target)
                yield _Found(relative, target, target_stat)

    def _reached_without_symlinks(self, relative: str) -> bool:
        """False for a path inside a symlinked folder: such folders are never followed."""
        parent = (self.root / relative).parent
        return os.path.realpath(parent) == str(parent)

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # Deciding what to publish.

    def _check(self, found: _Found, trust_stat: bool) -> Iterator[Change | SkippedFile]:
        old = self.state.files.get(found.relative)
        st = found.stat
        if st.st_size > self.max_bytes:
            yield from self._refuse(found, f"{st.st_size} bytes is above the limit of {self.max_bytes}")
            return
        if trust_stat and old and (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns):
            self.unchanged += 1
            return
        read_at = time.time_ns()
        try:
            data, st = _read(found.path, self.max_bytes)
        except FileNotFoundError:
            if old:
                yield self._delete(found.relative, "removed")
            return
        except _TooLarge:
            yield from self._refuse(found, f"grew above the limit of {self.max_bytes} bytes")
            return
        except OSError as exc:
            yield SkippedFile(found.path, f"not readable ({exc.strerror}); its indexed version is kept")
            return
        digest = hashlib.sha256(data).hexdigest()
        mtime_ns = st.st_mtime_ns if read_at - st.st_mtime_ns >= _RACY_NS else None
        if old and old.sha256 == digest:
            self.unchanged += 1
            if (old.size, old.mtime_ns) != (len(data), mtime_ns):
                touched = replace(old, size=len(data), mtime_ns=mtime_ns)
                yield Change(found.relative, None, touched, "same content")
            return
        try:
            extracted = extract_text(found.path, data)
        except UnreadableFile as exc:
            yield from self._refuse(found, exc.reason)
            return
        if len(extracted.text.encode()) > self.max_bytes:
            yield from self._refuse(found, f"its text is above the limit of {self.max_bytes} bytes")
            return
        try:
            event = DocumentEvent(
                doc_id=self.doc_id(found.relative),
                op=EventOp.UPSERT,
                content=extracted.text,
                content_type=extracted.content_type,
                source="file",
                version=self.state.next_version(),
                metadata={"path": str(self.root / found.relative), **extracted.metadata},
            )
        except ValidationError as exc:
            # e.g. a name with a leading space or a control character: not a valid doc_id.
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            yield SkippedFile(found.path, f"not a valid event ({problems})")
            return
        tracked = TrackedFile(digest, len(data), mtime_ns, event.version)
        yield Change(found.relative, event, tracked, "changed" if old else "new")

    def _refuse(self, found: _Found, reason: str) -> Iterator[Change | SkippedFile]:
        yield SkippedFile(found.path, reason)
        # Its last indexed text no longer matches the file: better absent than stale.
        if found.relative in self.state.files:
            yield self._delete(found.relative, f"no longer indexable: {reason}")

    def _delete(self, relative: str, reason: str) -> Change:
        event = DocumentEvent(
            doc_id=self.doc_id(relative), op=EventOp.DELETE, source="file", version=self.state.next_version()
        )
        return Change(relative, event, None, reason)

    def _why_gone(self, relative: str) -> str:
        if not os.path.lexists(self.root / relative):
            return "removed"
        if self.rules.ignores(relative):
            return "now ignored"
        return "no longer a document file"


def _inside(relative: str, prefix: str) -> bool:
    return not prefix or relative == prefix or relative.startswith(prefix + "/")


def _read(path: Path, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file, never through a symlink swapped in since the scan, never
    blocking on a FIFO, and at most ``max_bytes``; with the stat of what was read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(file.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _TooLarge
    return data, st
