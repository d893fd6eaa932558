"""The record format of the chunk log, ``docs.chunks``: the contract between the consumers, which
write it, and every API replica, which replays and follows it.

Key = chunk id; value = the chunk as indexed (JSON), or a tombstone when it is deleted; header
``embedding.f32`` = its vector (little-endian float32, the one Chroma holds). The vector is a
header, not a JSON field, so that the BM25 index, which stores each record, neither parses nor
keeps it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

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
