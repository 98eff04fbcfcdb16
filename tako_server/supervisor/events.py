"""Events fed to, and actions returned by, the per-app state machine (plain values).

Events are facts (a probe answered, a process exited, a command arrived, time passed);
actions are what the runner must do (spawn, probe, signal, log, resolve a waiting
caller). Waiting callers are named by integer tokens the runner maps to futures.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from tako_server.edge.snapshot import Backend
from tako_server.supervisor.spec import LaunchSpec, RolloutResult

# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class Tick:
    """Time passed; timers (probes, startup timeout, drain, backoff, idle) are checked."""


@dataclass(frozen=True)
class Spawned:
    instance_id: int
    pid: int
    port: int


@dataclass(frozen=True)
class SpawnFailed:
    instance_id: int
    reason: str


@dataclass(frozen=True)
class ProbeDone:
    instance_id: int
    ok: bool
    detail: str


@dataclass(frozen=True)
class Exited:
    """The process ended; ``returncode`` is None for an adopted process (not our child)."""

    instance_id: int
    returncode: int | None
    oom: bool = False  # the kernel's OOM killer ended it (the app's cgroup memory limit)


@dataclass(frozen=True)
class ActivityReport:
    reporter: str
    in_flight: Mapping[int, int]
    requests: Mapping[int, int] | None = None


@dataclass(frozen=True)
class RequestSeen:
    """One request was routed to the app (to ``instance_id`` when known)."""

    instance_id: int | None = None


@dataclass(frozen=True)
class Deploy:
    token: int
    spec: LaunchSpec
    desired: int
    idle_timeout: int


@dataclass(frozen=True)
class Adopted:
    """A running instance of the restored version that a previous daemon started."""

    instance_id: int
    pid: int
    port: int


@dataclass(frozen=True)
class Restore:
    spec: LaunchSpec
    desired: int
    idle_timeout: int
    stopped: bool = False
    adopted: tuple[Adopted, ...] = ()


@dataclass(frozen=True)
class Scale:
    token: int
    desired: int


@dataclass(frozen=True)
class Stop:
    token: int


@dataclass(frozen=True)
class ColdStartJoin:
    token: int


@dataclass(frozen=True)
class ColdStartLeave:
    token: int


Event = (
    Tick
    | Spawned
    | SpawnFailed
    | ProbeDone
    | Exited
    | ActivityReport
    | RequestSeen
    | Deploy
    | Restore
    | Scale
    | Stop
    | ColdStartJoin
    | ColdStartLeave
)

# ------------------------------------------------------------------ actions


class Sig(enum.Enum):
    TERM = "SIGTERM"
    KILL = "SIGKILL"


class FailKind(enum.Enum):
    ROLLOUT = "rollout"
    COLD_REJECTED = "cold_rejected"
    COLD_FAILED = "cold_failed"
    COLD_TIMEOUT = "cold_timeout"
    SCALE = "scale"


@dataclass(frozen=True)
class Spawn:
    instance_id: int
    spec: LaunchSpec


@dataclass(frozen=True)
class ProbeHealth:
    instance_id: int
    port: int


@dataclass(frozen=True)
class Signal:
    instance_id: int
    sig: Sig


@dataclass(frozen=True)
class Log:
    instance_id: int | None
    message: str


@dataclass(frozen=True)
class Notify:
    """Routable backends or states changed: the edge should re-snapshot."""


@dataclass(frozen=True)
class Resolve:
    token: int
    value: RolloutResult | tuple[Backend, ...] | None = None


@dataclass(frozen=True)
class Fail:
    token: int
    kind: FailKind
    message: str


Action = Spawn | ProbeHealth | Signal | Log | Notify | Resolve | Fail


@dataclass
class Outbox:
    """Collects the actions of one ``handle`` call."""

    actions: list[Action] = field(default_factory=list)

    def add(self, action: Action) -> None:
        self.actions.append(action)

    def log(self, instance_id: int | None, message: str) -> None:
        self.actions.append(Log(instance_id, message))
