"""The chunk log: every chunk change the consumers make, on a compacted Kafka topic.

Key = chunk id; value = the chunk as indexed (JSON), or a tombstone when it is deleted; header
``embedding.f32`` = its vector (little-endian float32, the one Chroma holds). Views of the index
other than Chroma (the BM25 and vector indexes of each API replica) replay it on start and then
follow it, so they stay as fresh as Chroma and survive restarts. The vector is a header, not a
JSON field, so that the BM25 index, which stores each record, neither parses nor keeps it.

The log is written *before* Chroma: a crash in between makes the replay recompute and resend
the same records (harmless: the log is keyed), whereas the other order could leave chunks in
Chroma that a replay sees as unchanged and never sends.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from consumers.sink import ChunkChanges

#: The record header that carries a chunk's embedding.
EMBEDDING_HEADER = "embedding.f32"


def chunk_record(chunk_id: str, text: str, metadata: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": chunk_id, "doc_id": metadata["doc_id"], "text": text, "metadata": metadata})


def embedding_header(vector: np.ndarray) -> tuple[str, bytes]:
    return EMBEDDING_HEADER, np.asarray(vector, dtype="<f4").tobytes()


def embedding_of(headers: Any) -> np.ndarray | None:
    """The vector in a chunk record's headers (aiokafka's sequence of (key, bytes)), if any."""
    for key, value in headers or ():
        if key == EMBEDDING_HEADER and value:
            return np.frombuffer(value, dtype="<f4")
    return None


async def publish_chunk_changes(producer: AIOKafkaProducer, topic: str, changes: ChunkChanges) -> None:
    """Send every upsert and tombstone of a batch, and wait until all are acknowledged.

    An upsert without a vector (``ChunkChanges`` lacking the embeddings) is logged without one:
    the API replicas then answer vector searches from Chroma instead of their own index.
    """
    pending = []
    new_vectors = (
        changes.new_embeddings if changes.new_embeddings is not None else [None] * len(changes.new_ids)
    )
    updated_vectors = (
        changes.updated_embeddings
        if changes.updated_embeddings is not None
        else [None] * len(changes.updated_ids)
    )
    upserts = zip(
        [*changes.new_ids, *changes.updated_ids],
        [*changes.new_texts, *changes.updated_texts],
        [*changes.new_metadatas, *changes.updated_metadatas],
        [*new_vectors, *updated_vectors],
        strict=True,
    )
    for chunk_id, text, metadata, vector in upserts:
        live = {k: v for k, v in metadata.items() if v is not None}
        headers = [embedding_header(vector)] if vector is not None else None
        pending.append(
            await producer.send(
                topic, key=chunk_id.encode(), value=chunk_record(chunk_id, text, live), headers=headers
            )
        )
    for chunk_id in changes.deleted_ids:
        pending.append(await producer.send(topic, key=chunk_id.encode(), value=None))
    for delivery in pending:
        await delivery
