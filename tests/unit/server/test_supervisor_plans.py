"""Pure plans of the supervisor: the rolling-update plan and the cold-start queue."""

from __future__ import annotations

import pytest

from tako_server.supervisor.coldstart import ColdStartQueue
from tako_server.supervisor.rollout import RolloutPlan, RolloutStep, StepKind

START = RolloutStep(StepKind.START_NEW)


def retire(iid: int) -> RolloutStep:
    return RolloutStep(StepKind.RETIRE_OLD, iid)


def test_rollout_alternates_start_new_and_retire_old() -> None:
    plan = RolloutPlan("v2", target=2, old=[1, 2])
    assert plan.next_steps() == [START]
    plan.on_started(3)
    assert plan.next_steps() == []
    plan.on_ready(3)
    assert plan.next_steps() == [retire(1), START]
    plan.on_started(4)
    plan.on_ready(4)
    assert plan.next_steps() == [retire(2)]
    assert not plan.is_done
    plan.on_gone(1, "stopped")
    plan.on_gone(2, "stopped")
    assert plan.is_done and plan.replaced == 2


def test_rollout_to_fewer_instances_retires_every_old_one_at_the_end() -> None:
    plan = RolloutPlan("v2", target=1, old=[1, 2, 3])
    plan.next_steps()
    plan.on_started(4)
    plan.on_ready(4)
    assert plan.next_steps() == [retire(1), retire(2), retire(3)]


def test_rollout_to_more_instances_keeps_starting_after_the_old_ones_are_gone() -> None:
    plan = RolloutPlan("v2", target=3, old=[1])
    plan.next_steps()
    plan.on_started(2)
    plan.on_ready(2)
    assert plan.next_steps() == [retire(1), START]


@pytest.mark.parametrize("target", [0, 1])
def test_rollout_target_is_at_least_one_warm_instance(target: int) -> None:
    assert RolloutPlan("v2", target=target, old=[]).target == 1


@pytest.mark.parametrize("ready_first", [False, True])
def test_any_new_instance_failing_fails_the_rollout_and_stops_its_steps(ready_first: bool) -> None:
    plan = RolloutPlan("v2", target=2, old=[1, 2])
    plan.next_steps()
    plan.on_started(3)
    if ready_first:
        plan.on_ready(3)
        plan.next_steps()
    plan.on_gone(3, "instance 3 exited (exit code 1)")
    assert plan.is_failed and plan.failure == "instance 3 exited (exit code 1)"
    assert plan.next_steps() == [] and not plan.is_done


def test_an_old_instance_crashing_during_rollout_just_leaves_the_plan() -> None:
    plan = RolloutPlan("v2", target=1, old=[1, 2])
    plan.next_steps()
    plan.on_started(3)
    plan.on_gone(1, "crashed")
    plan.on_ready(3)
    assert plan.next_steps() == [retire(2)]
    plan.on_gone(2, "stopped")
    assert plan.is_done and not plan.is_failed


def test_cold_start_queue_admits_up_to_its_limit() -> None:
    queue = ColdStartQueue(limit=100, timeout=30.0)
    assert all(queue.join(token, now=0.0) for token in range(100))
    assert not queue.join(100, now=0.0)
    assert queue.waiting == 100
    assert queue.starts == 1


def test_cold_start_queue_expires_waiters_at_their_own_deadline() -> None:
    queue = ColdStartQueue(limit=10, timeout=30.0)
    queue.join(1, now=0.0)
    queue.join(2, now=5.0)
    assert queue.expire(29.9) == []
    assert queue.expire(30.0) == [1]
    assert queue.expire(35.0) == [2]
    assert queue.waiting == 0


def test_cold_start_queue_settles_every_waiter_and_counts_a_new_start_afterwards() -> None:
    queue = ColdStartQueue(limit=10, timeout=30.0)
    queue.join(1, now=0.0)
    queue.join(2, now=0.0)
    queue.leave(1)
    assert queue.settle() == [2]
    queue.join(3, now=1.0)
    assert queue.starts == 2
