"""The per-app supervisor state machine: ``handle(event, now) -> list[Action]`` (pure).

No awaits, no clock, no processes: the runner feeds facts and commands in and executes
the actions that come out. Rules it enforces:

- a process exit is a fact the moment it is reported; an unexpected exit (or a dead or
  never-ready instance) is replaced after an exponential backoff (``restart_backoff_base``
  doubling up to ``restart_backoff_cap``), reset once an instance stayed healthy for
  ``backoff_reset_after``;
- an instance is routable only while ``healthy``; ``unhealthy_after`` failed probes in a
  row take it out, ``dead_after`` kill it;
- stopping drains: not routable at once, SIGTERM when in-flight reaches 0 (or after
  ``drain_timeout``), SIGKILL ``stop_grace`` later; idle scale-down needs in-flight == 0;
- a deploy is a :class:`RolloutPlan`; while it runs the desired-count reconciler is paused;
  a failed rollout stops the new instances and leaves version, desired count and old
  instances as they were;
- desired 0 keeps one warm instance (after a deploy or a cold start) until
  ``idle_timeout`` passes without activity; cold-start waiters share one start.
"""

from __future__ import annotations

from collections.abc import Iterable

from tako_common.protocol import AppState, InstanceStatus
from tako_server.edge.snapshot import Backend
from tako_server.supervisor.coldstart import ColdStartQueue
from tako_server.supervisor.events import (
    Action,
    ActivityReport,
    Adopted,
    ColdStartJoin,
    ColdStartLeave,
    Deploy,
    Event,
    Exited,
    Fail,
    FailKind,
    Notify,
    Outbox,
    ProbeDone,
    ProbeHealth,
    RequestSeen,
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
from tako_server.supervisor.instance import Instance, InstanceState, describe_exit
from tako_server.supervisor.rollout import RolloutPlan, StepKind
from tako_server.supervisor.spec import (
    LaunchSpec,
    RolloutResult,
    SupervisorSettings,
)

LOOPBACK = "127.0.0.1"


class _Deploying:
    """A deploy in progress: its plan, the caller's token and the values to commit."""

    def __init__(self, event: Deploy, plan: RolloutPlan) -> None:
        self.token = event.token
        self.spec = event.spec
        self.desired = event.desired
        self.idle_timeout = event.idle_timeout
        self.plan = plan


class AppMachine:
    """Everything the supervisor knows about one ``{app}/{env}``."""

    def __init__(self, key: str, settings: SupervisorSettings) -> None:
        self.key = key
        self.settings = settings
        self.spec: LaunchSpec | None = None
        self.desired = 0
        self.idle_timeout = 300
        self.instances: dict[int, Instance] = {}
        self.next_id = 1
        self.stopped = True
        self.warm = False
        self.last_activity = 0.0
        self.last_idle_check = 0.0
        self.crashes = 0
        self.last_crash_at = 0.0
        self.next_spawn_at = 0.0
        self.pending_restarts: list[int] = []
        self.last_error: str | None = None
        self.failing = False
        self.probe_failures = 0  # failed health checks of live instances (metrics)
        self.cold_starts = 0  # starts for waiting requests (metrics)
        self.deploying: _Deploying | None = None
        self.cold = ColdStartQueue(settings.cold_start_queue, settings.cold_start_timeout)
        self.stop_tokens: list[int] = []
        self.scale_tokens: list[int] = []
        self._in_flight: dict[str, dict[int, int]] = {}
        self._requests: dict[str, dict[int, int]] = {}

    # ------------------------------------------------------------------ queries

    def backends(self) -> tuple[Backend, ...]:
        return tuple(
            Backend(i.id, LOOPBACK, i.port)
            for i in sorted(self.instances.values(), key=lambda i: i.id)
            if i.is_routable and i.port is not None
        )

    @property
    def state(self) -> AppState:
        if self.deploying is not None:
            return "deploying"
        if self.stopped:
            return "error" if self.failing and self.spec is None else "stopped"
        if self.failing and not self.backends():
            return "error"
        if self.desired == 0 and not self.instances:
            return "idle"
        return "running"

    @property
    def version(self) -> str | None:
        return self.spec.version if self.spec else None

    @property
    def wants_cold_start(self) -> bool:
        return (
            self.spec is not None and not self.stopped and self.desired == 0 and not self.backends()
        )

    def instance_statuses(self, now: float) -> list[InstanceStatus]:
        return [i.status(now) for i in sorted(self.instances.values(), key=lambda i: i.id)]

    def _fingerprint(self) -> tuple[object, ...]:
        states = tuple((i.id, i.state) for i in self.instances.values())
        return (self.backends(), self.state, states)

    # ------------------------------------------------------------------ entry point

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event at time ``now``; return what the runner must do, in order."""
        before = self._fingerprint()
        out = Outbox()
        match event:
            case Tick():
                pass
            case Spawned():
                self._on_spawned(event, now, out)
            case SpawnFailed():
                self._on_spawn_failed(event, now, out)
            case ProbeDone():
                self._on_probe(event, now, out)
            case Exited():
                self._on_exited(event, now, out)
            case ActivityReport():
                self._on_activity(event, now)
            case RequestSeen():
                self._on_request(event, now)
            case Deploy():
                self._on_deploy(event, now, out)
            case Restore():
                self._on_restore(event, now, out)
            case Scale():
                self._on_scale(event, now, out)
            case Stop():
                self._on_stop(event, now, out)
            case ColdStartJoin():
                self._on_cold_join(event, now, out)
            case ColdStartLeave():
                self.cold.leave(event.token)
        self._advance(now, out)
        if self._fingerprint() != before:
            out.add(Notify())
        return out.actions

    def next_due(self) -> float | None:
        """The earliest time something waits for: a starting instance's next probe or a
        restart after its backoff (the runner wakes then instead of at its next tick)."""
        due = [
            i.next_probe_at
            for i in self.instances.values()
            if i.state is InstanceState.STARTING and i.wants_probe and i.port is not None
        ]
        if self.pending_restarts and self.spec is not None and not self.stopped:
            due.append(self.next_spawn_at)
        return min(due) if due else None

    # ------------------------------------------------------------------ process facts

    def _on_spawned(self, event: Spawned, now: float, out: Outbox) -> None:
        inst = self.instances.get(event.instance_id)
        if inst is None:
            return
        inst.pid, inst.port = event.pid, event.port
        inst.next_probe_at = now
        if inst.state is InstanceState.FAILED:
            out.add(Signal(inst.id, Sig.KILL))
        out.log(inst.id, f"started version {inst.spec.version}: pid {event.pid}, port {event.port}")

    def _on_spawn_failed(self, event: SpawnFailed, now: float, out: Outbox) -> None:
        inst = self.instances.pop(event.instance_id, None)
        if inst is None:
            return
        if not inst.is_live:
            return
        out.log(inst.id, f"could not start: {event.reason}")
        self._lost(
            inst, f"instance {inst.id} could not start: {event.reason}", now, out, starting=True
        )

    def _on_exited(self, event: Exited, now: float, out: Outbox) -> None:
        inst = self.instances.pop(event.instance_id, None)
        if inst is None:
            return
        self._forget_activity(inst.id)
        reason = describe_exit(event.returncode)
        if event.oom:
            limit = inst.spec.isolation.memory_mb if inst.spec.isolation else None
            reason = "killed by the OOM killer" + (
                f" (the app's memory limit is {limit} MiB)" if limit else ""
            )
        if inst.state in (InstanceState.DRAINING, InstanceState.FAILED):
            out.log(inst.id, f"stopped ({reason})")
            if self.deploying is not None:
                self.deploying.plan.on_gone(inst.id, f"instance {inst.id} exited ({reason})")
            return
        starting = inst.state is InstanceState.STARTING
        was = "during startup" if starting else "unexpectedly"
        out.log(inst.id, f"exited {was} ({reason})")
        self._lost(inst, f"instance {inst.id} exited {was} ({reason})", now, out, starting=starting)

    def _lost(
        self, inst: Instance, reason: str, now: float, out: Outbox, *, starting: bool
    ) -> None:
        """An instance died or was given up on: roll back, fail waiters, schedule a restart."""
        self.last_error = reason
        if self.deploying is not None:
            plan = self.deploying.plan
            if inst.id in plan.started:
                plan.on_failed(inst.id, reason)
                return
            plan.on_gone(inst.id, reason)
        if starting:
            self._fail_waiters(reason, out)
        self.crashes += 1
        self.last_crash_at = now
        delay = self.settings.backoff(self.crashes)
        self.next_spawn_at = now + delay
        self.pending_restarts.append(inst.restarts + 1)
        if not self.backends():
            self.failing = True
        if not self.stopped:
            out.log(inst.id, f"restarting in {delay:.2f}s (failure {self.crashes} in a row)")

    def _fail_waiters(self, reason: str, out: Outbox) -> None:
        """A start failed: scale callers fail; cold-start waiters fail unless one is routable."""
        for token in self.scale_tokens:
            out.add(Fail(token, FailKind.SCALE, f"app {self.key} failed to scale: {reason}"))
        self.scale_tokens.clear()
        if self.backends():
            return
        for token in self.cold.settle():
            out.add(Fail(token, FailKind.COLD_FAILED, f"app {self.key} failed to start: {reason}"))
        if self.desired == 0:
            self.warm = False

    def _on_probe(self, event: ProbeDone, now: float, out: Outbox) -> None:
        inst = self.instances.get(event.instance_id)
        if inst is None or not inst.probing:
            return
        inst.probing = False
        if not inst.is_live:
            return
        s = self.settings
        if event.ok:
            self._probe_ok(inst, now, out)
        else:
            inst.last_probe = event.detail
            if inst.state is not InstanceState.STARTING:
                self._probe_failed(inst, event.detail, now, out)
        if inst.state is InstanceState.STARTING:
            age = now - inst.created_at
            interval = min(s.startup_probe_interval, max(s.startup_probe_min, age / 4))
            inst.next_probe_at = now + interval
        else:
            inst.next_probe_at = now + s.health_interval

    def _probe_ok(self, inst: Instance, now: float, out: Outbox) -> None:
        inst.failures = 0
        if inst.state is InstanceState.STARTING:
            inst.ready_at = now
            out.log(inst.id, f"ready in {now - inst.created_at:.2f}s")
            if self.deploying is not None:
                self.deploying.plan.on_ready(inst.id)
        elif inst.state is InstanceState.UNHEALTHY:
            out.log(inst.id, "healthy again")
        if inst.state is not InstanceState.HEALTHY:
            inst.state = InstanceState.HEALTHY
            inst.healthy_since = now
            self.failing = False

    def _probe_failed(self, inst: Instance, detail: str, now: float, out: Outbox) -> None:
        s = self.settings
        inst.failures += 1
        self.probe_failures += 1
        if inst.failures >= s.dead_after:
            out.log(inst.id, f"dead after {inst.failures} failed health checks ({detail}): killing")
            self._kill(inst, out)
            reason = f"instance {inst.id} failed {inst.failures} health checks: {detail}"
            self._lost(inst, reason, now, out, starting=False)
        elif inst.failures >= s.unhealthy_after and inst.state is InstanceState.HEALTHY:
            out.log(inst.id, f"unhealthy after {inst.failures} failed health checks ({detail})")
            inst.state = InstanceState.UNHEALTHY
            inst.healthy_since = None

    def _on_activity(self, event: ActivityReport, now: float) -> None:
        previous = self._in_flight.get(event.reporter, {})
        current = {i: n for i, n in event.in_flight.items() if n > 0}
        busy = bool(current) or bool(previous)
        self._in_flight[event.reporter] = current
        if event.requests is not None:
            if dict(event.requests) != self._requests.get(event.reporter):
                busy = True
            self._requests[event.reporter] = dict(event.requests)
        if busy:
            self.last_activity = now
        for inst in self.instances.values():
            inst.in_flight = sum(m.get(inst.id, 0) for m in self._in_flight.values())
            inst.requests_total = sum(m.get(inst.id, 0) for m in self._requests.values())

    def _forget_activity(self, instance_id: int) -> None:
        for table in (*self._in_flight.values(), *self._requests.values()):
            table.pop(instance_id, None)

    def _on_request(self, event: RequestSeen, now: float) -> None:
        """A request was routed (to ``instance_id`` when known): marks activity."""
        self.last_activity = now
        instance_id = event.instance_id
        inst = self.instances.get(instance_id) if instance_id is not None else None
        if inst is not None:
            self._requests.setdefault("_noted", {})
            table = self._requests["_noted"]
            table[inst.id] = table.get(inst.id, 0) + 1
            inst.requests_total += 1

    # ------------------------------------------------------------------ commands

    def _on_deploy(self, event: Deploy, now: float, out: Outbox) -> None:
        if self.deploying is not None:
            out.add(
                Fail(event.token, FailKind.ROLLOUT, f"a deploy of {self.key} is already running")
            )
            return
        old = sorted(
            (i for i in self.instances.values() if i.is_live),
            key=lambda i: (i.state is InstanceState.HEALTHY, i.id),
        )
        plan = RolloutPlan(event.spec.version, max(1, event.desired), [i.id for i in old])
        self.deploying = _Deploying(event, plan)
        out.log(
            None,
            f"deploying version {event.spec.version}: {plan.target} instance(s), "
            f"replacing {len(old)}",
        )

    def _on_restore(self, event: Restore, now: float, out: Outbox) -> None:
        self.spec, self.desired, self.idle_timeout = event.spec, event.desired, event.idle_timeout
        self.stopped, self.warm, self.last_activity = event.stopped, False, now
        what = "stopped" if event.stopped else f"with {event.desired} instance(s)"
        out.log(None, f"restoring version {event.spec.version} {what}")
        for adopted in event.adopted:
            self._adopt(event.spec, adopted, now, out)
        self.warm = self.desired == 0 and bool(event.adopted)

    def _adopt(self, spec: LaunchSpec, adopted: Adopted, now: float, out: Outbox) -> None:
        """A running instance a previous daemon started: healthy at once (the old daemon
        routed to it), probed from now on like any other."""
        inst = Instance(adopted.instance_id, spec, created_at=now, state=InstanceState.HEALTHY)
        inst.pid, inst.port = adopted.pid, adopted.port
        inst.ready_at = inst.healthy_since = inst.next_probe_at = now
        self.instances[inst.id] = inst
        self.next_id = max(self.next_id, inst.id + 1)
        out.log(inst.id, f"adopted version {spec.version}: pid {adopted.pid}, port {adopted.port}")

    def _on_scale(self, event: Scale, now: float, out: Outbox) -> None:
        if self.spec is None:
            out.add(Fail(event.token, FailKind.SCALE, f"app {self.key} has no deployed version"))
            return
        self.desired, self.stopped = event.desired, False
        self.warm = event.desired == 0 and any(i.is_live for i in self.instances.values())
        self.last_activity = now
        self.next_spawn_at = min(self.next_spawn_at, now)
        self.scale_tokens.append(event.token)
        out.log(None, f"scaling to {event.desired} instance(s)")

    def _on_stop(self, event: Stop, now: float, out: Outbox) -> None:
        if self.deploying is not None:
            self._abort_rollout("the app was stopped during the deploy", now, out)
        self.stopped, self.warm = True, False
        for inst in list(self.instances.values()):
            self._drain(inst, now, out)
        for token in self.cold.settle():
            out.add(Fail(token, FailKind.COLD_FAILED, f"app {self.key} is stopped"))
        for token in self.scale_tokens:
            out.add(Fail(token, FailKind.SCALE, f"app {self.key} was stopped"))
        self.scale_tokens.clear()
        self.stop_tokens.append(event.token)
        out.log(None, "stopping all instances")

    def _on_cold_join(self, event: ColdStartJoin, now: float, out: Outbox) -> None:
        backends = self.backends()
        if backends:
            out.add(Resolve(event.token, backends))
        elif self.spec is None or self.stopped:
            out.add(Fail(event.token, FailKind.COLD_FAILED, f"app {self.key} is not running"))
        elif not self.cold.join(event.token, now):
            out.add(
                Fail(
                    event.token,
                    FailKind.COLD_REJECTED,
                    f"cold start queue of {self.key} is full ({self.cold.limit} waiting)",
                )
            )
        else:
            if self.cold.waiting == 1:
                self.cold_starts += 1
                out.log(None, "cold start: a request is waiting for an instance")
            self.warm, self.last_activity = True, now
            self.next_spawn_at = min(self.next_spawn_at, now)

    # ------------------------------------------------------------------ stopping

    def _drain(self, inst: Instance, now: float, out: Outbox) -> None:
        if inst.state is InstanceState.DRAINING:
            return
        if inst.state is InstanceState.FAILED:
            return
        inst.state = InstanceState.DRAINING
        inst.drain_started = now
        out.log(inst.id, f"draining ({inst.in_flight} request(s) in flight)")

    def _kill(self, inst: Instance, out: Outbox) -> None:
        inst.state = InstanceState.FAILED
        if inst.pid is not None:
            out.add(Signal(inst.id, Sig.KILL))

    def _advance_drain(self, inst: Instance, now: float, out: Outbox) -> None:
        s = self.settings
        if inst.pid is None:
            return
        if inst.term_sent_at is None:
            started = inst.drain_started or 0.0
            waited = now - started
            settled = inst.in_flight == 0 and waited >= min(s.drain_min, s.drain_timeout)
            if settled or waited >= s.drain_timeout:
                inst.term_sent_at = now
                out.add(Signal(inst.id, Sig.TERM))
        elif inst.kill_sent_at is None and now - inst.term_sent_at >= s.stop_grace:
            inst.kill_sent_at = now
            out.log(inst.id, f"still running {s.stop_grace:.1f}s after SIGTERM: sending SIGKILL")
            out.add(Signal(inst.id, Sig.KILL))

    # ------------------------------------------------------------------ time and goals

    def _advance(self, now: float, out: Outbox) -> None:
        for inst in list(self.instances.values()):
            self._advance_instance(inst, now, out)
        self._advance_backoff_reset(now)
        self._advance_cold(now, out)
        self._advance_idle(now, out)
        if self.deploying is not None:
            self._advance_rollout(now, out)
        if self.deploying is None and not self.stopped and self.spec is not None:
            self._reconcile(now, out)
        self._settle_tokens(out)

    def _advance_instance(self, inst: Instance, now: float, out: Outbox) -> None:
        s = self.settings
        if inst.state is InstanceState.DRAINING:
            self._advance_drain(inst, now, out)
            return
        if inst.state is InstanceState.STARTING and now - inst.created_at >= s.startup_timeout:
            reason = (
                f"instance {inst.id} not ready within {s.startup_timeout:g}s "
                f"(last health check: {inst.last_probe})"
            )
            out.log(inst.id, f"not ready within {s.startup_timeout:g}s: killing")
            self._kill(inst, out)
            self._lost(inst, reason, now, out, starting=True)
            return
        if inst.wants_probe and now >= inst.next_probe_at and inst.port is not None:
            inst.probing = True
            out.add(ProbeHealth(inst.id, inst.port))

    def _advance_backoff_reset(self, now: float) -> None:
        """The crash count resets once an instance that became healthy *after* the last
        crash stays healthy long enough (a stable sibling proves nothing)."""
        if self.crashes and any(
            i.healthy_since is not None
            and i.healthy_since >= self.last_crash_at
            and now - i.healthy_since >= self.settings.backoff_reset_after
            for i in self.instances.values()
        ):
            self.crashes = 0

    def _advance_cold(self, now: float, out: Outbox) -> None:
        for token in self.cold.expire(now):
            out.add(
                Fail(
                    token,
                    FailKind.COLD_TIMEOUT,
                    f"app {self.key} was not ready within {self.settings.cold_start_timeout:g}s",
                )
            )
        backends = self.backends()
        if backends and self.cold.waiting:
            for token in self.cold.settle():
                out.add(Resolve(token, backends))

    def _advance_idle(self, now: float, out: Outbox) -> None:
        s = self.settings
        if self.desired != 0 or not self.warm or self.deploying is not None:
            return
        if now - self.last_idle_check < s.idle_check_interval:
            return
        self.last_idle_check = now
        busy = any(i.in_flight for i in self.instances.values()) or self.cold.waiting
        if not busy and now - self.last_activity >= self.idle_timeout:
            self.warm = False
            out.log(None, f"no requests for {self.idle_timeout}s: scaling to zero")

    def _advance_rollout(self, now: float, out: Outbox) -> None:
        assert self.deploying is not None
        plan = self.deploying.plan
        for step in plan.next_steps():
            if step.kind is StepKind.START_NEW:
                plan.on_started(self._spawn(self.deploying.spec, now, out, restarts=0))
            elif step.instance_id is not None and step.instance_id in self.instances:
                self._drain(self.instances[step.instance_id], now, out)
        if plan.is_failed:
            self._abort_rollout(plan.failure or "a new instance failed", now, out)
        elif plan.is_done:
            self._commit_rollout(now, out)

    def _commit_rollout(self, now: float, out: Outbox) -> None:
        d = self.deploying
        assert d is not None
        self.deploying = None
        self.spec, self.desired, self.idle_timeout = d.spec, d.desired, d.idle_timeout
        self.stopped, self.failing, self.last_error = False, False, None
        self.warm, self.last_activity, self.crashes = d.desired == 0, now, 0
        self.pending_restarts.clear()
        out.log(None, f"deployed version {d.spec.version} ({len(d.plan.ready)} instance(s))")
        result = RolloutResult(d.spec.version, len(d.plan.ready), d.plan.replaced, d.desired == 0)
        out.add(Resolve(d.token, result))

    def _abort_rollout(self, reason: str, now: float, out: Outbox) -> None:
        d = self.deploying
        assert d is not None
        self.deploying = None
        for iid in d.plan.started:
            inst = self.instances.get(iid)
            if inst is None:
                continue
            if inst.state is InstanceState.HEALTHY:
                self._drain(inst, now, out)
            else:
                self._kill(inst, out)
        self.last_error = reason
        if self.spec is None:
            self.failing = True
        keeps = f"version {self.spec.version} keeps serving" if self.spec else "nothing was running"
        out.log(None, f"deploy of version {d.spec.version} failed: {reason}; {keeps}")
        message = f"deploy of {self.key} version {d.spec.version} failed: {reason}; {keeps}"
        out.add(Fail(d.token, FailKind.ROLLOUT, message))
        self._fail_waiters(reason, out)

    def _target(self) -> int:
        if self.desired > 0:
            return self.desired
        return 1 if self.warm else 0

    def _reconcile(self, now: float, out: Outbox) -> None:
        assert self.spec is not None
        live = [i for i in self.instances.values() if i.is_live]
        target = self._target()
        if len(live) < target and now >= self.next_spawn_at:
            for _ in range(target - len(live)):
                restarts = self.pending_restarts.pop(0) if self.pending_restarts else 0
                self._spawn(self.spec, now, out, restarts=restarts)
        elif len(live) > target:
            for inst in _scale_down_order(live)[: len(live) - target]:
                self._drain(inst, now, out)

    def _spawn(self, spec: LaunchSpec, now: float, out: Outbox, *, restarts: int) -> int:
        iid = self.next_id
        self.next_id += 1
        self.instances[iid] = Instance(iid, spec, created_at=now, restarts=restarts)
        out.add(Spawn(iid, spec))
        return iid

    def _settle_tokens(self, out: Outbox) -> None:
        if self.stop_tokens and not self.instances:
            for token in self.stop_tokens:
                out.add(Resolve(token))
            self.stop_tokens.clear()
        if self.scale_tokens and self._is_settled():
            for token in self.scale_tokens:
                out.add(Resolve(token))
            self.scale_tokens.clear()

    def _is_settled(self) -> bool:
        target = self._target()
        states = [i.state for i in self.instances.values()]
        return len(states) == target and all(s is InstanceState.HEALTHY for s in states)

    def __repr__(self) -> str:
        return (
            f"AppMachine({self.key!r}, state={self.state}, version={self.version!r}, "
            f"desired={self.desired}, instances={list(self.instances.values())})"
        )


def _scale_down_order(live: Iterable[Instance]) -> list[Instance]:
    """Victims first: not-yet-healthy ones, then idle before busy, then the newest."""
    return sorted(
        live,
        key=lambda i: (i.state is InstanceState.HEALTHY, i.in_flight > 0, -i.id),
    )
