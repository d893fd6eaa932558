"""A private Kafka broker and Chroma server for one bench run, on free ports, gone afterwards."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy import ChromaServer, KafkaBroker, ensure_kafka_jars, free_port


@dataclass(frozen=True)
class BenchServices:
    state: Path
    broker: KafkaBroker
    chroma: ChromaServer


@contextmanager
def private_services(prefix: str) -> Iterator[BenchServices]:
    """Start both in a temporary state folder; stop Chroma, then the broker, on the way out."""
    with tempfile.TemporaryDirectory(prefix=f"ragstream-{prefix}-") as state:
        ensure_kafka_jars()
        broker, chroma = KafkaBroker(Path(state), free_port()), ChromaServer(Path(state), free_port())
        broker.start()
        try:
            chroma.start()
            try:
                yield BenchServices(Path(state), broker, chroma)
            finally:
                chroma.stop()
        finally:
            broker.stop()
