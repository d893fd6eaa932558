"""Reading files and folders into upsert events (``ragstream publish PATH…``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas import DocumentEvent, EventOp

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/x-rst",
    ".html": "text/html",
    ".htm": "text/html",
}


@dataclass(frozen=True, slots=True)
class SkippedFile:
    path: Path
    reason: str


def find_documents(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(root, file) for every supported file: a folder is walked, hidden entries are left out."""
    for given in paths:
        if given.is_file():
            yield given.parent, given
            continue
        if not given.is_dir():
            raise FileNotFoundError(f"no such file or folder: {given}")
        for path in sorted(given.rglob("*")):
            relative = path.relative_to(given)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if path.is_file() and path.suffix.lower() in CONTENT_TYPES:
                yield given, path


def read_document(root: Path, path: Path, max_bytes: int) -> DocumentEvent | SkippedFile:
    """An upsert for one file, doc_id = its path relative to ``root``; or why it was skipped."""
    size = path.stat().st_size
    if size > max_bytes:
        return SkippedFile(path, f"{size} bytes is above the limit of {max_bytes}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return SkippedFile(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    if not text.strip():
        return SkippedFile(path, "empty file")
    return DocumentEvent(
        doc_id=path.relative_to(root).as_posix(),
        op=EventOp.UPSERT,
        content=text,
        content_type=CONTENT_TYPES[path.suffix.lower()],
        source="file",
        version=path.stat().st_mtime_ns // 1000,
        metadata={"path": str(path.resolve())},
    )
