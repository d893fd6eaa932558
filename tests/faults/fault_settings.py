"""Settings of one fault scenario: its own topics, group and collection."""

from __future__ import annotations

import uuid

from schemas import Settings


def fault_settings(bootstrap_servers: str, chroma_port: int, **overrides) -> Settings:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    values = dict(
        bootstrap_servers=bootstrap_servers,
        chroma_port=chroma_port,
        events_topic=f"{name}.events",
        dlq_topic=f"{name}.dlq",
        stats_topic=f"{name}.stats",
        chunks_topic=f"{name}.chunks",
        consumer_group=name,
        collection=name,
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
    return Settings(**values)
