"""Files of a view snapshot: lists of byte strings and integers in a compact binary form, made
durable with fsync, and linked rather than copied where the file system allows.

A list of a million chunk ids or records as JSON took seconds to parse; as one blob and its
offsets it loads in a fraction of that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "file_digest",
    "fsync_folder",
    "fsync_tree",
    "link_or_copy",
    "read_blobs",
    "read_integers",
    "read_texts",
    "write_blobs",
    "write_integers",
    "write_texts",
]

_DIGEST_BLOCK = 8 * 1024 * 1024


def write_blobs(path: Path, blobs: Sequence[bytes]) -> None:
    """``blobs`` as their count, their end offsets (little-endian uint64), then their bytes."""
    ends = np.cumsum(np.fromiter((len(blob) for blob in blobs), dtype="<u8", count=len(blobs)))
    with path.open("wb") as file:
        file.write(np.array([len(blobs)], dtype="<u8").tobytes())
        file.write(ends.astype("<u8").tobytes())
        for blob in blobs:
            file.write(blob)


def read_blobs(path: Path) -> list[bytes]:
    data = path.read_bytes()
    count = int(np.frombuffer(data, dtype="<u8", count=1)[0])
    ends = np.frombuffer(data, dtype="<u8", count=count, offset=8).tolist()
    base = 8 * (count + 1)
    if base + (ends[-1] if ends else 0) != len(data):
        raise ValueError(f"{path.name}: {len(data)} bytes, not what its offsets say")
    starts = [0, *ends[:-1]] if ends else []
    return [data[base + start : base + end] for start, end in zip(starts, ends, strict=True)]


def write_texts(path: Path, texts: Iterable[str]) -> None:
    write_blobs(path, [text.encode() for text in texts])


def read_texts(path: Path) -> list[str]:
    return [blob.decode() for blob in read_blobs(path)]


def write_integers(path: Path, values: Iterable[int]) -> None:
    path.write_bytes(np.fromiter(values, dtype="<i8").tobytes())


def read_integers(path: Path) -> list[int]:
    return np.frombuffer(path.read_bytes(), dtype="<i8").tolist()


def file_digest(path: Path) -> str:
    """The file's SHA-256 (hashlib releases the GIL on each block: searches go on meanwhile)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_DIGEST_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and every folder's entries to the disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            descriptor = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_folder(Path(folder))


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows (instant, and the files are never written in
    place), else a copy."""
    try:
        os.link(source, target)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        shutil.copy2(source, target)
