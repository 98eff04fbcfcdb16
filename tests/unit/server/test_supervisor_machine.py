"""AppMachine playbooks: events in, actions out; time is an argument, nothing sleeps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tako_server.supervisor.events import (
    Action,
    ActivityReport,
    ColdStartJoin,
    Deploy,
    Event,
    Exited,
    Fail,
    FailKind,
    Log,
    Notify,
    ProbeDone,
    ProbeHealth,
    Resolve,
    Restore,
    Scale,
    Sig,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    Stop,
    Tick,
)
from tako_server.supervisor.machine import AppMachine
from tako_server.supervisor.spec import LaunchSpec, RolloutResult, SupervisorSettings

SETTINGS = SupervisorSettings(
    health_interval=1.0,
    startup_timeout=30.0,
    drain_timeout=30.0,
    drain_min=0.0,  # most tests: SIGTERM as soon as nothing is in flight
    stop_grace=10.0,
    restart_backoff_base=0.5,
    restart_backoff_cap=30.0,
    backoff_reset_after=30.0,
    cold_start_queue=3,
    cold_start_timeout=30.0,
    idle_check_interval=1.0,
)


def spec(version: str) -> LaunchSpec:
    return LaunchSpec(
        app="shop",
        env="prod",
        version=version,
        workdir=Path("/srv/shop"),
        command=["python", "app.py"],
        environ={},
        log_dir=Path("/srv/logs"),
    )


class Playbook:
    """Drives one AppMachine; ``self.now`` is the clock."""

    def __init__(self, settings: SupervisorSettings = SETTINGS) -> None:
        self.m = AppMachine("shop/prod", settings)
        self.now = 0.0

    def feed(self, event: Event, *, at: float | None = None) -> list[Action]:
        if at is not None:
            self.now = at
        return self.m.handle(event, self.now)

    def spawn_all(self, actions: list[Action]) -> list[Action]:
        """Answer every Spawn with Spawned; return the actions that follow."""
        out: list[Action] = []
        for action in actions:
            if isinstance(action, Spawn):
                iid = action.instance_id
                out += self.feed(Spawned(iid, pid=1000 + iid, port=20000 + iid))
        return out

    def probe(self, iid: int, ok: bool, detail: str = "") -> list[Action]:
        inst = self.m.instances[iid]
        inst.probing = True  # as if the ProbeHealth action had been issued
        return self.feed(ProbeDone(iid, ok, detail or ("200" if ok else "refused")))

    def start_healthy(self, actions: list[Action]) -> list[Action]:
        out = self.spawn_all(actions)
        for action in out[:]:
            if isinstance(action, ProbeHealth):
                out += self.probe(action.instance_id, True)
        return out

    def running(self, desired: int, version: str = "v1") -> None:
        """A deployed app with ``desired`` healthy instances."""
        actions = self.feed(Deploy(1, spec(version), desired, 300))
        for _ in range(max(1, desired)):
            actions = self.start_healthy(actions)
        assert any(isinstance(a, Resolve) and a.token == 1 for a in actions), actions


def of(kind: type, actions: list[Action]) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def test_deploy_to_empty_app_resolves_when_the_instance_is_ready() -> None:
    p = Playbook()
    actions = p.feed(Deploy(7, spec("v1"), 1, 300))
    assert [a.instance_id for a in of(Spawn, actions)] == [1]
    actions = p.spawn_all(actions)
    assert of(ProbeHealth, actions) == [ProbeHealth(1, 20001)]
    assert not of(Resolve, actions)
    actions = p.probe(1, ok=True)
    assert of(Resolve, actions) == [Resolve(7, RolloutResult("v1", 1, 0, False))]
    assert of(Notify, actions)
    assert p.m.state == "running" and p.m.version == "v1"
    assert [b.port for b in p.m.backends()] == [20001]


def test_deploy_starts_new_instances_one_at_a_time() -> None:
    p = Playbook()
    actions = p.feed(Deploy(1, spec("v1"), 3, 300))
    assert len(of(Spawn, actions)) == 1
    actions = p.start_healthy(actions)
    assert [a.instance_id for a in of(Spawn, actions)] == [2]


def test_rolling_update_retires_an_old_instance_only_after_a_new_one_is_ready() -> None:
    p = Playbook()
    p.running(2)
    actions = p.feed(Deploy(2, spec("v2"), 2, 300))
    assert p.m.state == "deploying"
    assert [a.instance_id for a in of(Spawn, actions)] == [3]
    assert not of(Signal, p.spawn_all(actions))
    assert len(p.m.backends()) == 2
    actions = p.probe(3, ok=True)  # new instance 3 ready: retire old 1
    assert {b.instance_id for b in p.m.backends()} == {2, 3}
    assert [a.instance_id for a in of(Spawn, actions)] == [4]
    actions += p.feed(Tick(), at=p.now + 0.1)
    assert Signal(1, Sig.TERM) in actions
    p.spawn_all(actions)
    actions = p.feed(Exited(1, -15))
    actions += p.probe(4, ok=True)
    assert {b.instance_id for b in p.m.backends()} == {3, 4}
    actions += p.feed(Tick(), at=p.now + 0.1)
    assert Signal(2, Sig.TERM) in actions
    assert not of(Resolve, actions)
    actions = p.feed(Exited(2, 0))
    assert of(Resolve, actions) == [Resolve(2, RolloutResult("v2", 2, 2, False))]
    assert p.m.version == "v2" and p.m.state == "running"


@pytest.mark.parametrize("failure", ["exit", "startup_timeout", "spawn_error"])
def test_failed_rollout_keeps_the_old_version_serving(failure: str) -> None:
    p = Playbook()
    p.running(1)
    actions = p.spawn_all(p.feed(Deploy(2, spec("v2"), 1, 300)))
    if failure == "exit":
        actions = p.feed(Exited(2, 3))
    elif failure == "startup_timeout":
        p.probe(2, ok=False, detail="/status answered 500")
        actions = p.feed(Tick(), at=p.now + 30.0)
        assert Signal(2, Sig.KILL) in actions
    else:
        p.m.instances[2].pid = None
        actions = p.feed(SpawnFailed(2, "No such file"))
    [fail] = of(Fail, actions)
    assert (
        fail.kind is FailKind.ROLLOUT
        and "v2" in fail.message
        and "v1 keeps serving" in fail.message
    )
    assert p.m.version == "v1" and p.m.state == "running"
    assert [b.instance_id for b in p.m.backends()] == [1]
    assert not of(Spawn, actions)


def test_failed_first_deploy_leaves_the_app_in_error_without_a_version() -> None:
    p = Playbook()
    p.spawn_all(p.feed(Deploy(1, spec("v1"), 1, 300)))
    actions = p.feed(Exited(1, 1))
    assert of(Fail, actions)[0].kind is FailKind.ROLLOUT
    assert p.m.state == "error" and p.m.version is None
    assert not of(Spawn, p.feed(Tick(), at=10.0))


def test_failed_rollout_of_several_instances_restores_the_count_with_the_old_version() -> None:
    p = Playbook()
    p.running(2)
    actions = p.spawn_all(p.feed(Deploy(2, spec("v2"), 2, 300)))
    actions = p.probe(3, ok=True)  # old 1 retired, new 4 spawned
    p.spawn_all(actions)
    p.feed(Exited(1, -15))
    actions = p.feed(Exited(4, 1))  # new instance 4 crashes: rollout fails
    assert of(Fail, actions)
    actions += p.feed(Tick(), at=p.now + 0.1)
    assert p.m.instances[3].state.value == "draining"  # new healthy one drained, not killed
    respawn = of(Spawn, actions)
    assert [s.spec.version for s in respawn] == ["v1"]


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (12, 30.0)]
)
def test_restart_backoff_doubles_from_half_a_second_up_to_the_cap(
    failures: int, delay: float
) -> None:
    assert SETTINGS.backoff(failures) == delay


def test_crash_is_replaced_after_the_backoff_and_the_backoff_grows() -> None:
    p = Playbook()
    p.running(1)
    iid = 1
    for delay in (0.5, 1.0, 2.0, 4.0):
        actions = p.feed(Exited(iid, 1), at=p.now + 0.01)
        crashed_at = p.now
        assert any(isinstance(a, Log) and "exited unexpectedly" in a.message for a in actions)
        assert not of(Spawn, p.feed(Tick(), at=crashed_at + delay - 0.01))
        actions = p.feed(Tick(), at=crashed_at + delay)
        [spawn] = of(Spawn, actions)
        iid = spawn.instance_id
        p.start_healthy(actions)
    assert p.m.instances[iid].restarts == 4


def test_backoff_resets_after_an_instance_stayed_healthy() -> None:
    p = Playbook()
    p.running(1)
    p.feed(Exited(1, 1), at=1.0)
    p.start_healthy(p.feed(Tick(), at=1.5))
    assert p.m.crashes == 1
    p.feed(Tick(), at=1.5 + 30.0)
    assert p.m.crashes == 0


def test_a_stable_sibling_does_not_reset_the_backoff_of_a_crash_loop() -> None:
    p = Playbook()
    p.running(2)  # instance 1 stays healthy for the whole test
    p.feed(Tick(), at=p.now + 60.0)
    iid, delays = 2, []
    for _ in range(4):
        p.feed(Exited(iid, 1), at=p.now + 0.01)
        crashed_at = p.now
        p.feed(Tick(), at=crashed_at + 0.1)
        delay = p.m.next_spawn_at - crashed_at
        delays.append(round(delay, 2))
        [spawn] = of(Spawn, p.feed(Tick(), at=p.m.next_spawn_at))
        iid = spawn.instance_id
        p.start_healthy([spawn])
    assert delays == [0.5, 1.0, 2.0, 4.0]


def test_two_failed_probes_make_an_instance_unroutable_and_five_kill_it() -> None:
    p = Playbook()
    p.running(1)
    p.probe(1, ok=False)
    assert p.m.backends()
    actions = p.probe(1, ok=False)
    assert not p.m.backends() and of(Notify, actions)
    p.probe(1, ok=False)
    p.probe(1, ok=False)
    actions = p.probe(1, ok=False)
    assert Signal(1, Sig.KILL) in actions
    actions = p.feed(Exited(1, -9))
    assert not of(Spawn, actions)  # replacement waits for the backoff
    assert of(Spawn, p.feed(Tick(), at=p.now + 0.5))


def test_an_unhealthy_instance_that_answers_again_is_routable_again() -> None:
    p = Playbook()
    p.running(1)
    p.probe(1, ok=False)
    p.probe(1, ok=False)
    assert not p.m.backends()
    p.probe(1, ok=True)
    assert [b.instance_id for b in p.m.backends()] == [1]


def test_stop_waits_for_in_flight_requests_before_sigterm_then_sigkills_after_the_grace() -> None:
    p = Playbook()
    p.running(1)
    p.feed(ActivityReport("main", {1: 2}))
    actions = p.feed(Stop(5), at=10.0)
    assert not p.m.backends() and not of(Signal, actions)
    assert not of(Signal, p.feed(Tick(), at=20.0))
    assert of(Signal, p.feed(ActivityReport("main", {1: 0}), at=21.0)) == [Signal(1, Sig.TERM)]
    assert not of(Signal, p.feed(Tick(), at=30.0))
    assert of(Signal, p.feed(Tick(), at=31.0)) == [Signal(1, Sig.KILL)]
    assert of(Resolve, p.feed(Exited(1, -9))) == [Resolve(5)]
    assert p.m.state == "stopped"


def test_drain_gives_up_waiting_for_in_flight_requests_after_the_drain_timeout() -> None:
    p = Playbook()
    p.running(1)
    p.feed(ActivityReport("main", {1: 1}))
    p.feed(Stop(5), at=10.0)
    assert not of(Signal, p.feed(Tick(), at=39.9))
    assert of(Signal, p.feed(Tick(), at=40.0)) == [Signal(1, Sig.TERM)]


def test_in_flight_is_summed_over_reporters() -> None:
    p = Playbook()
    p.running(1)
    p.feed(ActivityReport("w1", {1: 2}))
    p.feed(ActivityReport("w2", {1: 3}))
    assert p.m.instances[1].in_flight == 5
    p.feed(ActivityReport("w1", {}))
    assert p.m.instances[1].in_flight == 3


def test_desired_zero_deploy_keeps_one_warm_instance_until_the_idle_timeout() -> None:
    p = Playbook()
    actions = p.start_healthy(p.feed(Deploy(1, spec("v1"), 0, 60), at=0.0))
    assert of(Resolve, actions) == [Resolve(1, RolloutResult("v1", 1, 0, True))]
    assert not p.m.wants_cold_start
    assert not of(Signal, p.feed(Tick(), at=59.0))
    p.feed(Tick(), at=61.0)
    assert of(Signal, p.feed(Tick(), at=61.1)) == [Signal(1, Sig.TERM)]
    p.feed(Exited(1, -15))
    assert p.m.state == "idle" and p.m.wants_cold_start


def test_idle_scale_down_never_stops_an_instance_that_is_serving() -> None:
    p = Playbook()
    p.start_healthy(p.feed(Deploy(1, spec("v1"), 0, 60), at=0.0))
    p.feed(ActivityReport("main", {1: 1}), at=1.0)
    for t in (70.0, 200.0, 500.0):
        assert not of(Signal, p.feed(Tick(), at=t))
    p.feed(ActivityReport("main", {}), at=501.0)
    assert not of(Signal, p.feed(Tick(), at=540.0))  # activity at 501 restarts the clock
    p.feed(Tick(), at=562.0)
    assert of(Signal, p.feed(Tick(), at=562.1)) == [Signal(1, Sig.TERM)]


def idle_app() -> Playbook:
    p = Playbook()
    p.feed(Restore(spec("v1"), 0, 60), at=0.0)
    assert p.m.state == "idle" and p.m.wants_cold_start
    return p


def test_cold_start_waiters_share_one_start_and_are_all_released_when_ready() -> None:
    p = idle_app()
    spawns = []
    for token in (11, 12, 13):
        spawns += of(Spawn, p.feed(ColdStartJoin(token), at=1.0))
    assert len(spawns) == 1
    actions = p.start_healthy(spawns)
    resolved = of(Resolve, actions)
    assert {r.token for r in resolved} == {11, 12, 13}
    assert all(r.value == p.m.backends() for r in resolved)


@pytest.mark.parametrize(
    ("failed_at", "next_probe"),
    [
        (0.001, 0.006),  # young: at least startup_probe_min (5 ms) apart
        (0.040, 0.050),  # a quarter of its age
        (0.200, 0.250),
        (2.000, 2.100),  # old: every startup_probe_interval (100 ms)
    ],
)
def test_a_starting_instance_is_probed_after_a_quarter_of_its_age(
    failed_at: float, next_probe: float
) -> None:
    p = idle_app()
    assert of(ProbeHealth, p.spawn_all(p.feed(ColdStartJoin(1), at=0.0)))  # probed at once
    assert p.m.next_due() is None  # nothing is due while that probe runs
    p.now = failed_at
    p.probe(1, ok=False)
    assert p.m.next_due() == pytest.approx(next_probe)
    assert not of(ProbeHealth, p.feed(Tick(), at=next_probe - 0.0001))
    assert of(ProbeHealth, p.feed(Tick(), at=next_probe))


def test_a_restart_after_its_backoff_is_due_and_a_healthy_app_waits_for_nothing() -> None:
    p = Playbook()
    p.running(1)
    assert p.m.next_due() is None  # health probes of running instances ride the ticker
    p.feed(Exited(1, 1), at=10.0)
    assert p.m.next_due() == 10.5  # restart_backoff_base
    assert of(Spawn, p.feed(Tick(), at=10.5))


def test_cold_start_queue_rejects_the_waiter_past_the_limit() -> None:
    p = idle_app()
    for token in (1, 2, 3):
        assert not of(Fail, p.feed(ColdStartJoin(token)))
    [fail] = of(Fail, p.feed(ColdStartJoin(4)))
    assert fail.kind is FailKind.COLD_REJECTED and fail.token == 4


def test_cold_start_failure_fails_every_waiter() -> None:
    p = idle_app()
    actions = p.feed(ColdStartJoin(1)) + p.feed(ColdStartJoin(2))
    p.spawn_all(actions)
    fails = of(Fail, p.feed(Exited(1, 2)))
    assert {(f.token, f.kind) for f in fails} == {
        (1, FailKind.COLD_FAILED),
        (2, FailKind.COLD_FAILED),
    }
    assert p.m.state == "error"
    assert not of(Spawn, p.feed(Tick(), at=5.0))  # no retry without a new request


def test_cold_start_times_out_each_waiter_at_its_own_deadline() -> None:
    p = idle_app()
    p.m.settings = replace(SETTINGS, startup_timeout=60.0)
    p.spawn_all(p.feed(ColdStartJoin(1), at=0.0))
    p.feed(ColdStartJoin(2), at=10.0)
    assert [f.token for f in of(Fail, p.feed(Tick(), at=30.0))] == [1]
    [late] = of(Fail, p.feed(Tick(), at=40.0))
    assert late.token == 2 and late.kind is FailKind.COLD_TIMEOUT


def test_cold_start_with_a_routable_instance_resolves_at_once() -> None:
    p = Playbook()
    p.running(0)
    [resolved] = of(Resolve, p.feed(ColdStartJoin(9)))
    assert resolved.value == p.m.backends()


@pytest.mark.parametrize(("start", "end"), [(1, 3), (3, 1), (2, 2)])
def test_scale_reaches_the_desired_count_then_resolves(start: int, end: int) -> None:
    p = Playbook()
    p.running(start)
    actions = p.feed(Scale(4, end))
    spawned = of(Spawn, actions)
    assert len(spawned) == max(0, end - start)
    actions += p.start_healthy(actions)
    actions += p.feed(Tick(), at=p.now + 0.1)
    for sig in of(Signal, actions):
        assert sig.sig is Sig.TERM
        actions += p.feed(Exited(sig.instance_id, -15))
    assert Resolve(4) in actions
    assert len(p.m.backends()) == end


def test_scale_down_stops_the_newest_instances_first() -> None:
    p = Playbook()
    p.running(3)
    p.feed(Scale(4, 1))
    actions = p.feed(Tick(), at=p.now + 0.1)
    assert sorted(s.instance_id for s in of(Signal, actions)) == [2, 3]


def test_a_drained_instance_gets_sigterm_only_after_the_minimum_drain() -> None:
    from dataclasses import replace

    p = Playbook()
    p.m.settings = replace(SETTINGS, drain_min=1.0)
    p.running(2)
    start = p.now
    assert of(Signal, p.feed(Scale(4, 1)) + p.feed(Tick(), at=start + 0.3)) == []
    actions = p.feed(Tick(), at=start + 1.1)
    assert [s.instance_id for s in of(Signal, actions)] == [2]


def test_scale_to_zero_keeps_a_warm_instance_until_idle() -> None:
    p = Playbook()
    p.running(2)
    actions = p.feed(Scale(4, 0)) + p.feed(Tick(), at=p.now + 0.1)
    assert [s.instance_id for s in of(Signal, actions)] == [2]
    assert Resolve(4) in p.feed(Exited(2, 0))
    assert [b.instance_id for b in p.m.backends()] == [1]


def test_restore_with_instances_starts_them_without_a_rollout() -> None:
    p = Playbook()
    actions = p.feed(Restore(spec("v1"), 2, 300))
    assert len(of(Spawn, actions)) == 2
    assert p.m.state == "running" and p.m.version == "v1"


def test_every_change_of_routable_backends_notifies() -> None:
    p = Playbook()
    p.spawn_all(p.feed(Deploy(1, spec("v1"), 1, 300)))
    assert of(Notify, p.probe(1, ok=True))
    assert not of(Notify, p.probe(1, ok=True))
    assert of(Notify, p.feed(Exited(1, -9)))


def test_settings_are_replaceable_for_tests() -> None:
    fast = replace(SETTINGS, startup_timeout=1.0)
    p = Playbook(fast)
    p.spawn_all(p.feed(Deploy(1, spec("v1"), 1, 300), at=0.0))
    assert Signal(1, Sig.KILL) in p.feed(Tick(), at=1.0)


def test_restore_as_stopped_registers_the_version_without_starting() -> None:
    p = Playbook()
    actions = p.feed(Restore(spec("v1"), 2, 300, stopped=True))
    assert not of(Spawn, actions)
    assert p.m.state == "stopped" and p.m.version == "v1" and not p.m.wants_cold_start
    assert len(of(Spawn, p.feed(Scale(3, 2)))) == 2
