"""When a replica asks to leave the load balancer: behind the chunk log at once, and Kafka or
Chroma unreachable only once it has lasted the grace period."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from query_api.replica_health import ReplicaHealth
from query_api.services import Services


@dataclass
class FakeView:
    applied: dict[int, int]
    caught_up: bool = True
    topic: str = "docs.chunks"

    def applied_offsets(self) -> dict[int, int]:
        return dict(self.applied)


@dataclass
class FakeKafka:
    ends: dict[int, int]
    down: bool = False

    async def start(self) -> None:
        if self.down:
            raise ConnectionError("no broker")

    async def end_offsets(self, topic: str) -> dict[int, int]:
        if self.down:
            raise ConnectionError("no broker")
        return dict(self.ends)


@dataclass
class FakeChroma:
    down: bool = False

    async def heartbeat(self) -> int:
        if self.down:
            raise ConnectionError("connection refused")
        return 1


@dataclass
class Replica:
    view: FakeView = field(default_factory=lambda: FakeView({0: 100, 1: 50}))
    kafka: FakeKafka = field(default_factory=lambda: FakeKafka({0: 100, 1: 50}))
    chroma: FakeChroma = field(default_factory=FakeChroma)
    now: float = 1000.0

    def services(self) -> Services:
        fake: Any = type(
            "S", (), {"chunk_log_view": self.view, "lag_reader": self.kafka, "chroma": self.chroma}
        )
        return cast(Services, fake)

    def health(self, max_view_lag: int = 10, grace_s: float = 15.0) -> ReplicaHealth:
        return ReplicaHealth(max_view_lag, grace_s, clock=lambda: self.now)


async def test_a_replica_with_current_views_and_reachable_services_serves() -> None:
    replica = Replica()
    assert await replica.health().problem(replica.services()) is None


async def test_a_replica_still_replaying_is_not_served() -> None:
    replica = Replica(view=FakeView({}, caught_up=False))
    problem = await replica.health().problem(replica.services())
    assert problem is not None and "not replayed" in problem


async def test_a_replica_behind_by_more_than_the_bound_leaves_at_once() -> None:
    replica = Replica(kafka=FakeKafka({0: 105, 1: 56}))  # 11 records behind, the bound is 10
    problem = await replica.health(max_view_lag=10).problem(replica.services())
    assert problem is not None and "11 records behind" in problem
    replica.kafka.ends = {0: 105, 1: 55}  # 10 behind: within the bound
    assert await replica.health(max_view_lag=10).problem(replica.services()) is None


async def test_an_unreachable_chroma_is_tolerated_for_the_grace_period_then_fails_the_replica() -> None:
    replica = Replica(chroma=FakeChroma(down=True))
    health = replica.health(grace_s=15)
    assert await health.problem(replica.services()) is None
    replica.now += 14
    assert await health.problem(replica.services()) is None
    replica.now += 1
    problem = await health.problem(replica.services())
    assert problem is not None and "Chroma unreachable for 15 s" in problem


async def test_a_dependency_that_answers_again_starts_its_grace_period_afresh() -> None:
    replica = Replica(kafka=FakeKafka({0: 100, 1: 50}, down=True))
    health = replica.health(grace_s=15)
    assert await health.problem(replica.services()) is None
    replica.now += 10
    replica.kafka.down = False
    assert await health.problem(replica.services()) is None
    replica.kafka.down = True
    assert await health.problem(replica.services()) is None
    replica.now += 10
    assert await health.problem(replica.services()) is None  # down for 10 s this time, not 20
    replica.now += 5
    problem = await health.problem(replica.services())
    assert problem is not None and problem.startswith("Kafka unreachable")
