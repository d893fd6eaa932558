"""The control topic: reading what it says, following it, and writing to it.

``read_control_state`` reads it once (the CLI); ``ControlFollower`` replays it and then follows it
(the consumers' process and every API replica), waking its waiters on each change. Records are
small and few (one per generation, one ``active``, one heartbeat per API replica), so both simply
fold every record of the one partition into a ``ControlState``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import Settings
from schemas.generations import ControlState
from streams.background import BackgroundLoop
from streams.kafka_clients import client_options
from streams.topic_records import read_topic_records

__all__ = ["ControlFollower", "publish_control", "read_control_state"]

log = logging.getLogger(__name__)


async def read_control_state(settings: Settings) -> ControlState:
    """What the control topic says now (an absent topic: generation 0 active, nothing else)."""
    state = ControlState()
    for record in await read_topic_records(settings.kafka, settings.control_topic):
        state.apply(record.key, record.value)
    return state


async def publish_control(settings: Settings, records: list[tuple[bytes, bytes | None]]) -> None:
    """Write ``(key, value)`` records in order, acknowledged by every in-sync replica
    (a value of None is a tombstone). One partition, so every reader sees them in this order."""
    producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.control_topic, value, key=key, partition=0)
    finally:
        await producer.stop()


class ControlFollower(BackgroundLoop):
    """Keeps ``state`` equal to the control topic: replayed on ``start()``, then followed.

    ``start()`` returns once the topic is read to its end (or, with Kafka unreachable, after
    ``start_timeout_s``, with the state so far: generation 0 active). ``wait_changed()`` returns
    after the next record. Kafka errors are retried in the background; ``async with`` starts and stops.
    """

    def __init__(
        self, settings: Settings, *, poll_timeout_ms: int = 500, start_timeout_s: float = 30.0
    ) -> None:
        self._settings = settings
        self._poll_timeout_ms = poll_timeout_ms
        self._start_timeout_s = start_timeout_s
        self.state = ControlState()
        self._changed = asyncio.Condition()
        self._replayed = asyncio.Event()

    async def start(self) -> None:
        await super().start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._replayed.wait(), self._start_timeout_s)
        if not self._replayed.is_set():
            log.warning(
                "control topic %s not read within %.0f s; following generation %d until it is",
                self._settings.control_topic,
                self._start_timeout_s,
                self.state.active.generation,
            )

    async def wait_changed(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait for the next record folded in; False if ``timeout`` passed first."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                return False
        return True

    async def _run(self) -> None:
        while True:  # until cancelled
            try:
                await self._follow()
            except KafkaError as exc:
                log.warning("control topic unreadable, retrying in 2 s: %r", exc)
                await asyncio.sleep(2.0)
            except Exception:
                # A follower that stopped would leave its process on a stale generation, silently.
                log.exception("following the control topic failed, retrying in 2 s")
                await asyncio.sleep(2.0)

    async def _follow(self) -> None:
        tp = TopicPartition(self._settings.control_topic, 0)
        consumer = AIOKafkaConsumer(
            **client_options(self._settings.kafka),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            # All topics' metadata: naming the topic could have a broker that creates topics make it.
            if tp.topic not in await consumer.topics():
                # Not created yet (``ensure_topics`` makes it): nothing to follow, generation 0.
                self._replayed.set()
                await asyncio.sleep(2.0)
                return
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            state = ControlState()
            end = (await consumer.end_offsets([tp]))[tp]
            while True:
                batches = await consumer.getmany(tp, timeout_ms=self._poll_timeout_ms)
                for record in batches.get(tp, []):
                    state.apply(record.key, record.value)
                replayed = await consumer.position(tp) >= end
                if replayed and (batches or not self._replayed.is_set()):
                    # A reconnect replays from the start: the state is swapped in whole, never
                    # shown half-read.
                    self.state = state
                    self._replayed.set()
                    async with self._changed:
                        self._changed.notify_all()
        finally:
            await consumer.stop()
