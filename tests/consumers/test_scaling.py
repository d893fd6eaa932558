"""The scaling policy as a table: lag readings and the group as it is → the next step."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from consumers.scaling import GroupState, LagSample, ScalingPolicy, decide
from schemas import Settings

#: 100 events of lag per actor, never grown at 50 or under, up after 10 s, down after 60 s quiet.
POLICY = ScalingPolicy(
    minimum=1,
    maximum=4,
    partitions=6,
    lag_per_actor=100,
    activation_lag=50,
    scale_up_after_s=10,
    scale_down_after_s=60,
    cooldown_s=30,
    actor_memory_bytes=1000,
)


@dataclass(frozen=True)
class Case:
    name: str
    #: (seconds, total lag) readings, oldest first; the decision is taken at the last one.
    lags: list[tuple[float, int]]
    members: int
    desired: int
    step: int
    alive: int | None = None
    last_step_at: float | None = None
    policy: dict = field(default_factory=dict)
    now: float | None = None


CASES = [
    Case("no lag reading yet: hold", [], members=1, desired=1, step=0),
    Case("lag under one actor's share keeps one", [(0, 80), (30, 90)], members=1, desired=1, step=0),
    Case(
        "lag calling for more for 10 s adds one",
        [(0, 350), (5, 360), (10, 370)],
        members=1,
        desired=4,
        step=1,
    ),
    Case(
        "a step is one actor, however many are called for",
        [(0, 9000), (10, 9000)],
        members=2,
        desired=4,
        step=1,
    ),
    Case("lag calling for more for only 5 s holds", [(5, 350), (10, 370)], members=1, desired=4, step=0),
    Case("a dip in the lag starts the wait again", [(0, 350), (4, 80), (6, 350), (10, 370)], 1, 4, 0),
    Case(
        "exactly one actor's share calls for no second", [(0, 100), (20, 100)], members=1, desired=1, step=0
    ),
    Case("one event over it calls for a second", [(0, 101), (20, 101)], members=1, desired=2, step=1),
    Case(
        "at the activation threshold the group never grows",
        [(0, 50), (20, 50)],
        members=1,
        desired=1,
        step=0,
        policy={"lag_per_actor": 10},
    ),
    Case(
        "just over the activation threshold it does",
        [(0, 51), (20, 51)],
        members=1,
        desired=4,
        step=1,
        policy={"lag_per_actor": 10},
    ),
    Case(
        "under the activation threshold it may still shrink",
        [(0, 20), (60, 20)],
        members=3,
        desired=2,
        step=-1,
        policy={"lag_per_actor": 10},
    ),
    Case(
        "clamped to the maximum", [(0, 9000), (20, 9000)], members=2, desired=2, step=0, policy={"maximum": 2}
    ),
    Case(
        "clamped to the partitions",
        [(0, 9000), (20, 9000)],
        members=3,
        desired=3,
        step=0,
        policy={"maximum": 8, "partitions": 3},
    ),
    Case(
        "clamped to what the memory budget fits",
        [(0, 9000), (20, 9000)],
        members=2,
        desired=2,
        step=0,
        policy={"memory_budget_bytes": 2500},
    ),
    Case(
        "a budget under one actor still runs one",
        [(0, 9000), (20, 9000)],
        members=1,
        desired=1,
        step=0,
        policy={"memory_budget_bytes": 500},
    ),
    Case("idle, the minimum is kept", [(0, 0), (90, 0)], members=2, desired=2, step=0, policy={"minimum": 2}),
    Case(
        "under the minimum: a step up at once", [(0, 0)], members=1, desired=2, step=1, policy={"minimum": 2}
    ),
    Case(
        "over the ceiling (memory shrank): a step down at once",
        [(0, 9000)],
        members=3,
        desired=2,
        step=-1,
        policy={"memory_budget_bytes": 2000},
    ),
    Case("quiet for 60 s: one step down", [(0, 0), (30, 0), (60, 0)], members=3, desired=1, step=-1),
    Case("quiet for only 50 s: hold", [(10, 0), (60, 0)], members=3, desired=1, step=0),
    Case("a burst in the quiet period starts it again", [(0, 0), (20, 500), (30, 0), (60, 0)], 3, 1, 0),
    Case(
        "lag for fewer but not none shrinks to what it calls for",
        [(0, 150), (60, 150)],
        members=4,
        desired=2,
        step=-1,
    ),
    Case(
        "within the cooldown no step up",
        [(0, 350), (10, 370)],
        members=1,
        desired=4,
        step=0,
        last_step_at=-10,
    ),
    Case(
        "after the cooldown the step up is taken",
        [(0, 350), (10, 370)],
        members=1,
        desired=4,
        step=1,
        last_step_at=-25,
    ),
    Case(
        "within the cooldown no step down", [(0, 0), (60, 0)], members=3, desired=1, step=0, last_step_at=40
    ),
    Case(
        "within the cooldown not even to the minimum",
        [(0, 0)],
        members=1,
        desired=2,
        step=0,
        last_step_at=-5,
        policy={"minimum": 2},
    ),
    Case(
        "a member not serving is not replaced while the count is right",
        [(0, 150), (20, 150)],
        members=2,
        alive=1,
        desired=2,
        step=0,
    ),
    Case(
        "a member not serving does not stop a step the lag calls for",
        [(0, 400), (20, 400)],
        members=2,
        alive=1,
        desired=4,
        step=1,
    ),
    Case(
        "a decision waits for readings, not for the clock alone",
        [(0, 350)],
        members=1,
        desired=4,
        step=0,
        now=30,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_policy_decides_as_the_table_says(case: Case) -> None:
    policy = replace(POLICY, **case.policy)
    history = [LagSample(at, lag) for at, lag in case.lags]
    now = case.now if case.now is not None else (history[-1].at if history else 0.0)
    group = GroupState(case.members, case.members if case.alive is None else case.alive, case.last_step_at)

    decision = decide(policy, history, group, now)

    assert (decision.desired, decision.step) == (case.desired, case.step), decision.reason
    assert decision.target == case.members + case.step
    assert decision.reason


def test_a_hold_for_a_missing_member_says_so() -> None:
    decision = decide(POLICY, [LagSample(0, 150)], GroupState(members=2, alive=1), now=0)
    assert "not serving" in decision.reason


def test_the_policy_comes_from_the_settings() -> None:
    settings = Settings(
        consumers_min=2,
        consumers_max=5,
        consumer_lag_per_actor=300,
        consumer_activation_lag=20,
        consumer_scale_up_after_s=3,
        consumer_scale_down_after_s=7,
        consumer_scale_cooldown_s=11,
        consumer_memory_bytes=1_000,
        consumer_memory_budget_bytes=4_000,
    )

    policy = ScalingPolicy.from_settings(settings, partitions=6)

    assert (policy.floor, policy.ceiling) == (2, 4)
    assert policy.desired(lag=601, members=2) == 3
    assert policy.history_s == 7
    assert ScalingPolicy.from_settings(settings, partitions=3, memory_budget_bytes=10_000).ceiling == 3
