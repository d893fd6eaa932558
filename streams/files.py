"""Reading files and folders into upsert events (``ragstream publish PATH…``, ``ragstream watch``)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from schemas import DocumentEvent, EventOp
from schemas.events import MetadataValue

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/x-rst",
    ".html": "text/html",
    ".htm": "text/html",
}
PDF_SUFFIX = ".pdf"
DOCUMENT_SUFFIXES = frozenset([*CONTENT_TYPES, PDF_SUFFIX])

# Enough to tell text from binary: text files essentially never contain a NUL byte.
_BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)
class SkippedFile:
    path: Path
    reason: str


class UnreadableFile(Exception):
    """A file whose bytes hold no text we can index; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ExtractedText:
    text: str
    content_type: str
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


def is_document(path: Path) -> bool:
    """Whether the file's suffix is one ragstream reads (.txt .md .rst .html .pdf)."""
    return path.suffix.lower() in DOCUMENT_SUFFIXES


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
            if path.is_file() and is_document(path):
                yield given, path


def extract_text(path: Path, data: bytes) -> ExtractedText:
    """The indexable text of a file's bytes; raises ``UnreadableFile`` with the reason."""
    suffix = path.suffix.lower()
    if suffix == PDF_SUFFIX:
        return _pdf_text(data)
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise UnreadableFile("binary content (NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise UnreadableFile("empty file")
    return ExtractedText(text, CONTENT_TYPES.get(suffix, "text/plain"))


def _pdf_text(data: bytes) -> ExtractedText:
    from pypdf import PdfReader

    # A PDF is untrusted input parsed by a third-party library: any failure means "unreadable".
    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted and not reader.decrypt("")
        pages = [] if encrypted else [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:
        raise UnreadableFile(f"not a readable PDF ({type(exc).__name__}: {exc})") from exc
    if encrypted:
        raise UnreadableFile("encrypted PDF")
    text = "\n\n".join(page.strip() for page in pages if page.strip()).replace("\x00", "")
    if not text.strip():
        raise UnreadableFile(f"no extractable text in {len(pages)} PDF page(s) (a scan?)")
    # The event carries the extracted text, so it is plain text; the metadata says where it came from.
    return ExtractedText(text, "text/plain", {"file_type": "application/pdf", "pages": len(pages)})


def read_document(root: Path, path: Path, max_bytes: int) -> DocumentEvent | SkippedFile:
    """An upsert for one file, doc_id = its path relative to ``root``; or why it was skipped."""
    size = path.stat().st_size
    if size > max_bytes:
        return SkippedFile(path, f"{size} bytes is above the limit of {max_bytes}")
    try:
        extracted = extract_text(path, path.read_bytes())
    except UnreadableFile as exc:
        return SkippedFile(path, exc.reason)
    return DocumentEvent(
        doc_id=path.relative_to(root).as_posix(),
        op=EventOp.UPSERT,
        content=extracted.text,
        content_type=extracted.content_type,
        source="file",
        version=path.stat().st_mtime_ns // 1000,
        metadata={"path": str(path.resolve()), **extracted.metadata},
    )
