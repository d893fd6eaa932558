"""The topics ragstream uses, created idempotently."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas import Settings
from streams.kafka_clients import client_options

log = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    # A whole document in its event must fit; the broker's default limit is 1 MB.
    max_bytes = str(settings.max_record_bytes)
    return [
        TopicSpec(settings.events_topic, settings.partitions, {"max.message.bytes": max_bytes}),
        TopicSpec(settings.dlq_topic, 1, {"max.message.bytes": max_bytes}),
        # Every chunk as indexed (key = chunk id, tombstone on delete): the source that
        # views of the index besides Chroma, such as the lexical index, are rebuilt from.
        TopicSpec(
            settings.chunks_topic,
            settings.partitions,
            {"cleanup.policy": "compact", "max.message.bytes": max_bytes},
        ),
        # The changes stage's output (key = doc_id): the replayable source of truth. A deleted
        # document's delete event and tombstone are kept a day before compaction may drop them,
        # so a consumer up to a day behind still sees the delete.
        TopicSpec(
            settings.changes_topic,
            settings.partitions,
            {
                "cleanup.policy": "compact",
                "max.message.bytes": max_bytes,
                "min.compaction.lag.ms": str(DAY_MS),
                "delete.retention.ms": str(DAY_MS),
            },
        ),
        # One message per consumer incarnation, the latest one is all that matters.
        TopicSpec(settings.stats_topic, 1, {"cleanup.policy": "compact"}),
        # Index generations and which one is active (schemas.generations): every record per key
        # matters only in its latest version, and one partition keeps them in one order. Replicas'
        # heartbeats arrive every 2 s, and only closed segments are compacted: 10-minute segments
        # keep what a follower replays at start small.
        TopicSpec(
            settings.control_topic,
            1,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(10 * 60 * 1000),
                "min.cleanable.dirty.ratio": "0.1",
            },
        ),
        # Ratings of results and answers (key = hash of tenant and query). Every record is a case
        # the evaluation may grow by, so none expires and none is compacted away.
        TopicSpec(settings.feedback_topic, settings.partitions, {"retention.ms": "-1"}),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every missing topic; returns the names it created."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if not missing:
            return []
        # With acks=all, a write is acknowledged once min.insync.replicas replicas have it.
        durability = {"min.insync.replicas": str(settings.min_insync_replicas)}
        new_topics = [
            NewTopic(
                spec.name,
                spec.partitions,
                settings.replication_factor,
                topic_configs={**durability, **spec.config},
            )
            for spec in missing
        ]
        # Created concurrently by another process: that is the state we want.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new_topics)
        log.info("created topics %s", [spec.name for spec in missing])
        return [spec.name for spec in missing]
    finally:
        await admin.close()
