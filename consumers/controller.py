"""Keeps the consumer group as large as its lag calls for, and says how large it is.

Every few seconds: read the group's lag on its input topic, see which members answer, ask the
policy (``consumers/scaling.py``), take its step through ``ConsumerGroup``, and publish the
desired and actual counts to the stats topic, where the API reads them for ``/metrics`` and
the status page.

It is a loop in the process that runs ``ragstream consume``, not a Ray actor of its own: that
process already holds the group's actor handles and watches their runs, and an actor belongs to
whoever creates it, so consumer actors created by a controller actor would die with it. Here the
controller dies only with the command, which ends the actors anyway; its one piece of state, the
timers, starts afresh with the group.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import ray
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers.actors import ConsumerGroup
from consumers.scaling import GroupState, LagSample, ScalingDecision, ScalingPolicy, decide
from schemas import Settings
from schemas.stats import SCALING_REPORT_KIND
from streams.kafka_clients import client_options
from streams.lag import LagReader

__all__ = ["ScalingController", "ScalingReport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScalingReport:
    """What the controller publishes after each decision: ``desired`` actors for the lag, and
    ``actual`` members that answer (a dead member Ray has not restarted yet is not serving)."""

    consumer_group: str
    desired: int
    actual: int
    members: int
    reason: str
    updated_at: float
    kind: str = SCALING_REPORT_KIND

    @property
    def key(self) -> bytes:
        return f"scaling/{self.consumer_group}".encode()

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


class ScalingController:
    """Scales ``group`` between ``settings.consumers_min`` and ``consumers_max`` by its lag."""

    def __init__(
        self,
        settings: Settings,
        group: ConsumerGroup,
        *,
        interval_s: float = 2.0,
        answer_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._group = group
        self._interval_s = interval_s
        self._answer_timeout_s = answer_timeout_s
        self._clock = clock
        self._history: deque[LagSample] = deque()
        self._last_step_at: float | None = None
        #: One ping in flight per member, with when it was sent: a member that is restarting
        #: keeps its ping until it answers.
        self._pings: dict[Any, tuple[Any, float]] = {}
        self._serving: set[Any] = set()
        #: The node each member serving runs on, as its last ping said.
        self._nodes: dict[Any, str] = {}
        self._lag: LagReader | None = None
        self._producer: AIOKafkaProducer | None = None
        self.last: ScalingDecision | None = None

    async def run(self, stop: threading.Event) -> None:
        """Decide every ``interval_s`` until ``stop`` is set (a signal handler may set it)."""
        kafka = self._settings.kafka
        async with (
            LagReader(kafka) as self._lag,
            AIOKafkaProducer(**client_options(kafka)) as self._producer,
        ):
            while not stop.is_set():
                await self.tick()
                # A thread waits on the threading.Event, which a signal handler may set.
                await asyncio.to_thread(stop.wait, self._interval_s)
            # The counts stay on the compacted stats topic: say the group is going away.
            await self._report(ScalingDecision(0, 0, 0, 0, "the consumers were stopped"), actual=0)

    async def tick(self) -> ScalingDecision:
        """One round: read, decide, step, report."""
        await asyncio.to_thread(self._group.check)  # a consumer that stopped on its own is an error
        partitions = await self._read_lag()
        answering = await asyncio.to_thread(self._answering)
        budget = await asyncio.to_thread(self._memory_budget)
        policy = ScalingPolicy.from_settings(self._settings, partitions or self._settings.partitions, budget)
        state = GroupState(len(self._group.actors), len(answering), self._last_step_at)
        decision = decide(policy, self._history, state, self._clock())
        self._log(decision)
        if decision.step > 0:
            await asyncio.to_thread(self._group.add)
        elif decision.step < 0:
            await asyncio.to_thread(self._retire_one, answering)
        if decision.step:
            self._last_step_at = self._clock()
        self.last = decision
        await self._report(decision, actual=len(answering))
        return decision

    async def _read_lag(self) -> int | None:
        """Record the group's total lag; the input topic's partitions, or None if unread."""
        assert self._lag is not None
        try:
            partitions = await self._lag.read(self._settings.input_topic, self._settings.consumer_group)
        except KafkaError as exc:
            log.warning("consumer lag not read, no scaling decision on it: %r", exc)
            return None
        now = self._clock()
        self._history.append(LagSample(now, sum(p.lag for p in partitions)))
        # Readings older than the longest timer (and one interval) are no longer needed.
        keep_s = max(self._settings.consumer_scale_up_after_s, self._settings.consumer_scale_down_after_s)
        while len(self._history) > 1 and self._history[1].at < now - keep_s - self._interval_s:
            self._history.popleft()
        return len(partitions) or None

    def _answering(self) -> list[Any]:
        """The members serving: their last ping answered, and none of theirs has waited longer than
        ``answer_timeout_s``. A new member serves from its first answer, once its model is loaded;
        a dead one stops serving when its ping is overdue, and serves again once Ray restarted it."""
        now, members = self._clock(), self._group.actors
        self._pings = {actor: ping for actor, ping in self._pings.items() if actor in members}
        self._serving = {actor for actor in self._serving if actor in members}
        self._nodes = {actor: node for actor, node in self._nodes.items() if actor in members}
        for actor in members:
            if actor not in self._pings:
                self._pings[actor] = (actor.node_id.remote(), now)
        refs = [ref for ref, _ in self._pings.values()]
        # A short wait: a healthy member answers in milliseconds, and a slow one keeps its ping.
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0.5)[0])
        for actor, (ref, sent) in list(self._pings.items()):
            if ref in ready:
                del self._pings[actor]
                try:
                    self._nodes[actor] = ray.get(ref)
                    self._serving.add(actor)
                except ray.exceptions.RayError:
                    self._serving.discard(actor)
            elif now - sent > self._answer_timeout_s:
                self._serving.discard(actor)
        answering = [actor for actor in members if actor in self._serving]
        self._share_cores(answering)
        return answering

    def _share_cores(self, answering: list[Any]) -> None:
        """Each member serving embeds with its node's cores divided among the members serving
        there: one member alone uses them all, instead of the share it would have at the most
        members. Sent every round, so that a member Ray restarted gets its share again."""
        on_node = Counter(self._nodes[actor] for actor in answering)
        for actor in answering:
            actor.share_cores.remote(on_node[self._nodes[actor]])

    def _memory_budget(self) -> int | None:
        """The settings' budget (None: the policy reads it there), else the memory of the cluster's
        live nodes: it shrinks when a node leaves. Other deployments' reservations are not taken
        off: an actor too many waits for a node (and counts as not serving) rather than a member
        being retired while it loads its model."""
        if self._settings.consumer_memory_budget_bytes is not None:
            return None
        return max(int(ray.cluster_resources().get("memory", 0)), 1)

    def _retire_one(self, answering: list[Any]) -> None:
        silent = [actor for actor in self._group.actors if actor not in answering]
        if silent:
            self._group.discard(silent[-1])
        else:
            self._group.remove()

    def _log(self, decision: ScalingDecision) -> None:
        previous = self.last
        changed = previous is None or (previous.desired, previous.target, previous.alive) != (
            decision.desired,
            decision.target,
            decision.alive,
        )
        level = logging.INFO if decision.step or changed else logging.DEBUG
        action = {1: "adding an actor", -1: "retiring an actor", 0: "holding"}[decision.step]
        log.log(
            level,
            "consumers: %s (%d members, %d answering, %d desired): %s",
            action,
            decision.members,
            decision.alive,
            decision.desired,
            decision.reason,
        )

    async def _report(self, decision: ScalingDecision, *, actual: int) -> None:
        assert self._producer is not None
        report = ScalingReport(
            self._settings.consumer_group,
            decision.desired,
            actual,
            decision.target,
            decision.reason,
            time.time(),
        )
        # Advisory, as the consumers' counters: a lost report must never stop scaling.
        try:
            await self._producer.send_and_wait(self._settings.stats_topic, report.to_json(), key=report.key)
        except KafkaError as exc:
            log.warning("scaling report not published: %r", exc)
