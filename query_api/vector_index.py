"""An in-memory HNSW index of the chunk vectors: each API replica's own, a view of the chunk log.

The consumers log each chunk's embedding beside its record (``consumers.chunk_log``), so the
replica that replays the log for BM25 can also answer nearest-neighbour queries itself, in
about a millisecond, instead of a round trip to Chroma of 5 ms or more under load. Both
retrievers of a hybrid search then read the same position of the log.

Chroma stays the durable store, and the answer whenever this index cannot be complete: while
the log replays after a start, or while some live chunk was logged without its vector (a log
written by an older version). ``complete`` tells which.

A tenant's chunks are also kept in an index of that tenant's alone, so that a search by a key
bound to a tenant is answered here too: the whole graph searched with the tenant as a filter
would visit every other tenant's points on the way, and for a small tenant find too few. Such
chunks take their memory twice (~1.7 KB more for a chunk of 384 dimensions).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import hnswlib
import numpy as np

from query_api._snapshot_files import read_integers, read_texts, write_integers, write_texts
from query_api.forked_write import ForkedWrite, write_in_child
from query_api.lexical import RankedChunk

log = logging.getLogger(__name__)

__all__ = ["GRAPH_PARAMETERS", "VectorChange", "VectorIndex", "VectorSearchFailed"]

#: Graph parameters as Chroma's defaults (M 16, construction ef 100), and its search breadth
#: as ``engines.chroma.HNSW_EF_SEARCH``: the same recall as the Chroma queries it stands in for.
_M = 16
_EF_CONSTRUCTION = 100
#: What shapes a saved graph: a snapshot made with others is not loaded.
GRAPH_PARAMETERS = {"space": "ip", "M": _M, "ef_construction": _EF_CONSTRUCTION}
_EF_SEARCH = 200
#: Vectors added per hold of the lock once the index is searched (one writing thread): a search
#: waits for at most one insertion, ~1.5 ms at 100k chunks, where a slice of 64 took ~50 ms.
_LIVE_SLICE = 1
#: Per hold while the log replays on several threads: nothing searches yet, and hnswlib's
#: threads share a slice.
_REPLAY_SLICE = 64


class VectorSearchFailed(Exception):
    """HNSW could not return as many neighbours as asked (a graph thinned by deletions)."""


class VectorChange(NamedTuple):
    """A chunk upserted with its vector (``vector`` None: logged without one) or deleted;
    ``tenant``, the upserted chunk's, from its metadata."""

    chunk_id: str
    deleted: bool
    vector: np.ndarray | None = None
    tenant: str | None = None


class VectorIndex:
    """Cosine nearest neighbours over unit vectors, keyed by chunk id; thread-safe.

    hnswlib keys points by integer labels: each upsert gets a fresh one (its slot is reused
    from a deleted point), so a label never names two chunks, even for a search in flight.
    """

    def __init__(
        self, dimension: int | None = None, initial_capacity: int = 1024, *, per_tenant: bool = True
    ) -> None:
        self.dimension = dimension
        self._capacity = initial_capacity
        self._index: hnswlib.Index | None = None
        self._label_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_label = 0
        self._without_vector: set[str] = set()
        self._lock = _SearchesFirst()
        # One writer at a time (``apply``, ``save``); searches never take it.
        self._write_lock = threading.Lock()
        #: Each tenant's own index (``per_tenant``), and the tenant of each chunk in one.
        self._per_tenant = per_tenant
        self._tenants: dict[str, VectorIndex] = {}
        self._tenant_of: dict[str, str] = {}

    @property
    def per_tenant(self) -> bool:
        return self._per_tenant

    @property
    def num_vectors(self) -> int:
        return len(self._label_of)

    @property
    def complete(self) -> bool:
        """True when every live chunk applied so far has its vector here."""
        return not self._without_vector

    def apply(self, changes: Iterable[VectorChange], threads: int = 1) -> None:
        """Apply changes in order; the last change of a chunk wins. A chunk replaced is never
        missing for a search in between: its old point goes out as its new one comes in.

        ``threads`` > 1 is for a replay, before searches come: hnswlib then inserts in parallel,
        in slices that would keep a search waiting for tens of ms."""
        latest = list({change.chunk_id: change for change in changes}.values())
        with self._write_lock:
            if self._per_tenant:
                self._apply_per_tenant(latest, threads)
            size = _REPLAY_SLICE if threads > 1 else _LIVE_SLICE
            for start in range(0, len(latest), size):
                with self._lock.writing():
                    upserts = [change for change in latest[start : start + size] if self._takes_out(change)]
                    if upserts:
                        self._add(upserts, threads)

    # --- snapshots ---------------------------------------------------------------------------------

    def save_in_child(self, directory: Path) -> tuple[dict[str, Any], ForkedWrite]:
        """Write the graph, its labels and each tenant's index under ``directory`` (new) from a
        child forked now; returns what ``load`` needs beside the files (JSON-able) and the child,
        whose ``wait`` says when they are whole.

        hnswlib holds the GIL while it writes a graph, seconds at a million chunks, so writing
        here would stop every search; the child writes the index as it was at the fork while
        searches and ``apply`` go on.
        """
        with self._write_lock:
            description = self._description()
            writing = write_in_child(lambda: self._write_files(directory), f"the vector index to {directory}")
        return description, writing

    def _description(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "next_label": self._next_label,
            "graph": self._index is not None,
            "per_tenant": self._per_tenant,
            "tenants": [{"name": tenant, **own._description()} for tenant, own in self._tenants.items()],
        }

    def _write_files(self, directory: Path) -> None:
        """The files of ``save_in_child``, written by its child."""
        directory.mkdir(parents=True)
        if self._index is not None:
            self._index.save_index(str(directory / "graph.hnsw"))
        write_texts(directory / "ids", self._label_of)
        write_integers(directory / "labels", self._label_of.values())
        write_texts(directory / "without-vector", self._without_vector)
        for number, own in enumerate(self._tenants.values()):
            own._write_files(directory / f"tenant-{number}")

    @classmethod
    def load(cls, directory: Path, saved: dict[str, Any]) -> VectorIndex:
        """A new index as ``save_in_child`` wrote it into ``directory``."""
        loaded = cls(saved["dimension"], per_tenant=saved["per_tenant"])
        if saved["graph"]:
            index = hnswlib.Index(space="ip", dim=saved["dimension"])
            index.load_index(str(directory / "graph.hnsw"), allow_replace_deleted=True)
            loaded._index = index
        loaded._label_of = dict(
            zip(read_texts(directory / "ids"), read_integers(directory / "labels"), strict=True)
        )
        loaded._id_of = {label: chunk_id for chunk_id, label in loaded._label_of.items()}
        loaded._next_label = saved["next_label"]
        loaded._without_vector = set(read_texts(directory / "without-vector"))
        for tenant in saved["tenants"]:
            own = cls.load(directory / f"tenant-{len(loaded._tenants)}", tenant)
            loaded._tenants[tenant["name"]] = own
            loaded._tenant_of.update(dict.fromkeys(own._label_of, tenant["name"]))
            loaded._tenant_of.update(dict.fromkeys(own._without_vector, tenant["name"]))
        if loaded._index is not None and loaded._index.element_count < len(loaded._label_of):
            raise ValueError("the graph holds fewer points than its labels name")
        return loaded

    def take_over(self, other: VectorIndex) -> None:
        """Hold what ``other`` holds (a loaded snapshot), in place: whoever holds this index sees it."""
        with self._write_lock, self._lock.writing():
            self.dimension, self._index = other.dimension, other._index
            self._label_of, self._id_of, self._next_label = other._label_of, other._id_of, other._next_label
            self._without_vector, self._tenants, self._tenant_of = (
                other._without_vector,
                other._tenants,
                other._tenant_of,
            )

    def nearest(self, vectors: np.ndarray, k: int, tenant: str | None = None) -> list[list[RankedChunk]]:
        """Per row of ``vectors``, up to ``k`` chunks by cosine similarity, best first; with
        ``tenant``, only that tenant's chunks."""
        if tenant is not None:
            if not self._per_tenant:
                raise ValueError("this index keeps no index per tenant")
            own = self._tenants.get(tenant)
            return own.nearest(vectors, k) if own is not None else [[] for _ in range(len(vectors))]
        rows = _unit(np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1))
        with self._lock.searching():
            found = min(k, len(self._label_of))
            if self._index is None or found == 0:
                return [[] for _ in rows]
            self._index.set_ef(max(_EF_SEARCH, found))
            try:
                labels, distances = self._index.knn_query(rows, k=found, num_threads=1)
            except RuntimeError as exc:
                raise VectorSearchFailed(str(exc)) from exc
            ids = self._id_of
            return [
                [
                    RankedChunk(ids[int(label)], 1.0 - float(distance))
                    for label, distance in zip(row, dist, strict=True)
                ]
                for row, dist in zip(labels, distances, strict=True)
            ]

    def _apply_per_tenant(self, latest: list[VectorChange], threads: int) -> None:
        """Each tenant's index gets the changes of its chunks; a chunk no longer the tenant's
        (deleted, or upserted under another tenant or none) leaves it."""
        by_tenant: dict[str, list[VectorChange]] = {}
        for change in latest:
            before = self._tenant_of.get(change.chunk_id)
            after = None if change.deleted else change.tenant
            if before is not None and before != after:
                by_tenant.setdefault(before, []).append(VectorChange(change.chunk_id, True))
                del self._tenant_of[change.chunk_id]
            if after is not None:
                by_tenant.setdefault(after, []).append(change)
                self._tenant_of[change.chunk_id] = after
        for tenant, changes in by_tenant.items():
            own = self._tenants.get(tenant)
            if own is None:
                own = self._tenants[tenant] = VectorIndex(self.dimension, per_tenant=False)
            own.apply(changes, threads)

    # --- under the lock ----------------------------------------------------------------------------

    def _takes_out(self, change: VectorChange) -> bool:
        """Removes the chunk's current point; True if ``change`` brings a vector to add."""
        chunk_id = change.chunk_id
        self._without_vector.discard(chunk_id)
        label = self._label_of.pop(chunk_id, None)
        if label is not None:
            assert self._index is not None
            self._index.mark_deleted(label)
            del self._id_of[label]
        if change.deleted:
            return False
        if change.vector is None:
            self._without_vector.add(chunk_id)
            return False
        self.dimension = self.dimension or len(change.vector)
        if change.vector.shape != (self.dimension,):
            # Chroma refuses such a vector too; until it is replaced, Chroma answers.
            log.warning("chunk %s: vector of shape %s left out", chunk_id, change.vector.shape)
            self._without_vector.add(chunk_id)
            return False
        return True

    def _add(self, upserts: list[VectorChange], threads: int) -> None:
        vectors = _unit(np.stack([np.asarray(change.vector, dtype=np.float32) for change in upserts]))
        index = self._index or self._create()
        live, slots = len(self._label_of), index.get_max_elements()
        # Deleted points' slots are reused first; grow only when live points would not fit.
        if live + len(upserts) > slots:
            index.resize_index(max(2 * slots, live + len(upserts)))
        labels = np.arange(self._next_label, self._next_label + len(upserts))
        self._next_label += len(upserts)
        index.add_items(vectors, labels, num_threads=threads, replace_deleted=True)
        for change, label in zip(upserts, labels, strict=True):
            self._label_of[change.chunk_id] = int(label)
            self._id_of[int(label)] = change.chunk_id

    def _create(self) -> hnswlib.Index:
        index = hnswlib.Index(space="ip", dim=self.dimension)  # unit vectors: 1 - ip = cosine distance
        index.init_index(
            max_elements=self._capacity, ef_construction=_EF_CONSTRUCTION, M=_M, allow_replace_deleted=True
        )
        self._index = index
        return index


def _unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, so that inner products are cosines as in Chroma's cosine space:
    an embedding normalised in bf16 and widened to float32 is up to ~0.5% off length 1."""
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class _SearchesFirst:
    """The index's lock (hnswlib inserts and searches must not overlap), where a waiting search
    goes before the writer's next slice.

    With a plain lock the writer, releasing it and at once taking it again for its next slice,
    wins every time against a search thread that is still waking up: the search would wait for
    the whole batch of changes instead of one slice.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = threading.Condition()
        self._searches_waiting = 0

    @contextmanager
    def searching(self) -> Iterator[None]:
        with self._state:
            self._searches_waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._state:
                self._searches_waiting -= 1
                self._state.notify_all()
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._state:
            self._state.wait_for(lambda: self._searches_waiting == 0)
        with self._lock:
            yield
