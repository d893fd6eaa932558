"""How many consumer actors the lag calls for: the scaling policy, as a pure function.

KEDA's rule for a lag target: desired = ceil(total lag / lag per actor), clamped between the
fewest and the most actors the group may have. Around it, what keeps a group from flapping:

- an activation threshold: at or under it, the lag never grows the group;
- a step up only once the lag has called for more actors for ``scale_up_after_s``, a step down
  only once it has called for fewer for ``scale_down_after_s`` (a quiet period);
- one actor per step, and no step within ``cooldown_s`` of the last one: each step costs a
  rebalance and a model load before it shows in the lag;
- members that do not answer (a dead actor Ray has not restarted yet) count as members, since
  Ray brings them back, but not as serving: while one is missing and the lag wants no more
  members, the policy waits for the restart instead of adding an actor that would be one too many.

Nothing here reads a clock or the broker: the caller passes the lag readings and ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schemas import Settings

__all__ = ["GroupState", "LagSample", "ScalingDecision", "ScalingPolicy", "decide"]


@dataclass(frozen=True)
class LagSample:
    """The group's total lag on its input topic, read at ``at`` (monotonic seconds)."""

    at: float
    lag: int


@dataclass(frozen=True)
class GroupState:
    """The group as it is: members started and not retired, those of them answering, and when
    the last step was taken (None: never)."""

    members: int
    alive: int
    last_step_at: float | None = None


@dataclass(frozen=True)
class ScalingDecision:
    """``desired``: what the latest lag calls for, clamped; ``target``: the members after this
    decision, at most one away from now; ``reason``: why, in words for the log."""

    desired: int
    target: int
    members: int
    alive: int
    reason: str

    @property
    def step(self) -> int:
        return self.target - self.members


@dataclass(frozen=True)
class ScalingPolicy:
    minimum: int
    maximum: int
    partitions: int
    lag_per_actor: int
    activation_lag: int
    scale_up_after_s: float
    scale_down_after_s: float
    cooldown_s: float
    actor_memory_bytes: int
    memory_budget_bytes: int | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, partitions: int, memory_budget_bytes: int | None = None
    ) -> ScalingPolicy:
        """The policy ``settings`` describe, for an input topic of ``partitions`` partitions;
        ``memory_budget_bytes`` overrides the settings' budget (e.g. the cluster's memory)."""
        return cls(
            minimum=settings.consumers_min,
            maximum=settings.consumers_max,
            partitions=partitions,
            lag_per_actor=settings.consumer_lag_per_actor,
            activation_lag=settings.consumer_activation_lag,
            scale_up_after_s=settings.consumer_scale_up_after_s,
            scale_down_after_s=settings.consumer_scale_down_after_s,
            cooldown_s=settings.consumer_scale_cooldown_s,
            actor_memory_bytes=settings.consumer_memory_bytes,
            memory_budget_bytes=memory_budget_bytes or settings.consumer_memory_budget_bytes,
        )

    @property
    def ceiling(self) -> int:
        """The most actors: ``maximum``, and no more than partitions (an extra member would hold
        none) nor than the memory budget fits; one always runs, whatever the budget."""
        ceiling = min(self.maximum, self.partitions)
        if self.memory_budget_bytes is not None:
            ceiling = min(ceiling, self.memory_budget_bytes // self.actor_memory_bytes)
        return max(ceiling, 1)

    @property
    def floor(self) -> int:
        """The fewest actors: ``minimum``, unless the ceiling is lower (capacity wins)."""
        return min(self.minimum, self.ceiling)

    @property
    def history_s(self) -> float:
        """How far back the lag readings must go for every timer to be judged."""
        return max(self.scale_up_after_s, self.scale_down_after_s)

    def desired(self, lag: int, members: int) -> int:
        """The actors ``lag`` calls for, with ``members`` in the group now."""
        wanted = math.ceil(lag / self.lag_per_actor)
        if lag <= self.activation_lag:
            wanted = min(wanted, members)
        return self.clamp(wanted)

    def clamp(self, actors: int) -> int:
        return min(max(actors, self.floor), self.ceiling)


def decide(
    policy: ScalingPolicy, history: Sequence[LagSample], group: GroupState, now: float
) -> ScalingDecision:
    """The next step for ``group``, given its lag readings (oldest first) up to ``now``."""
    members = group.members
    desired = policy.desired(history[-1].lag, members) if history else policy.clamp(members)

    def hold(reason: str) -> ScalingDecision:
        return ScalingDecision(desired, members, members, group.alive, reason)

    def step(by: int, reason: str) -> ScalingDecision:
        return ScalingDecision(desired, members + by, members, group.alive, reason)

    if group.last_step_at is not None and now - group.last_step_at < policy.cooldown_s:
        left = policy.cooldown_s - (now - group.last_step_at)
        return hold(f"cooling down after the last step ({left:.0f}s left)")
    if members < policy.floor:
        return step(+1, f"{members} members, under the fewest ({policy.floor})")
    if members > policy.ceiling:
        return step(-1, f"{members} members, over the most ({policy.ceiling}: max, partitions, memory)")
    if not history:
        return hold("no lag reading yet")
    lag = history[-1].lag
    if desired == members:
        missing = members - group.alive
        if missing:
            return hold(f"lag {lag}: {members} actors is right; {missing} not serving yet, Ray restarts it")
        return hold(f"lag {lag}: {members} actors is right")
    direction = 1 if desired > members else -1
    wait_s = policy.scale_up_after_s if direction > 0 else policy.scale_down_after_s
    since = _called_for_since(
        history, lambda sample: (policy.desired(sample.lag, members) - members) * direction > 0
    )
    # Up to the latest reading, not to now: while the lag cannot be read, nothing is known of it.
    called_s = history[-1].at - since
    if called_s >= wait_s:
        return step(direction, f"lag {lag} has called for {desired} actors for {called_s:.0f}s")
    return hold(f"lag {lag} calls for {desired} actors, for {called_s:.0f}s of the {wait_s:.0f}s needed")


def _called_for_since(history: Sequence[LagSample], calls_for: Callable[[LagSample], bool]) -> float:
    """When the trailing run of readings that all call for the change began."""
    since = history[-1].at
    for sample in reversed(history):
        if not calls_for(sample):
            break
        since = sample.at
    return since
