"""Publishing document events: idempotent, fully acknowledged, keyed by document."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from schemas import DocumentEvent
from schemas.kafka_connection import KafkaConnection
from streams.errors import broker_calls
from streams.kafka_clients import client_options

#: Events per batch of ``publish_in_batches``: the producer holds one batch and its
#: acknowledgements at a time, however long the list.
PUBLISH_BATCH = 500


@dataclass(frozen=True, slots=True)
class PublishReceipt:
    doc_id: str
    topic: str
    partition: int
    offset: int


class EventPublisher:
    """Sends ``DocumentEvent``s to the events topic.

    ``acks=all`` plus the idempotent producer means an acknowledged event is on every in-sync
    replica exactly once, retries included; key = ``doc_id`` keeps a document's events in order.
    Kafka failures are raised as ``streams.errors.StreamsError`` (a ``KafkaError``): retriable
    ``BrokerUnavailable``, ``RecordRejected`` for an event too large, else ``BrokerRefused``.
    """

    def __init__(self, kafka: KafkaConnection, topic: str, max_event_bytes: int = 11 * 1024 * 1024) -> None:
        self.topic = topic
        self._producer = AIOKafkaProducer(
            **client_options(kafka),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=max_event_bytes,
        )
        self._started = False

    async def start(self) -> None:
        if not self._started:
            with broker_calls(f"connecting the publisher to {self.topic}"):
                await self._producer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, event: DocumentEvent) -> PublishReceipt:
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Iterable[DocumentEvent]) -> list[PublishReceipt]:
        """Send all events (batched by the producer), then wait for every acknowledgement."""
        return await self.publish_raw((event.doc_id, event.to_json()) for event in events)

    async def publish_in_batches(
        self,
        events: Sequence[DocumentEvent],
        batch_size: int = PUBLISH_BATCH,
        on_batch: Callable[[Sequence[DocumentEvent]], object] | None = None,
    ) -> None:
        """Publish ``events`` in order, ``batch_size`` at a time, each batch acknowledged before the
        next is sent, so that a corpus of any size never waits in the producer all at once.
        ``on_batch`` is called with every batch once it is acknowledged (a progress bar's step)."""
        for start in range(0, len(events), batch_size):
            batch = events[start : start + batch_size]
            await self.publish_many(batch)
            if on_batch is not None:
                on_batch(batch)

    async def publish_raw(self, items: Iterable[tuple[str, bytes]]) -> list[PublishReceipt]:
        """Send pre-encoded values keyed by doc id (also how tests publish malformed input)."""
        sent = []
        with broker_calls(f"publishing to {self.topic}"):
            for doc_id, value in items:
                delivery = await self._producer.send(self.topic, value=value, key=doc_id.encode())
                sent.append((doc_id, delivery))
            metadata = await asyncio.gather(*(delivery for _, delivery in sent))
        return [
            PublishReceipt(doc_id, meta.topic, meta.partition, meta.offset)
            for (doc_id, _), meta in zip(sent, metadata, strict=True)
        ]

    async def send(self, topic: str, key: bytes, value: bytes) -> RecordMetadata:
        """Send one pre-encoded record to any topic through the same producer (the API's
        feedback), and wait for its acknowledgement."""
        with broker_calls(f"publishing to {topic}"):
            delivery = await self._producer.send(topic, value=value, key=key)
            return await delivery
