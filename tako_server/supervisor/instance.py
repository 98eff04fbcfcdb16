"""One app instance as the state machine sees it (pure data + small predicates).

States: ``starting`` (spawned, not yet answering ``/status``), ``healthy`` (routable),
``unhealthy`` (failed ``unhealthy_after`` probes in a row: not routable, still probed),
``draining`` (told to stop: not routable, waiting for in-flight requests, then SIGTERM,
then SIGKILL), ``failed`` (dead or never ready: SIGKILL sent, waiting for the exit).
An instance leaves the machine when its process exit is reported.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from tako_common.protocol import InstanceStatus
from tako_server.supervisor.spec import LaunchSpec


class InstanceState(enum.Enum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass
class Instance:
    id: int
    spec: LaunchSpec
    created_at: float
    restarts: int = 0
    state: InstanceState = InstanceState.STARTING
    pid: int | None = None
    port: int | None = None
    ready_at: float | None = None
    healthy_since: float | None = None
    failures: int = 0
    last_probe: str = "no probe answered yet"
    probing: bool = False
    next_probe_at: float = 0.0
    drain_started: float | None = None
    term_sent_at: float | None = None
    kill_sent_at: float | None = None
    in_flight: int = 0
    requests_total: int = 0

    @property
    def is_spawned(self) -> bool:
        return self.port is not None

    @property
    def is_live(self) -> bool:
        """Counts toward the desired number: not on its way out."""
        return self.state in (
            InstanceState.STARTING,
            InstanceState.HEALTHY,
            InstanceState.UNHEALTHY,
        )

    @property
    def is_routable(self) -> bool:
        return self.state is InstanceState.HEALTHY and self.port is not None

    @property
    def wants_probe(self) -> bool:
        return self.is_live and self.is_spawned and not self.probing

    def status(self, now: float) -> InstanceStatus:
        return InstanceStatus(
            id=self.id,
            state=self.state.value,
            version=self.spec.version,
            pid=self.pid,
            port=self.port,
            uptime_secs=round(max(0.0, now - self.created_at), 3),
            in_flight=self.in_flight,
            requests_total=self.requests_total,
            restarts=self.restarts,
        )

    def __repr__(self) -> str:
        return (
            f"Instance(id={self.id}, state={self.state.value}, version={self.spec.version!r}, "
            f"pid={self.pid}, port={self.port}, in_flight={self.in_flight})"
        )


def describe_exit(returncode: int | None) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` (asyncio reports signals as negative codes);
    None: an adopted process (not a child of this daemon, so its code is unknown)."""
    if returncode is None:
        return "exit status unknown: adopted from an earlier tako-server"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"
