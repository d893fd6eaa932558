"""Settings of one fault scenario: its own topics, group and collection."""

from __future__ import annotations

import uuid

from schemas import Settings


def fault_settings(namespace: str, bootstrap_servers: str, chroma_port: int, **overrides) -> Settings:
    """Settings named by ``namespace`` (the test module's) and a random suffix: each scenario
    compares a whole collection with its oracle, so no two scenarios may share one."""
    values = dict(
        bootstrap_servers=bootstrap_servers,
        chroma_port=chroma_port,
        partitions=6,
        chunk_size=300,
        chunk_overlap=0,
        fetch_max_records=64,
        consumer_num_cpus=0.5,
        torch_threads=1,
        # The consumers on their own; the stage's scenarios switch this to "changes".
        consumer_input="events",
    )
    values.update(overrides)
    return Settings(**values).namespaced(f"{namespace}-{uuid.uuid4().hex[:6]}")
