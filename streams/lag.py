"""Consumer-group lag per partition: the log end offset minus the group's committed offset.

``LagReader`` keeps one admin client (committed offsets, topic metadata) and one group-less
consumer (end offsets) open, so that a metrics scrape costs a few requests and no handshakes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, KafkaTimeoutError

from schemas.kafka_connection import KafkaConnection
from streams.kafka_clients import client_options

__all__ = ["LagReader", "PartitionLag", "partition_lag"]


@dataclass(frozen=True)
class PartitionLag:
    """Lag of one consumer group on one partition; ``committed`` is None before its first commit."""

    topic: str
    partition: int
    committed: int | None
    end_offset: int
    lag: int


class LagReader:
    """Reads a consumer group's lag; ``start()``/``stop()`` are idempotent, and it is an async context.

    ``start()`` raises a ``KafkaError`` when no broker answers and may simply be called again later.
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        *,
        request_timeout_ms: int = 10_000,
        retry_timeout_s: float = 10.0,
        client_id: str = "ragstream-lag",
    ) -> None:
        self._kafka = kafka
        self._request_timeout_ms = request_timeout_ms
        self._retry_timeout_s = retry_timeout_s
        self._client_id = client_id
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._start_lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._admin is not None

    async def start(self) -> None:
        async with self._start_lock:
            if self._admin is not None:
                return
            admin = AIOKafkaAdminClient(
                **client_options(self._kafka),
                client_id=self._client_id,
                request_timeout_ms=self._request_timeout_ms,
            )
            consumer = AIOKafkaConsumer(
                **client_options(self._kafka),
                client_id=self._client_id,
                group_id=None,
                enable_auto_commit=False,
                request_timeout_ms=self._request_timeout_ms,
            )
            try:
                await admin.start()
                await consumer.start()
                # Let the group-less consumer's helper task begin: aiokafka's stop() re-raises that
                # task's cancellation when it is stopped before the task ever ran.
                await asyncio.sleep(0)
            except BaseException:
                # Each attempt builds fresh clients, so a failed start leaves nothing half-open.
                await consumer.stop()
                await admin.close()
                raise
            self._admin, self._consumer = admin, consumer

    async def stop(self) -> None:
        async with self._start_lock:
            admin, consumer = self._admin, self._consumer
            self._admin = self._consumer = None
            if consumer is not None:
                await consumer.stop()
            if admin is not None:
                await admin.close()

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def ping(self) -> None:
        """Send one metadata request; raises when the cluster does not answer."""
        await self._started_admin().list_topics()

    async def read(self, topic: str, group: str) -> list[PartitionLag]:
        """Lag of ``group`` on each partition of ``topic``, in partition order; [] without the topic."""
        admin = self._started_admin()
        partitions = await self._partitions(admin, topic)
        ends = await self._end_offsets(admin, partitions)
        if ends is None:
            return []
        committed = await self._committed(admin, group, partitions)
        lags = []
        for tp in partitions:
            end = ends[tp]
            offset = committed[tp]
            lag = end - offset if offset is not None else end
            lags.append(PartitionLag(tp.topic, tp.partition, offset, end, max(lag, 0)))
        return lags

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition of ``topic``, the offset the next record will get; {} without the topic."""
        admin = self._started_admin()
        ends = await self._end_offsets(admin, await self._partitions(admin, topic))
        if ends is None:
            return {}
        return {tp.partition: int(end) for tp, end in ends.items()}

    async def resume_offset(self, topic: str, group: str, partition: int) -> int:
        """Where ``group`` resumes reading the partition: its committed offset, else (never
        committed, consumers reading from the earliest) the first offset the log still holds."""
        admin, consumer = self._started_admin(), self._consumer
        assert consumer is not None
        tp = TopicPartition(topic, partition)
        committed = (await self._committed(admin, group, [tp]))[tp]
        if committed is not None:
            return committed
        return int((await consumer.beginning_offsets([tp]))[tp])

    async def _committed(
        self, admin: AIOKafkaAdminClient, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offset of each partition; None where it never committed."""
        answer = await self._retrying(lambda: admin.list_consumer_group_offsets(group, partitions=partitions))
        committed: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            meta = answer.get(tp)
            # The broker answers -1 for a partition the group never committed.
            committed[tp] = int(meta.offset) if meta is not None and meta.offset >= 0 else None
        return committed

    async def _end_offsets(
        self, admin: AIOKafkaAdminClient, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int] | None:
        """The partitions' end offsets; None when the topic does not exist (any more)."""
        consumer = self._consumer
        assert consumer is not None
        if not partitions:
            return None
        try:
            return dict(await consumer.end_offsets(partitions))
        except KafkaTimeoutError:
            # A topic deleted after its metadata was read (an aborted or dropped index generation)
            # makes the consumer wait for metadata that never comes, until its timeout.
            if await self._partitions(admin, partitions[0].topic):
                raise
            return None

    def _started_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise RuntimeError("LagReader is not started")
        return self._admin

    async def _partitions(self, admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
        return await topic_partitions(admin, topic)

    async def _retrying(self, request: Any) -> Any:
        """Run ``request()`` again on retriable errors, such as the coordinator still loading."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_timeout_s
        while True:
            try:
                return await request()
            except KafkaError as exc:
                if not exc.retriable or loop.time() >= deadline:
                    raise
            await asyncio.sleep(0.2)


async def partition_lag(kafka: KafkaConnection, topic: str, group: str) -> list[PartitionLag]:
    """One-shot lag read with short-lived connections; see ``LagReader`` to keep them open."""
    async with LagReader(kafka) as reader:
        return await reader.read(topic, group)


async def topic_partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    """The topic's partitions, or [] if it does not exist."""
    # Describing all topics, not just this one: a metadata request that names a topic asks the
    # broker to create it when auto-creation is on, and reading must never create topics.
    described: list[dict[str, Any]] = await admin.describe_topics()
    for entry in described:
        if entry["topic"] == topic and entry["error_code"] == 0:
            return [
                TopicPartition(topic, p["partition"])
                for p in sorted(entry["partitions"], key=lambda p: p["partition"])
            ]
    return []
