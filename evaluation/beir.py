"""Data sets in the BEIR layout, as documents to publish and cases to search for.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/test.tsv`` (``query-id``, ``corpus-id``, ``score``, after a header line).
Its documents are published as ``<set>/<_id>`` with the set's name as their ``source``, so an
index holding several sets can still be searched one set at a time (``source`` filter) and a
hit's BEIR id is the doc_id after the first "/". Title and text are the content, as BEIR's own
dense retrievers embed them, and the title is also in the metadata.

Only queries with a judgement are cases (BEIR evaluates no others).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.cases import EvalCase
from schemas import DocumentEvent
from schemas.events import EventOp

__all__ = ["BeirSet", "InvalidBeirSet", "beir_id", "load_beir"]

#: One version for every document of a set: publishing a set twice changes nothing.
BEIR_VERSION = 1
QRELS = Path("qrels") / "test.tsv"


class InvalidBeirSet(ValueError):
    """A folder that is not a readable BEIR set; the message says what is wrong and where."""


@dataclass(frozen=True)
class BeirSet:
    name: str
    path: Path
    #: ``_id`` → (title, text)
    corpus: dict[str, tuple[str, str]]
    cases: list[EvalCase]
    #: judged (query, document) pairs whose document is not in the corpus: no retriever finds them.
    judged_missing: int = 0

    def doc_id(self, beir_doc_id: str) -> str:
        return f"{self.name}/{beir_doc_id}"

    def events(self) -> Iterator[DocumentEvent]:
        for beir_doc_id, (title, text) in self.corpus.items():
            yield DocumentEvent(
                doc_id=self.doc_id(beir_doc_id),
                op=EventOp.UPSERT,
                content=f"{title}\n\n{text}" if title else text,
                source=self.name,
                version=BEIR_VERSION,
                metadata={"title": title} if title else {},
            )


def beir_id(doc_id: str) -> str:
    """The BEIR ``_id`` of a document published from a set."""
    return doc_id.split("/", 1)[1]


def set_name(path: Path) -> str:
    """The folder's name, reduced to what topic and collection names allow."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", path.resolve().name).strip("-")
    return name or "beir"


def load_beir(path: Path, name: str | None = None) -> BeirSet:
    """Read the BEIR set in ``path``; its name is the folder's unless ``name`` is given."""
    name = name or set_name(path)
    corpus = {
        str(row["_id"]): (str(row.get("title") or "").strip(), str(row.get("text") or ""))
        for row in _jsonl(path / "corpus.jsonl", ("_id", "text"))
    }
    # A document with neither title nor text cannot be published (an upsert needs content).
    corpus = {doc_id: doc for doc_id, doc in corpus.items() if (doc[0] + doc[1]).strip()}
    queries = {str(row["_id"]): str(row["text"]) for row in _jsonl(path / "queries.jsonl", ("_id", "text"))}
    judgements = _qrels(path / QRELS)
    cases = []
    missing = 0
    for query_id, judged in judgements.items():
        if query_id not in queries:
            raise InvalidBeirSet(f"{path / QRELS}: query {query_id!r} is not in queries.jsonl")
        missing += sum(1 for doc_id in judged if doc_id not in corpus)
        relevance = {f"{name}/{doc_id}": grade for doc_id, grade in judged.items()}
        if any(grade > 0 for grade in relevance.values()):
            cases.append(EvalCase(query=queries[query_id], relevance=relevance, query_id=query_id))
    if not cases:
        raise InvalidBeirSet(f"{path / QRELS}: no query has a relevant document")
    return BeirSet(name=name, path=path, corpus=corpus, cases=cases, judged_missing=missing)


def _jsonl(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    try:
        lines = path.open(encoding="utf-8")
    except OSError as exc:
        raise InvalidBeirSet(f"cannot read {path}: {exc.strerror}") from exc
    with lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidBeirSet(f"{path}:{number}: not JSON ({exc.msg})") from exc
            absent = [key for key in required if key not in row]
            if absent:
                raise InvalidBeirSet(f"{path}:{number}: no {', '.join(absent)}")
            yield row


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id → {corpus id → grade}, in the file's order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidBeirSet(f"cannot read {path}: {exc.strerror}") from exc
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    judgements: dict[str, dict[str, int]] = {}
    # The first line is the header (query-id, corpus-id, score).
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 3:
            raise InvalidBeirSet(f"{path}:{number}: expected query-id, corpus-id and score")
        try:
            grade = int(float(row[2]))
        except ValueError as exc:
            raise InvalidBeirSet(f"{path}:{number}: the score {row[2]!r} is not a number") from exc
        judgements.setdefault(row[0], {})[row[1]] = grade
    return judgements
