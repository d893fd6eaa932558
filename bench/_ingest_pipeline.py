"""One pipeline round of the ingest bench: ragstream as ``make up`` runs it, on the round's services.

The changes stage (unless the consumers read the events) and the consumer actors on a local Ray
start for the round, and go again at its end, Ray too: the baseline of the next round runs on a
machine with none of it. Two timed passes, each from its first publish until every hop's
committed offsets reach the end offsets: the whole corpus, then the edited documents.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Literal

import ray

from consumers.actors import ConsumerGroup
from deploy.drain import wait_drained
from deploy.private_stack import PrivateStack
from ragstream.stack import LocalStack
from schemas import DocumentEvent, EventOp, Settings
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

#: Published and drained before the clock starts: the stage's workers join their group, the
#: consumers theirs, and the first encode pays for lazy initialisation (the other paths warm up too).
WARM_UP_EVENT = DocumentEvent(
    doc_id="bench/warm-up",
    op=EventOp.UPSERT,
    content="A short document that is published first, so that every hop is running when the clock starts.",
    source="bench",
    version=1,
)
POLL_INTERVAL_S = 0.25  # polling costs the broker CPU too
#: Far longer than any corpus the bench is run with takes; a pipeline that stalls fails the round.
DRAIN_TIMEOUT_S = 3600


@dataclass(frozen=True)
class PipelineRound:
    load_s: float
    edit_s: float
    chunks_embedded: int
    edit_chunks_embedded: int


async def publish_and_drain(settings: Settings, events: list[DocumentEvent]) -> float:
    """Seconds from the first publish until every hop has committed every event."""
    started = time.perf_counter()
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        await publisher.publish_in_batches(events)
    await wait_drained(settings, timeout=DRAIN_TIMEOUT_S, poll_s=POLL_INTERVAL_S)
    return time.perf_counter() - started


def embedded(group: ConsumerGroup) -> int:
    return sum(int(stats["chunks_embedded"]) for stats in group.stats())


def run_pipeline_round(
    services: PrivateStack,
    events: list[DocumentEvent],
    edits: list[DocumentEvent],
    *,
    consumers: int,
    topology: Literal["changes", "events"],
    precision: Literal["bf16", "fp32"],
    batch_size: int,
) -> PipelineRound:
    settings = Settings(
        bootstrap_servers=services.settings.bootstrap_servers,
        chroma_port=services.settings.chroma_port,
        collection="ingest",
        precision=precision,
        embed_batch_size=batch_size,
        consumers=consumers,
        consumer_input=topology,
        state_dir=services.state,
    )
    group = ConsumerGroup(settings, consumers)
    stage = LocalStack(settings).stage_process()
    try:
        asyncio.run(ensure_topics(settings))
        if topology == "changes":
            stage.start()
        group.start()
        group.wait_ready()
        asyncio.run(publish_and_drain(settings, [WARM_UP_EVENT]))
        before = embedded(group)
        load_s = asyncio.run(publish_and_drain(settings, events))
        loaded = embedded(group)
        edit_s = asyncio.run(publish_and_drain(settings, edits))
        group.check()  # a consumer that failed on its own would otherwise read as a fast one
        return PipelineRound(load_s, edit_s, loaded - before, embedded(group) - loaded)
    finally:
        group.stop()
        stage.stop()
        ray.shutdown()


def describe(round_: PipelineRound, chunks: int) -> dict[str, Any]:
    """The round's figures, named as the other paths name theirs."""
    return {
        "chunks": chunks,
        "seconds": round_.load_s,
        "chunks_per_s": chunks / round_.load_s,
        "chunks_embedded": round_.chunks_embedded,
        "edit": {"seconds": round_.edit_s, "chunks_embedded": round_.edit_chunks_embedded},
        "versions": {name: version(name) for name in ("torch", "sentence-transformers", "transformers")},
    }
