"""Splitting documents into chunks with stable, content-derived ids."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    index: int
    text: str


def chunk_id(doc_id: str, occurrence: int, text: str) -> str:
    """Deterministic id of a chunk: the same text in the same document always gets the same id.

    ``occurrence`` counts earlier chunks of the document with identical text, so repeated
    passages stay distinct. It stands in for the raw position on purpose: inserting a paragraph
    shifts every later position but leaves these ids, and so their embeddings, untouched.
    """
    digest = hashlib.sha256(f"{doc_id}\x00{occurrence}\x00{text}".encode()).hexdigest()
    return digest[:32]


class Chunker:
    """A LangChain recursive splitter (paragraphs, then lines, sentences, words)."""

    def __init__(self, chunk_size: int, chunk_overlap: int) -> None:
        if chunk_overlap >= chunk_size:
            raise ValueError(f"chunk_overlap ({chunk_overlap}) must be below chunk_size ({chunk_size})")
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            separators=["\n\n", "\n", ". ", " ", ""],
            keep_separator="end",
            strip_whitespace=True,
        )

    def split(self, doc_id: str, text: str) -> list[Chunk]:
        seen: Counter[str] = Counter()
        chunks = []
        for index, piece in enumerate(self._splitter.split_text(text)):
            chunks.append(Chunk(chunk_id(doc_id, seen[piece], piece), index, piece))
            seen[piece] += 1
        return chunks
