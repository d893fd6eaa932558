"""All configuration in one frozen object, read from ``RAGSTREAM_*`` environment variables.

Built once in each entry point and passed down; nothing reads the environment at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAGSTREAM_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    events_topic: str = "docs.events"
    dlq_topic: str = "docs.dlq"
    stats_topic: str = "ragstream.stats"
    chunks_topic: str = "docs.chunks"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    consumer_group: str = "ragstream-indexer"

    # Chroma
    chroma_host: str = "127.0.0.1"
    chroma_port: int = 8000
    collection: str = "ragstream"

    # Embedding
    model: str = "all-MiniLM-L6-v2"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    embed_batch_size: int = Field(default=32, ge=1)
    torch_threads: int = Field(default=0, ge=0, description="0 = cores shared among the consumers")

    # Chunking
    chunk_size: int = Field(default=1000, ge=50, description="characters per chunk")
    chunk_overlap: int = Field(default=100, ge=0)

    # Consumers
    consumers: int = Field(default=1, ge=1)
    fetch_max_records: int = Field(default=256, ge=1)
    fetch_timeout_ms: int = Field(default=200, ge=1)
    max_document_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_queued_batches: int = Field(default=2, ge=1, description="fetched batches waiting to be indexed")
    max_queued_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="bytes of events waiting")

    # Query API
    api_host: str = "127.0.0.1"
    api_port: int = 8080

    # Local stack
    state_dir: Path = Path(".state")

    @property
    def chroma_url(self) -> str:
        return f"http://{self.chroma_host}:{self.chroma_port}"
