"""A BM25 index of chunks (tantivy), changed one chunk at a time and searchable after each change.

Each chunk is one tantivy document: its text for BM25, its id for deletes, its doc_id for prefix
matching, its metadata as a JSON fast field for filters, and a numeric key as a fast field.

Ranking reads only the key of each candidate (a column read, ~0.3 µs a chunk), which names its
chunk id in a table kept beside the index. The chunk records, as the chunk log gave them, are
kept beside the index too, as bytes by chunk id: loading the 10 shown of a search from tantivy's
document store (a term query, then a block decompressed per chunk) took ~1.4 ms on the event
loop, a dictionary lookup and a JSON parse each take microseconds. The records cost their own
size in memory (~45 MB for 100k chunks of 64 characters with their metadata), which tantivy's
store no longer holds.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import tantivy
from tantivy import Filter, Occur, Query, TextAnalyzerBuilder, Tokenizer

from query_api._snapshot_files import link_or_copy
from query_api.filters import Condition, SearchFilter

log = logging.getLogger(__name__)

__all__ = ["LexicalContents", "LexicalHit", "LexicalIndex", "RankedChunk", "StoredChunk", "write_index_files"]

_ANALYZER = "ragstream_en"
#: Keys the query parser can address in a range; ranges on other keys are checked in Python.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Most candidates one search reads to fill a page past rejected or tied candidates.
_FETCH_MAX = 10_000
#: The writer's indexing budget; tantivy needs at least 15 MB per indexing thread.
_WRITER_HEAP_BYTES = 64_000_000


class RankedChunk(NamedTuple):
    """A chunk's place in a ranking: a tuple, since a search makes hundreds of them."""

    id: str
    score: float


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as the chunk log holds it."""

    id: str
    doc_id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class LexicalContents:
    """What a snapshot of the index holds beside tantivy's files: every live chunk's key and
    record, the live document frequencies, and the next key to give."""

    keys: dict[str, int]
    records: dict[str, bytes]
    live_chunks_with: dict[str, int]
    next_key: int


@dataclass(frozen=True)
class LexicalHit:
    id: str
    doc_id: str
    text: str
    metadata: dict[str, Any]
    score: float


def _analyzer() -> tantivy.TextAnalyzer:
    # English stemming, so that "baking" finds "bake"; words over 40 bytes are noise, not terms.
    return (
        TextAnalyzerBuilder(Tokenizer.simple())
        .filter(Filter.remove_long(40))
        .filter(Filter.lowercase())
        .filter(Filter.stemmer("english"))
        .build()
    )


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("doc_id", tokenizer_name="raw", index_option="basic")
    # One term in every document: its document frequency counts the deleted ones too, as BM25 does.
    builder.add_text_field("every", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("text", tokenizer_name=_ANALYZER, index_option="freq")
    builder.add_json_field("meta", tokenizer_name="raw", fast=True, index_option="basic")
    # Names the chunk in LexicalIndex._id_of_key without loading the record.
    builder.add_unsigned_field("key", fast=True)
    return builder.build()


def write_index_files(
    contents: LexicalContents, directory: Path, stop: threading.Event | None = None
) -> None:
    """Build into ``directory`` (empty) the tantivy index of ``contents``, its chunks under their
    own keys, and wait for its merges; ``stop`` set abandons it (InterruptedError)."""
    index = tantivy.Index(_schema(), path=str(directory))
    index.register_tokenizer(_ANALYZER, _analyzer())
    writer = index.writer(heap_size=_WRITER_HEAP_BYTES, num_threads=1)
    for done, (chunk_id, key) in enumerate(contents.keys.items()):
        if done % 10_000 == 0 and stop is not None and stop.is_set():
            raise InterruptedError("the index files were abandoned")
        writer.add_document(_document(chunk_id, contents.records[chunk_id], key)[0])
    writer.commit()
    writer.wait_merging_threads()


def _document(chunk_id: str, value: bytes, key: int) -> tuple[tantivy.Document, str]:
    """The chunk's tantivy document, and its text."""
    record = orjson.loads(value)
    text, metadata = str(record["text"]), dict(record["metadata"])
    document = tantivy.Document()
    document.add_text("id", chunk_id)
    document.add_text("doc_id", _doc_id_of(record, metadata))
    document.add_text("every", "1")
    document.add_text("text", text)
    document.add_json("meta", metadata)
    document.add_unsigned("key", key)
    return document, text


def _idf(documents: int, with_term: int) -> float:
    """BM25's inverse document frequency, as tantivy computes it."""
    return math.log(1 + (documents - with_term + 0.5) / (with_term + 0.5))


def _doc_id_of(record: dict[str, Any], metadata: dict[str, Any]) -> str:
    return str(record.get("doc_id", metadata.get("doc_id", "")))


def _regex_literal(text: str) -> str:
    # Every character but ASCII letters and digits as \x{..}: always a literal in tantivy's regexes.
    return "".join(ch if ch.isascii() and ch.isalnum() else f"\\x{{{ord(ch):X}}}" for ch in text)


class LexicalIndex:
    """Chunks searchable by BM25; ``apply`` is meant for one writer, ``search`` for any thread.

    ``parent_dir`` None keeps the index in memory; otherwise it lives in a fresh directory
    under ``parent_dir`` (one per instance, removed by ``close``).
    """

    def __init__(self, parent_dir: Path | None = None) -> None:
        self._schema = _schema()
        self._parent_dir = parent_dir
        self._dir: str | None = None
        if parent_dir is not None:
            parent_dir.mkdir(parents=True, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix="lexical-", dir=parent_dir)
        self._index = tantivy.Index(self._schema, path=self._dir)
        self._analyzer = _analyzer()
        self._index.register_tokenizer(_ANALYZER, self._analyzer)
        # Made by the first ``apply``: tantivy's indexing and merge threads start with the
        # priority of the thread that makes the writer, which should be the one that applies.
        self._writer: tantivy.IndexWriter | None = None
        self._write_lock = threading.Lock()
        self._closed = False
        # key → chunk id for every live chunk, and back. Keys are never reused, so a search on an
        # older snapshot either finds its chunk's key or (deleted since) none.
        self._id_of_key: dict[int, str] = {}
        self._key_of_id: dict[str, int] = {}
        # Every live chunk's record as logged: what a hit shows, and what filters tantivy cannot
        # evaluate read. Bytes, parsed when shown: the garbage collector never walks them.
        self._record_of_id: dict[str, bytes] = {}
        # How many live chunks hold each term: BM25's document frequency as if deleted chunks
        # were gone, which tantivy's own statistics count until a merge (see _term_queries).
        self._live_chunks_with: Counter[str] = Counter()
        self._next_key = 0

    def close(self) -> None:
        """Stop the writer's merge threads and remove the index directory; safe to call twice."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is not None:
                self._writer.wait_merging_threads()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def num_chunks(self) -> int:
        return int(self._index.searcher().num_docs)

    def apply(self, changes: Iterable[tuple[str, bytes | None]]) -> int:
        """Upsert (value = chunk record JSON) or delete (value None) chunks by id, then commit.

        Returns how many chunks changed. Searches see all of the changes or none of them.
        """
        latest = dict(changes)  # the last change of a chunk wins, as in the compacted log
        if not latest:
            return 0
        with self._write_lock:
            if self._closed:
                raise RuntimeError("the lexical index is closed")
            if self._writer is None:
                self._writer = self._index.writer(heap_size=_WRITER_HEAP_BYTES, num_threads=1)
            writer = self._writer
            replaced: list[int] = []
            # Each changed chunk's record once the commit is visible: None if it is gone.
            records: dict[str, bytes | None] = dict.fromkeys(latest)
            live_terms: Counter[str] = Counter()
            for chunk_id, value in latest.items():
                writer.delete_documents_by_term("id", chunk_id)
                old_key = self._key_of_id.pop(chunk_id, None)
                if old_key is not None:
                    replaced.append(old_key)
                    live_terms.subtract(self._terms(str(orjson.loads(self._record_of_id[chunk_id])["text"])))
                if value is None:
                    continue
                key, self._next_key = self._next_key, self._next_key + 1
                try:
                    document, text = _document(chunk_id, value, key)
                    writer.add_document(document)
                except (KeyError, TypeError, ValueError) as exc:
                    # Its previous version is deleted all the same: stale text must not be found.
                    log.warning("chunk %s: malformed record left out of the BM25 index: %s", chunk_id, exc)
                    continue
                # New keys before the commit (older snapshots never meet them), old keys after
                # it: a search on the snapshot before the commit still names its chunks.
                self._id_of_key[key] = chunk_id
                self._key_of_id[chunk_id] = key
                records[chunk_id] = value
                live_terms.update(self._terms(text))
            writer.commit()
            # Reload now rather than on tantivy's delayed schedule, so the change is visible on return.
            self._index.reload()
            for key in replaced:
                self._id_of_key.pop(key, None)
            for chunk_id, record in records.items():
                if record is None:
                    self._record_of_id.pop(chunk_id, None)
                else:
                    self._record_of_id[chunk_id] = record
            for term, change in live_terms.items():
                if change:
                    left = self._live_chunks_with[term] + change
                    if left > 0:
                        self._live_chunks_with[term] = left
                    else:
                        del self._live_chunks_with[term]
        return len(latest)

    def _terms(self, text: str) -> set[str]:
        """The terms of a chunk's text as the index holds them, each once."""
        return set(self._analyzer.analyze(text))

    def _open_copy(self, files: Path, directory: str, chunks: int) -> tantivy.Index:
        """Tantivy's ``files`` linked or copied into ``directory`` and opened; ValueError unless
        they hold ``chunks`` chunks."""
        for file in files.iterdir():
            if not file.name.endswith(".lock"):
                link_or_copy(file, Path(directory, file.name))
        index = tantivy.Index(self._schema, path=directory)
        index.register_tokenizer(_ANALYZER, self._analyzer)
        if index.searcher().num_docs != chunks:
            raise ValueError(
                f"tantivy holds {index.searcher().num_docs} chunks, the snapshot's table {chunks}"
            )
        return index

    def contents(self) -> LexicalContents:
        """A copy of what a snapshot holds beside tantivy's files, as of the last ``apply``.

        Copies of the tables only (the records are shared, never changed): ~0.1 s at 1M chunks,
        during which ``apply`` waits and searches do not.
        """
        with self._write_lock:
            return LexicalContents(
                dict(self._key_of_id), dict(self._record_of_id), dict(self._live_chunks_with), self._next_key
            )

    def restore(self, files: Path, contents: LexicalContents) -> None:
        """Become the index a snapshot holds: tantivy's ``files`` (linked or copied into a folder
        of this index's own, never changed in place) and ``contents``. Only before any ``apply``."""
        with self._write_lock:
            if self._closed or self._writer is not None or self._key_of_id:
                raise RuntimeError("only a new, empty lexical index can be restored")
            directory = tempfile.mkdtemp(prefix="lexical-", dir=self._parent_dir)
            try:
                index = self._open_copy(files, directory, len(contents.keys))
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            previous, self._dir, self._index = self._dir, directory, index
            self._key_of_id = dict(contents.keys)
            self._id_of_key = {key: chunk_id for chunk_id, key in contents.keys.items()}
            self._record_of_id = dict(contents.records)
            self._live_chunks_with = Counter(contents.live_chunks_with)
            self._next_key = contents.next_key
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)

    def search(self, query: str, limit: int, search_filter: SearchFilter | None = None) -> list[LexicalHit]:
        """The ``limit`` best chunks for ``query`` by BM25 that pass ``search_filter``, best first."""
        ranked = self.ranked(query, limit, search_filter)
        records = self.records([chunk.id for chunk in ranked])
        return [
            LexicalHit(chunk.id, record.doc_id, record.text, record.metadata, chunk.score)
            for chunk in ranked
            if (record := records.get(chunk.id)) is not None
        ]

    def ranked(self, query: str, limit: int, search_filter: SearchFilter | None = None) -> list[RankedChunk]:
        """Ids and BM25 scores of the ``limit`` best chunks that pass ``search_filter``, best first."""
        terms = list(dict.fromkeys(self._analyzer.analyze(query)))
        if not terms or limit < 1:
            return []
        searcher = self._index.searcher()
        term_queries = self._term_queries(searcher, terms)
        if not term_queries:
            return []
        text_query = Query.boolean_query([(Occur.Should, query) for query in term_queries])
        clauses, residual = self._filter_clauses(search_filter or SearchFilter())
        tantivy_query = Query.boolean_query([(Occur.Must, text_query), *clauses]) if clauses else text_query
        # One more than needed, to see whether the next candidate ties with the last one kept; and
        # more when conditions tantivy cannot evaluate are checked here and reject some.
        fetch = limit * (4 if residual else 1) + 1
        while True:
            found = searcher.search(tantivy_query, fetch, count=False).hits
            hits = self._passing(searcher, found, residual)
            # Settled once the fetch reaches below the score of the last hit kept: every chunk tied
            # with it is then among those fetched. (Whether the next hit ties with it cannot
            # change by fetching more, so that alone would fetch up to _FETCH_MAX on any tie.)
            settled = len(hits) > limit and found[-1][0] < hits[limit - 1].score
            if settled or len(found) < fetch or fetch >= _FETCH_MAX:
                break
            fetch *= 4
        # Tantivy orders equal scores by where documents sit in its segments, which differs between
        # replicas that applied the log in other batches: the chunk id decides instead.
        hits.sort(key=lambda hit: (-hit.score, hit.id))
        return hits[:limit]

    def _passing(
        self, searcher: tantivy.Searcher, found: list[tuple[float, Any]], residual: list[Condition]
    ) -> list[RankedChunk]:
        """The found chunks that pass the conditions tantivy could not check, as ids and scores."""
        keys = searcher.fast_field_values("key", [address for _, address in found])
        ids = [self._id_of_key.get(int(key)) if key is not None else None for key in keys]
        # A key without an id: the chunk was deleted after this snapshot was taken.
        ranked = [
            RankedChunk(i, float(score)) for (score, _), i in zip(found, ids, strict=True) if i is not None
        ]
        if not residual:
            return ranked
        # Those conditions read the metadata, which only the records hold.
        passing = []
        for chunk in ranked:
            value = self._record_of_id.get(chunk.id)
            metadata = orjson.loads(value)["metadata"] if value is not None else None
            if metadata is not None and all(condition.matches(metadata) for condition in residual):
                passing.append(chunk)
        return passing

    def records(self, chunk_ids: list[str]) -> dict[str, StoredChunk]:
        """The chunk records of those of ``chunk_ids`` that are indexed, by id."""
        found: dict[str, StoredChunk] = {}
        for chunk_id in dict.fromkeys(chunk_ids):
            value = self._record_of_id.get(chunk_id)
            if value is not None:
                record = orjson.loads(value)
                metadata = record["metadata"]
                doc_id = _doc_id_of(record, metadata)
                found[chunk_id] = StoredChunk(chunk_id, doc_id, record["text"], metadata)
        return found

    def _term_queries(self, searcher: tantivy.Searcher, terms: list[str]) -> list[Query]:
        """One BM25 query per term, weighted as if deleted chunks were gone.

        Tantivy counts a deleted chunk in BM25's statistics until a merge drops it, so a replica
        that has followed many edits would rank unlike one that just replayed the log. Boosting
        each term by live IDF / tantivy's IDF removes that difference (but for a slight one in the
        average chunk length).
        """
        queries = [Query.term_query(self._schema, "text", term) for term in terms]
        with_deleted, live = searcher.doc_freq("every", "1"), searcher.num_docs
        if with_deleted == live:
            return queries
        boosted = []
        for term, query in zip(terms, queries, strict=True):
            # Counted as the chunks were applied, not by a search counting the term's postings:
            # that doubled a search's time (1.0 → 1.6 ms at p50 on 100k chunks, 2% deleted).
            term_live = self._live_chunks_with.get(term, 0)
            if term_live == 0:
                continue
            term_with_deleted = searcher.doc_freq("text", term)
            boost = _idf(live, term_live) / _idf(with_deleted, max(term_with_deleted, term_live))
            boosted.append(Query.boost_query(query, boost))
        return boosted

    def doc_ids_with_prefix(self, prefix: str, limit: int) -> list[str] | None:
        """Document ids starting with ``prefix``, or None when there are more than ``limit``.

        May name a few documents deleted since the last merge: a superset, fine for filtering.
        """
        terms = self._index.searcher().terms_with_prefix("doc_id", prefix, limit=limit + 1)
        if len(terms) > limit:
            return None
        return [term for term, _ in terms]

    def _filter_clauses(
        self, search_filter: SearchFilter
    ) -> tuple[list[tuple[Occur, Query]], list[Condition]]:
        """Tantivy clauses for what it can evaluate; the conditions left for Python."""
        clauses: list[tuple[Occur, Query]] = []
        residual: list[Condition] = []
        if search_filter.doc_id_prefix is not None:
            pattern = _regex_literal(search_filter.doc_id_prefix) + ".*"
            clauses.append(
                (Occur.Must, self._filter_only(Query.regex_query(self._schema, "doc_id", pattern)))
            )
        for condition in search_filter.conditions:
            clause = self._condition_clause(condition)
            if clause is None:
                residual.append(condition)
            else:
                clauses.append(clause)
        return clauses, residual

    def _condition_clause(self, condition: Condition) -> tuple[Occur, Query] | None:
        key, operator, operand = condition.key, condition.operator, condition.operand
        if "\\" in key:
            return None
        # A dot inside a key is escaped: it is part of the key, not a step into nested JSON.
        path = "meta." + key.replace(".", "\\.")
        if operator in ("$eq", "$ne"):
            query = Query.term_query(self._schema, path, operand)
        elif operator in ("$in", "$nin"):
            query = Query.term_set_query(self._schema, path, operand)
        elif _PLAIN_KEY.fullmatch(key) and math.isfinite(operand):
            # The query parser is the only way to a range over a JSON subpath in tantivy's Python API.
            symbol = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[operator]
            try:
                query = self._index.parse_query(f"meta.{key}:{symbol}{operand!r}", ["meta"])
            except ValueError:
                return None  # e.g. an integer beyond 64 bits
        else:
            return None
        occur = Occur.MustNot if operator in ("$ne", "$nin") else Occur.Must
        return occur, self._filter_only(query)

    @staticmethod
    def _filter_only(query: Query) -> Query:
        # Filters select; they must not add to the BM25 score that ranks the hits.
        return Query.const_score_query(query, 0.0)
