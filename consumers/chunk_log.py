"""The chunk log: every chunk change the consumers make, on a compacted Kafka topic.

The record format is schemas.chunk_log's. Views of the index other than Chroma (the BM25 and
vector indexes of each API replica) replay the log on start and then follow it, so they stay as
fresh as Chroma and survive restarts.

The log is written *before* Chroma: a crash in between makes the replay recompute and resend
the same records (harmless: the log is keyed), whereas the other order could leave chunks in
Chroma that a replay sees as unchanged and never sends.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from consumers.errors import kafka_calls
from consumers.sink import ChunkChanges
from schemas.chunk_log import chunk_record, embedding_header


async def publish_chunk_changes(producer: AIOKafkaProducer, topic: str, changes: ChunkChanges) -> None:
    """Send every upsert and tombstone of a batch, and wait until all are acknowledged; a Kafka
    failure is raised as an ``IndexingError``.

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
    with kafka_calls(f"writing the chunk log {topic}"):
        for chunk_id, text, metadata, vector in upserts:
            live = {k: v for k, v in metadata.items() if v is not None}
            headers = [embedding_header(vector)] if vector is not None else None
            value = chunk_record(chunk_id, text, live)
            pending.append(await producer.send(topic, key=chunk_id.encode(), value=value, headers=headers))
        for chunk_id in changes.deleted_ids:
            pending.append(await producer.send(topic, key=chunk_id.encode(), value=None))
        for delivery in pending:
            await delivery
