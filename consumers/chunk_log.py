"""The chunk log: every chunk change the consumers make, on a compacted Kafka topic.

Key = chunk id; value = the chunk as indexed (JSON), or a tombstone when it is deleted. Views of
the index other than Chroma (the lexical index of each API replica) replay it on start and then
follow it, so they stay as fresh as Chroma and survive restarts.

The log is written *before* Chroma: a crash in between makes the replay recompute and resend
the same records (harmless: the log is keyed), whereas the other order could leave chunks in
Chroma that a replay sees as unchanged and never sends.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from consumers.sink import ChunkChanges


def chunk_record(chunk_id: str, text: str, metadata: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": chunk_id, "doc_id": metadata["doc_id"], "text": text, "metadata": metadata})


async def publish_chunk_changes(producer: AIOKafkaProducer, topic: str, changes: ChunkChanges) -> None:
    """Send every upsert and tombstone of a batch, and wait until all are acknowledged."""
    pending = []
    upserts = zip(
        [*changes.new_ids, *changes.updated_ids],
        [*changes.new_texts, *changes.updated_texts],
        [*changes.new_metadatas, *changes.updated_metadatas],
        strict=True,
    )
    for chunk_id, text, metadata in upserts:
        live = {k: v for k, v in metadata.items() if v is not None}
        pending.append(
            await producer.send(topic, key=chunk_id.encode(), value=chunk_record(chunk_id, text, live))
        )
    for chunk_id in changes.deleted_ids:
        pending.append(await producer.send(topic, key=chunk_id.encode(), value=None))
    for delivery in pending:
        await delivery
