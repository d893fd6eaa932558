"""Indexes to evaluate, each built by the real pipeline: events → Ray consumers → Chroma + chunk log.

The corpus is published once to one events topic; every index (one per chunk size) is its own
consumer group reading that topic from the start, with its own chunks topic (which feeds the
BM25 index) and its own Chroma collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

from schemas import DocumentEvent, Settings

__all__ = ["EvalIndexes", "evaluation_services"]


@contextlib.contextmanager
def evaluation_services(base: Settings, own: bool) -> Iterator[Settings]:
    """``base``; with ``own``, the same settings pointing at a Kafka broker and a Chroma server of
    the run's own, on free ports, for as long as the block runs."""
    if not own:
        yield base
        return
    from deploy.private_stack import private_stack

    with private_stack("eval", base) as stack:
        yield stack.settings


class EvalIndexes:
    """The indexes of one evaluation run, named ``eval-<run_id>-…`` so that runs never mix."""

    def __init__(
        self,
        base: Settings,
        run_id: str,
        consumers: int = 1,
        timeout_s: float = 3600,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.run_id = run_id
        self.consumers = consumers
        self.timeout_s = timeout_s
        self._say = say
        # The run's own topics (eval-<run_id>.events, .dlq, .stats, ...); each chunk size's index
        # reads its events into a collection, chunks topic and group of its own (settings_for).
        self._base = base.namespaced(f"eval-{run_id}").model_copy(
            update={
                "consumer_input": "events",
                # In memory: an index directory from the environment would be shared between runs.
                "lexical_index_dir": None,
                "rerank": False,
            }
        )
        self.events_topic = self._base.events_topic
        self.ingest_seconds: dict[int, float] = {}

    async def publish(self, events: list[DocumentEvent]) -> None:
        from streams.publisher import EventPublisher
        from streams.topics import ensure_topics

        await ensure_topics(self._base)
        async with EventPublisher(self._base.kafka, self.events_topic) as publisher:
            await publisher.publish_in_batches(events)
        self._say(f"published {len(events)} documents to {self.events_topic}")

    def settings_for(self, chunk_size: int) -> Settings:
        name = f"eval-{self.run_id}-c{chunk_size}"
        return self._base.model_copy(
            update={
                "chunk_size": chunk_size,
                "chunk_overlap": min(self._base.chunk_overlap, chunk_size // 3),
                "collection": name,
                "chunks_topic": f"{name}.chunks",
                "consumer_group": f"{name}-indexer",
            }
        )

    def build(self, chunk_size: int) -> Settings:
        """Index the published corpus with this chunk size; returns the settings that query it."""
        from consumers.actors import ConsumerGroup
        from deploy.drain import wait_drained
        from streams.topics import ensure_topics

        settings = self.settings_for(chunk_size)
        asyncio.run(ensure_topics(settings))
        group = ConsumerGroup(settings, self.consumers)
        started = time.perf_counter()
        try:
            group.start()
            group.wait_ready()
            asyncio.run(wait_drained(settings, timeout=self.timeout_s, check=group.check))
        finally:
            group.stop()
        self.ingest_seconds[chunk_size] = time.perf_counter() - started
        self._say(f"indexed with chunk size {chunk_size} in {self.ingest_seconds[chunk_size]:.0f} s")
        return settings
