"""What a fault test of the changes stage watches: when each change arrives, and who holds what."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

__all__ = ["Arrival", "ChangeArrivals", "longest_pause", "partitions_by_client"]


@dataclass(frozen=True)
class Arrival:
    """A record of the changes topic, and when (``time.monotonic()``) this test's reader got it."""

    at: float
    doc_id: str
    version: int | None  # None: a tombstone


@dataclass
class ChangeArrivals:
    """Reads the changes topic from its start while it grows, noting when each record arrives."""

    bootstrap_servers: str
    topic: str
    partitions: int
    arrivals: list[Arrival] = field(default_factory=list)
    _task: asyncio.Task | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A change is noted within ~50 ms of its write, not at the next 500 ms default wait.
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        consumer.assign([TopicPartition(self.topic, p) for p in range(self.partitions)])
        self._task = asyncio.create_task(self._read(consumer))

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.monotonic()
                for records in batches.values():
                    for record in records:
                        version = None if record.value is None else orjson.loads(record.value)["version"]
                        self.arrivals.append(Arrival(now, record.key.decode(), version))
        finally:
            await consumer.stop()

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        """Until ``count`` records have arrived (all the topic holds, once the stage drained)."""
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.arrivals)} of {count} changes read after {timeout} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def longest_pause(arrivals: list[Arrival], start: float, end: float) -> float:
    """The longest time between ``start`` and ``end`` with no change arriving."""
    times = [start, *sorted(a.at for a in arrivals if start < a.at < end), end]
    return max(later - earlier for earlier, later in itertools.pairwise(times))


async def partitions_by_client(bootstrap_servers: str, group: str, topic: str) -> dict[str, set[int]]:
    """Client id → the partitions of ``topic`` the group has given that member, as the broker says."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.to_object()["groups"]
    held: dict[str, set[int]] = {}
    for member in described["members"]:
        held[member["client_id"]] = set()
        if member["member_assignment"]:  # empty while the group rebalances
            assignment = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
            held[member["client_id"]] = {tp.partition for tp in assignment.partitions() if tp.topic == topic}
    return held
