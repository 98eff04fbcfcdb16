"""Value types of the supervisor: what to launch, its settings, its answers and its errors.

Rules: everything here is an immutable value or an error; nothing does I/O. ``LaunchSpec``
is built by the daemon from a release and holds what the processes need (what the edge
needs, such as the ``public/`` directory, goes to :mod:`tako_server.routing` instead);
the supervisor adds ``HOST``, ``PORT`` and ``TAKO_INSTANCE`` itself. Backends are the
edge's :class:`~tako_server.edge.snapshot.Backend` (one value, no conversion). The
cold-start errors are the supervisor's; the daemon's edge hooks translate them into the
edge's :class:`~tako_server.edge.hooks.ColdStartError`. Times are seconds (floats);
counts are ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tako_common.errors import TakoError
from tako_common.protocol import (
    AppState,  # the one definition (status replies)
    InstanceStatus,
)
from tako_server.cgroups import AppCgroup


@dataclass(frozen=True)
class ContainerRun:
    """How a container release runs: its image on the host's Podman and the limits.

    ``socket`` is the Podman API socket (Docker-compatible); ``mounts`` are host
    directories bind-mounted at the same path (the app's data directories)."""

    image: str
    socket: Path
    memory_mb: int = 512
    pids_limit: int = 512
    read_only: bool = True
    mounts: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Isolation:
    """Who an app's processes run as and where (``docs/server.md``, "Security"): its own
    uid/gid (None: the server's), its cgroup with the app's limits (v2 or v1; None: no
    limits), and the memory limit (for the OOM message)."""

    uid: int | None = None
    gid: int | None = None
    cgroup: AppCgroup | None = None
    memory_mb: int | None = None


@dataclass(frozen=True)
class LaunchSpec:
    """How to run one release of ``{app}/{env}`` (a process, or a container when
    ``container`` is set)."""

    app: str
    env: str
    version: str
    workdir: Path
    command: list[str]
    environ: dict[str, str]
    log_dir: Path
    container: ContainerRun | None = None
    isolation: Isolation | None = None

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"

    def __hash__(self) -> int:  # lists/dicts inside: hash the identity fields only
        return hash((self.app, self.env, self.version, str(self.workdir)))


@dataclass(frozen=True)
class SupervisorSettings:
    """Every timing and limit of the supervisor; tests pass small values."""

    health_interval: float = 1.0
    unhealthy_after: int = 2
    dead_after: int = 5
    startup_timeout: float = 30.0
    drain_timeout: float = 30.0
    # the edge reports in-flight counts in batches (~250 ms) and workers learn of a
    # drain by snapshot: an instance drains at least this long before SIGTERM
    drain_min: float = 1.0
    restart_backoff_cap: float = 30.0
    cold_start_queue: int = 100
    cold_start_timeout: float = 30.0
    idle_check_interval: float = 1.0
    # additions (not in the shared interface, all optional)
    startup_probe_interval: float = 0.1
    # a starting instance is probed after a quarter of its age so far (at least this,
    # at most startup_probe_interval): a 40 ms boot is seen ready ~10 ms later, not 100
    startup_probe_min: float = 0.005
    probe_timeout: float = 2.0
    restart_backoff_base: float = 0.5
    backoff_reset_after: float = 30.0
    stop_grace: float = 10.0
    tick_interval: float = 0.1
    log_max_bytes: int = 10 * 1024 * 1024
    log_tail_lines: int = 30

    def backoff(self, failures: int) -> float:
        """Delay before restart number ``failures`` (1-based): base doubling, capped."""
        if failures <= 0:
            return 0.0
        return float(min(self.restart_backoff_cap, self.restart_backoff_base * 2 ** (failures - 1)))


@dataclass(frozen=True)
class RolloutResult:
    """What a successful deploy did."""

    version: str
    instances: int
    replaced: int
    warm: bool = False


@dataclass(frozen=True)
class AppRuntime:
    """``Supervisor.status(key)``: the live state of one app."""

    key: str
    state: AppState
    version: str | None
    desired: int
    idle_timeout: int
    instances: list[InstanceStatus] = field(default_factory=list)
    last_error: str | None = None
    probe_failures: int = 0  # failed health checks since the daemon started
    cold_starts: int = 0  # instance starts for waiting requests since the daemon started

    @property
    def healthy(self) -> int:
        return sum(1 for i in self.instances if i.state == "healthy")


class SupervisorError(TakoError):
    """A supervisor operation broke a rule (unknown app, scale that did not settle, ...)."""

    code = "supervisor"


class UnknownApp(SupervisorError):
    code = "unknown_app"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"app {key!r} is not registered with the supervisor", hint="deploy it first"
        )


class RolloutError(SupervisorError):
    """A new version did not become healthy; the old one keeps serving."""

    code = "rollout_failed"

    def __init__(self, message: str, *, log_tail: list[str] | None = None, hint: str | None = None):
        super().__init__(message, hint=hint or "see the app log lines above (tako logs)")
        self.log_tail = list(log_tail or [])


class ColdStartRejected(SupervisorError):
    """The cold-start queue is full: the edge answers 503 with ``Retry-After: 1``."""

    code = "cold_start_rejected"


class ColdStartFailed(SupervisorError):
    """The instance started for waiting requests failed: the edge answers 502."""

    code = "cold_start_failed"


class ColdStartTimeout(SupervisorError):
    """No instance became ready in time: the edge answers 504."""

    code = "cold_start_timeout"
