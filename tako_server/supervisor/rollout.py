"""The rolling-update plan for one deploy (pure: facts in, next steps out).

Batch size is one: start one new instance, wait until it is healthy (it is routable from
that moment), then retire (drain + stop) one old instance, and repeat until ``target`` new
instances are ready; then retire the old ones that are left. Rules:

- an old instance is retired only after a new one became ready in its place, so at least
  one healthy instance is routable at every moment when one was before;
- any new instance failing (exit, startup timeout, dying after it was ready) fails the
  whole rollout: the caller stops every new instance and keeps the old ones;
- the rollout is done when ``target`` new instances are ready and every old one is gone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class StepKind(enum.Enum):
    START_NEW = "start_new"
    RETIRE_OLD = "retire_old"


@dataclass(frozen=True)
class RolloutStep:
    kind: StepKind
    instance_id: int | None = None


@dataclass
class RolloutPlan:
    """State of one rolling update; the state machine feeds it facts and runs its steps."""

    version: str
    target: int
    old: list[int]
    started: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    retiring: set[int] = field(default_factory=set)
    replaced: int = 0
    failure: str | None = None

    def __post_init__(self) -> None:
        self.target = max(1, self.target)
        self.old = list(self.old)

    @property
    def starting(self) -> int | None:
        pending = [i for i in self.started if i not in self.ready]
        return pending[0] if pending else None

    @property
    def is_failed(self) -> bool:
        return self.failure is not None

    @property
    def is_done(self) -> bool:
        return (
            not self.is_failed
            and len(self.ready) >= self.target
            and not self.old
            and not self.retiring
        )

    def next_steps(self) -> list[RolloutStep]:
        """What to do now; call after every fact. Each step is returned once."""
        if self.is_failed:
            return []
        steps: list[RolloutStep] = []
        allowed = (
            len(self.ready) if len(self.ready) < self.target else len(self.old) + self.replaced
        )
        while self.old and self.replaced < allowed:
            victim = self.old.pop(0)
            self.retiring.add(victim)
            self.replaced += 1
            steps.append(RolloutStep(StepKind.RETIRE_OLD, victim))
        if self.starting is None and len(self.ready) < self.target:
            steps.append(RolloutStep(StepKind.START_NEW))
        return steps

    def on_started(self, instance_id: int) -> None:
        self.started.append(instance_id)

    def on_ready(self, instance_id: int) -> None:
        if instance_id in self.started and instance_id not in self.ready:
            self.ready.append(instance_id)

    def on_failed(self, instance_id: int, reason: str) -> None:
        """A new instance failed: the rollout fails (first reason wins)."""
        if instance_id in self.started and self.failure is None:
            self.failure = reason

    def on_gone(self, instance_id: int, reason: str) -> None:
        """An instance exited: an old one leaves the plan, a new one fails it."""
        if instance_id in self.started:
            self.on_failed(instance_id, reason)
            return
        self.retiring.discard(instance_id)
        if instance_id in self.old:
            self.old.remove(instance_id)

    def __repr__(self) -> str:
        return (
            f"RolloutPlan(version={self.version!r}, target={self.target}, ready={self.ready}, "
            f"starting={self.starting}, old={self.old}, retiring={sorted(self.retiring)}, "
            f"failure={self.failure!r})"
        )
