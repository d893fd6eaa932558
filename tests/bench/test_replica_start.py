"""bench/replica_start.py at a tiny size: real text, and a replica from a snapshot holds what a
replica that replayed the log holds."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from bench.replica_start import chunk_vectors, real_chunks, start_replica, write_chunk_log


def test_the_chunks_are_real_text_with_ids_of_their_own_past_the_corpus() -> None:
    chunks, sources = real_chunks(300, chunk_size=64)
    assert len(chunks) == 300 and sources == {"wikipedia": 300, "man pages": 0, "copies": 0}
    assert len({c.id for c in chunks}) == 300 and all(0 < len(c.text) <= 64 for c in chunks)


@pytest.mark.integration
def test_a_replica_from_a_snapshot_is_ready_with_every_chunk(kafka_broker: Any, tmp_path: Path) -> None:
    chunks, _ = real_chunks(400, chunk_size=64)
    vectors = chunk_vectors(chunks, real=40, console=Console(quiet=True))
    assert vectors.shape == (400, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    topic = f"replica-start-{uuid.uuid4().hex[:8]}.chunks"
    asyncio.run(write_chunk_log(kafka_broker.bootstrap_servers, topic, chunks, vectors))

    replayed = start_replica(kafka_broker.bootstrap_servers, topic, tmp_path, write_snapshot=True)
    restored = start_replica(kafka_broker.bootstrap_servers, topic, tmp_path, write_snapshot=False)

    assert not replayed["from_snapshot"] and restored["from_snapshot"]
    assert replayed["chunks"] == restored["chunks"] == len({c.id for c in chunks})
    assert replayed["snapshot_bytes"] > 0 and replayed["searches_during"]["searches"] > 0
    assert restored["peak_rss"] >= restored["steady_rss"] > restored["baseline_rss"] > 0
    # The replayed replica's own, taken as it caught up, and the one asked of it, unless they
    # were one; the replica that started from a snapshot adds none.
    assert 1 <= len(list((tmp_path / topic).iterdir())) <= 2
