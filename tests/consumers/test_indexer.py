"""The diffing rules of the indexer, against an in-memory sink that honours the sink contract."""

from typing import Any

import numpy as np
import pytest

from consumers.indexer import DocumentIndexer
from consumers.sink import ChunkChanges
from engines.chunking import Chunker
from schemas import DocumentEvent, EventOp


class CountingEncoder:
    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.encoded.extend(texts)
        return np.ones((len(texts), 4), dtype=np.float32)


class MemorySink:
    def __init__(self) -> None:
        self.chunks: dict[str, dict[str, Any]] = {}

    async def existing_chunks(self, doc_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for chunk_id, chunk in self.chunks.items():
            if chunk["metadata"]["doc_id"] in doc_ids:
                found.setdefault(chunk["metadata"]["doc_id"], {})[chunk_id] = dict(chunk["metadata"])
        return found

    async def embeddings(self, chunk_ids: list[str]) -> np.ndarray:
        return np.stack([self.chunks[chunk_id]["vector"] for chunk_id in chunk_ids])

    async def write(self, changes: ChunkChanges) -> None:
        assert changes.new_embeddings is not None or not changes.new_ids
        for i, chunk_id in enumerate(changes.new_ids):
            self.chunks[chunk_id] = {
                "text": changes.new_texts[i],
                "metadata": dict(changes.new_metadatas[i]),
                "vector": changes.new_embeddings[i],
            }
        for chunk_id, metadata in zip(changes.updated_ids, changes.updated_metadatas, strict=True):
            merged = {**self.chunks[chunk_id]["metadata"], **metadata}
            self.chunks[chunk_id]["metadata"] = {k: v for k, v in merged.items() if v is not None}
        for chunk_id in changes.deleted_ids:
            del self.chunks[chunk_id]

    def texts_of(self, doc_id: str) -> list[str]:
        return [
            c["text"]
            for c in sorted(self.chunks.values(), key=lambda c: c["metadata"]["chunk_index"])
            if c["metadata"]["doc_id"] == doc_id
        ]


@pytest.fixture
def encoder() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def indexer(encoder, sink) -> DocumentIndexer:
    return DocumentIndexer(Chunker(100, 0), encoder, sink, clock=lambda: 1000.0)


def upsert(doc_id: str, text: str, version: int, **metadata) -> DocumentEvent:
    return DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content=text, version=version, metadata=metadata)


def words(n: int, tag: str = "w") -> str:
    return "\n\n".join(f"{tag}{i} alpha beta gamma delta epsilon zeta eta theta iota kappa" for i in range(n))


async def test_replaying_an_event_embeds_and_writes_nothing(indexer, encoder, sink):
    event = upsert("d", words(5), 1)
    await indexer.apply([event])
    snapshot = {k: dict(v) for k, v in sink.chunks.items()}
    result = await indexer.apply([event])
    assert result.chunks_embedded == 0 and result.chunks_skipped == 5
    assert len(encoder.encoded) == 5 and sink.chunks == snapshot


async def test_shrinking_a_document_deletes_its_stale_chunks(indexer, sink):
    await indexer.apply([upsert("d", words(10), 1)])
    result = await indexer.apply([upsert("d", words(4), 2)])
    assert result.chunks_deleted == 6 and len(sink.texts_of("d")) == 4
    assert {c["metadata"]["version"] for c in sink.chunks.values()} == {2}


async def test_a_new_version_updates_metadata_without_embedding(indexer, encoder, sink):
    await indexer.apply([upsert("d", words(3), 1, team="a", old="x")])
    await indexer.apply([upsert("d", words(3), 2, team="b")])
    assert len(encoder.encoded) == 3
    metadatas = [c["metadata"] for c in sink.chunks.values()]
    assert all(m["team"] == "b" and m["version"] == 2 and "old" not in m for m in metadatas)


async def test_delete_removes_every_chunk_of_the_document(indexer, sink):
    await indexer.apply([upsert("d", words(3), 1), upsert("other", words(2, "o"), 1)])
    await indexer.apply([DocumentEvent(doc_id="d", op=EventOp.DELETE, version=2)])
    assert sink.texts_of("d") == [] and len(sink.texts_of("other")) == 2


async def test_only_the_last_event_of_a_document_in_a_batch_is_embedded(indexer, encoder, sink):
    result = await indexer.apply([upsert("d", words(3, "a"), 1), upsert("d", words(2, "b"), 2)])
    assert encoder.encoded == sink.texts_of("d") and len(encoder.encoded) == 2
    assert result.events_superseded == 1


async def test_an_older_version_than_the_indexed_one_is_ignored(indexer, sink):
    await indexer.apply([upsert("d", words(3, "new"), 5)])
    result = await indexer.apply([upsert("d", words(3, "old"), 4)])
    assert result.events_superseded == 1 and sink.texts_of("d")[0].startswith("new0")


async def test_deleting_an_unknown_document_is_a_no_op(indexer, sink):
    result = await indexer.apply([DocumentEvent(doc_id="ghost", op=EventOp.DELETE)])
    assert result.chunks_deleted == 0 and sink.chunks == {}


async def test_a_tenants_document_carries_its_tenant_on_every_chunk(indexer, sink):
    event = DocumentEvent(doc_id="acme/notes", op=EventOp.UPSERT, content=words(3), version=1, tenant="acme")
    await indexer.apply([event])
    assert [c["metadata"]["tenant"] for c in sink.chunks.values()] == ["acme"] * 3


async def test_a_document_without_tenant_has_no_tenant_metadata(indexer, sink):
    await indexer.apply([upsert("notes", words(2), 1)])
    assert all("tenant" not in c["metadata"] for c in sink.chunks.values())
