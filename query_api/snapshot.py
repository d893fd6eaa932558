"""Snapshots of a replica's views, so that a new replica replays only the chunk log's tail.

A snapshot is a folder named by when it was taken (newest sorts last) holding the BM25 index
(tantivy's files, the chunk records and keys, the live document frequencies), the HNSW graphs
(the whole one and each tenant's) with their labels, and a manifest: the ``docs.chunks`` offset
per partition the views cover, what shapes the views (a snapshot made otherwise is not
loaded), and every file's size and SHA-256 (a corrupt or partial one is not loaded either).

It is written in a ``.tmp-*`` folder of a unique name, flushed to the disk, then renamed into
place, so a reader sees a whole snapshot or none. Several replicas may share one folder: each
removes only snapshots older than the one it just wrote, by renaming them away first, and a
replica that finds its snapshot gone while reading it tries the next older one.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from query_api._snapshot_files import (
    file_digest,
    fsync_folder,
    fsync_tree,
    read_blobs,
    read_integers,
    read_texts,
    write_blobs,
    write_integers,
    write_texts,
)
from query_api.forked_write import ForkedWrite
from query_api.lexical import LexicalContents, LexicalIndex, write_index_files
from query_api.vector_index import GRAPH_PARAMETERS, VectorIndex

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["CapturedViews", "SnapshotInvalid", "SnapshotStore", "ViewShape"]

#: The layout of a snapshot's files; a reader skips any other.
FORMAT = 1
_MANIFEST = "manifest.json"
#: A temporary folder this old was left by a replica that died while writing it.
_ABANDONED_AFTER_S = 3600.0


class SnapshotInvalid(Exception):
    """A snapshot that must not be loaded; the message says why."""


@dataclass(frozen=True)
class ViewShape:
    """What a snapshot's views must have been made with to be loaded into a view of this shape."""

    topic: str
    vectors: bool
    per_tenant: bool = True
    dimension: int | None = None

    def mismatch(self, manifest: dict[str, Any]) -> str | None:
        """Why a snapshot with ``manifest`` does not fit this view; None if it does."""
        if manifest["topic"] != self.topic:
            return f"it is of chunk log {manifest['topic']!r}, not {self.topic!r}"
        if not self.vectors:
            return None
        saved = manifest["vectors"]
        if saved is None:
            return "it holds no vectors"
        if saved["per_tenant"] != self.per_tenant:
            return "its vector index per tenant is not as configured"
        if manifest["graph"] != GRAPH_PARAMETERS:
            return f"its graphs were built with {manifest['graph']}, not {GRAPH_PARAMETERS}"
        if self.dimension is not None and saved["dimension"] not in (None, self.dimension):
            return f"its vectors have {saved['dimension']} dimensions, not {self.dimension}"
        return None


@dataclass
class CapturedViews:
    """The views as of ``offsets``, to be written in ``folder``: the vectors by a forked child
    (``vectors_written``), the BM25 index's contents by ``finish``."""

    folder: Path
    offsets: dict[int, int]
    lexical: LexicalContents
    vectors: dict[str, Any] | None
    vectors_written: ForkedWrite | None


class SnapshotStore:
    """The snapshots of one chunk log's views under ``root``; ``keep`` newest are kept."""

    def __init__(self, root: Path, keep: int, shape: ViewShape) -> None:
        self.root = root
        self._keep = keep
        self._shape = shape

    def snapshots(self) -> list[Path]:
        """Complete snapshots, newest first."""
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if not p.name.startswith(".")), reverse=True)

    # --- writing ------------------------------------------------------------------------------------

    def capture(
        self, index: LexicalIndex, vectors: VectorIndex | None, offsets: Mapping[int, int]
    ) -> CapturedViews:
        """Take the views as of ``offsets``, on the thread that applies changes, between two
        changes: forks the child that writes the graphs and copies the BM25 tables (0.38-0.42 s
        at 1M chunks, bench/replica_start.py: applying waits; searches only while the copy and
        the fork hold the GIL)."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f".tmp-{uuid.uuid4().hex}"
        folder.mkdir()
        saved, writing = vectors.save_in_child(folder / "vectors") if vectors is not None else (None, None)
        try:
            return CapturedViews(folder, dict(offsets), index.contents(), saved, writing)
        except BaseException:
            if writing is not None:
                writing.kill()
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def finish(self, captured: CapturedViews, stop: threading.Event | None = None) -> Path:
        """Write the rest of ``captured``, flush it, rename it into place and remove older
        snapshots beyond ``keep``; returns the snapshot. ``stop`` set abandons it."""
        folder = captured.folder
        try:
            write_index_files(captured.lexical, _new_folder(folder / "lexical"), stop)
            _write_contents(folder / "chunks", captured.lexical)
            if captured.vectors_written is not None:
                captured.vectors_written.wait(stop)
            files = {
                str(path.relative_to(folder)): {"bytes": path.stat().st_size, "sha256": file_digest(path)}
                for path in sorted(folder.rglob("*"))
                if path.is_file()
            }
            created = time.time_ns()
            body = {
                "format": FORMAT,
                "created_ns": created,
                **asdict(self._shape),
                "graph": GRAPH_PARAMETERS,
                "vectors": captured.vectors,
                "offsets": {str(p): offset for p, offset in captured.offsets.items()},
                "chunks": len(captured.lexical.keys),
                "next_key": captured.lexical.next_key,
                "files": files,
            }
            (folder / _MANIFEST).write_bytes(_sealed(body))
            fsync_tree(folder)
            final = self.root / f"{created:020d}-{uuid.uuid4().hex[:8]}"
            folder.rename(final)
            fsync_folder(self.root)
        except BaseException:
            self.discard(captured)
            raise
        self._remove_older_than(final)
        return final

    def discard(self, captured: CapturedViews) -> None:
        if captured.vectors_written is not None:
            captured.vectors_written.kill()
        shutil.rmtree(captured.folder, ignore_errors=True)

    def _remove_older_than(self, newest: Path) -> None:
        for old in self.snapshots()[self._keep :]:
            if old.name < newest.name:
                _remove(old, self.root)
        now = time.time()
        for entry in self.root.iterdir():
            if entry.name.startswith((".tmp-", ".trash-")):
                try:
                    abandoned = now - entry.stat().st_mtime > _ABANDONED_AFTER_S
                except FileNotFoundError:  # its writer just renamed or removed it
                    continue
                if abandoned:
                    shutil.rmtree(entry, ignore_errors=True)

    # --- reading ------------------------------------------------------------------------------------

    def restore(
        self, index: LexicalIndex, vectors: VectorIndex | None, bounds: Mapping[int, tuple[int, int]]
    ) -> tuple[Path, dict[int, int]] | None:
        """Load the newest valid snapshot into the new, empty views; returns it and the offsets
        it covers, or None when no snapshot is valid. ``bounds``: each partition's first and end
        offsets now, which a usable snapshot's offsets lie within."""
        for folder in self.snapshots():
            started = time.monotonic()
            try:
                manifest = self._usable_manifest(folder, bounds)
                checksums = self._load(folder, manifest, index, vectors)
            except SnapshotInvalid as exc:
                log.warning("snapshot %s skipped: %s", folder, exc)
                continue
            offsets = {int(p): offset for p, offset in manifest["offsets"].items()}
            log.info(
                "views restored from snapshot %s in %.1f s (checksums %.1f s, while loading): %d "
                "chunks, the log's tail from %s",
                folder,
                time.monotonic() - started,
                checksums,
                manifest["chunks"],
                offsets,
            )
            return folder, offsets
        log.info("no valid snapshot under %s: replaying the whole chunk log", self.root)
        return None

    def _usable_manifest(self, folder: Path, bounds: Mapping[int, tuple[int, int]]) -> dict[str, Any]:
        manifest = _read_manifest(folder / _MANIFEST)
        if (why := self._shape.mismatch(manifest)) is not None:
            raise SnapshotInvalid(f"incompatible: {why}")
        for partition, offset in manifest["offsets"].items():
            first, end = bounds.get(int(partition), (0, -1))
            if not first <= offset <= end:
                raise SnapshotInvalid(
                    f"partition {partition} at offset {offset} is outside the log's {first}..{end} "
                    "(the topic was recreated or truncated)"
                )
        return manifest

    def _load(
        self, folder: Path, manifest: dict[str, Any], index: LexicalIndex, vectors: VectorIndex | None
    ) -> float:
        """Load the snapshot into the views; returns the seconds its checksums took.

        The files are hashed while the chunk records are read (hashing releases the GIL), so a
        replica's start no longer waits for one and then the other. The graphs are loaded only
        once their own files matched (hnswlib trusts what it reads), and no view changes before
        every file matched: a damaged snapshot is never served.
        """
        files: dict[str, dict[str, Any]] = manifest["files"]
        _check_sizes(folder, files)
        graph_files = {name: spec for name, spec in files.items() if name.startswith("vectors/")}
        other_files = {name: spec for name, spec in files.items() if name not in graph_files}
        with ThreadPoolExecutor(2, "snapshot-verify") as verifier:
            graphs_verified = verifier.submit(_verify_checksums, folder, graph_files)
            others_verified = verifier.submit(_verify_checksums, folder, other_files)
            try:
                contents = self._read_contents(folder, manifest)
                graphs_verified.result()  # raises SnapshotInvalid for a damaged graph
                loaded = self._read_graphs(folder, manifest) if vectors is not None else None
            finally:
                # Waited for in any case: a file that fails its checksum is the better reason.
                checksums = max(graphs_verified.result(), others_verified.result())
        # Everything that can fail comes before the views change: the graphs load into a new
        # index, which the view's takes over only once the BM25 index is restored too.
        _loading(lambda: index.restore(folder / "lexical", contents))
        if vectors is not None and loaded is not None:
            vectors.take_over(loaded)
        return checksums

    @staticmethod
    def _read_contents(folder: Path, manifest: dict[str, Any]) -> LexicalContents:
        contents = _loading(lambda: _read_contents(folder / "chunks", manifest["next_key"]))
        if len(contents.keys) != manifest["chunks"]:
            raise SnapshotInvalid(f"{len(contents.keys)} chunks, the manifest says {manifest['chunks']}")
        return contents

    @staticmethod
    def _read_graphs(folder: Path, manifest: dict[str, Any]) -> VectorIndex:
        return _loading(lambda: VectorIndex.load(folder / "vectors", manifest["vectors"]))


def _loading(read: Callable[[], T]) -> T:
    """``read()``, any error of reading a snapshot's files turned into SnapshotInvalid."""
    try:
        return read()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        # OSError includes the snapshot removed by another replica while read.
        raise SnapshotInvalid(f"could not be loaded: {type(exc).__name__}: {exc}") from exc


def _new_folder(path: Path) -> Path:
    path.mkdir()
    return path


def _write_contents(folder: Path, contents: LexicalContents) -> None:
    folder.mkdir()
    write_texts(folder / "ids", contents.keys)
    write_integers(folder / "keys", contents.keys.values())
    write_blobs(folder / "records", [contents.records[chunk_id] for chunk_id in contents.keys])
    write_texts(folder / "terms", contents.live_chunks_with)
    write_integers(folder / "term-chunks", contents.live_chunks_with.values())


def _read_contents(folder: Path, next_key: int) -> LexicalContents:
    ids = read_texts(folder / "ids")
    records = read_blobs(folder / "records")
    keys = dict(zip(ids, read_integers(folder / "keys"), strict=True))
    frequencies = dict(zip(read_texts(folder / "terms"), read_integers(folder / "term-chunks"), strict=True))
    return LexicalContents(keys, dict(zip(ids, records, strict=True)), frequencies, next_key)


def _sealed(body: dict[str, Any]) -> bytes:
    """The manifest with its own checksum, so that a damaged one is not mistaken for a valid one."""
    encoded = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return orjson.dumps({"sha256": _sha256(encoded), "body": orjson.Fragment(encoded)})


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        sealed = orjson.loads(path.read_bytes())
        body = sealed["body"]
        intact = _sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)) == sealed["sha256"]
    except FileNotFoundError as exc:
        raise SnapshotInvalid("no manifest (removed meanwhile?)") from exc
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise SnapshotInvalid(f"unreadable manifest: {type(exc).__name__}: {exc}") from exc
    if not intact:
        raise SnapshotInvalid("the manifest does not match its checksum")
    if body.get("format") != FORMAT:
        raise SnapshotInvalid(f"format {body.get('format')!r}, not {FORMAT}")
    return dict(body)


def _check_sizes(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """Raise SnapshotInvalid unless every file is there with its size: a partial copy fails here,
    before anything is read."""
    for name, expected in files.items():
        try:
            size = (folder / name).stat().st_size
        except FileNotFoundError as exc:
            raise SnapshotInvalid(f"{name} is missing") from exc
        if size != expected["bytes"]:
            raise SnapshotInvalid(f"{name} has {size} bytes, not {expected['bytes']}")


def _verify_checksums(folder: Path, files: dict[str, dict[str, Any]]) -> float:
    """Raise SnapshotInvalid unless every file matches its checksum; returns the seconds taken."""
    started = time.monotonic()
    # Hashing releases the GIL: the biggest files (graph, records) on two threads at once.
    with ThreadPoolExecutor(2, "snapshot-hash") as pool:
        digests = dict(zip(files, pool.map(lambda name: _digest_or_none(folder / name), files), strict=True))
    for name, expected in files.items():
        if digests[name] is None:
            raise SnapshotInvalid(f"{name} is missing")
        if digests[name] != expected["sha256"]:
            raise SnapshotInvalid(f"{name} does not match its checksum")
    return time.monotonic() - started


def _digest_or_none(path: Path) -> str | None:
    try:
        return file_digest(path)
    except FileNotFoundError:
        return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remove(snapshot: Path, root: Path) -> None:
    """Rename away first: a reader sees the whole snapshot or none, never half of one."""
    trash = root / f".trash-{uuid.uuid4().hex}"
    try:
        snapshot.rename(trash)
    except FileNotFoundError:  # another replica removed it first
        return
    shutil.rmtree(trash, ignore_errors=True)
