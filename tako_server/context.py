"""What every command handler needs, built once by the daemon and passed down.

Rules: no globals; the supervisor and the certificate manager are described by the
small protocols below (the real classes live in ``tako_server.supervisor`` and
``tako_server.tls``), so handlers depend on behaviour, not on construction details.
Background work goes through :class:`~tako_common.tasks.TaskGroup` (every task named,
referenced until it finishes, failures logged; :mod:`tako_common.tasks`). What
``server_info`` says about takeovers is read from ``takeover``, the record that
:mod:`tako_server.takeover` keeps. What the edge routes with lives in ``routing``
(:mod:`tako_server.routing`), shared with the supervisor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from tako_common.layout import ServerLayout
from tako_common.tasks import TaskGroup
from tako_server.cgroups import CgroupTree
from tako_server.credential_store import CredentialStore
from tako_server.guard import MutationGuard
from tako_server.locks import DeployLocks
from tako_server.routing import RoutingState
from tako_server.secrets_store import SecretsStore
from tako_server.settings import ServerSettings
from tako_server.staging import StagedReleases
from tako_server.state import StateStore
from tako_server.storage_store import StorageStore
from tako_server.supervisor.spec import AppRuntime, LaunchSpec, RolloutResult
from tako_server.takeover import TakeoverRecord
from tako_server.workflows.service import WorkflowService


class AppLogLike(Protocol):
    def history(self, n: int) -> list[str]: ...
    def follow(self) -> AsyncIterator[str]: ...


class SupervisorLike(Protocol):
    async def deploy(self, spec: LaunchSpec, desired: int, idle_timeout: int) -> RolloutResult: ...
    async def restore(self, spec: LaunchSpec, desired: int, idle_timeout: int) -> None: ...
    async def scale(self, key: str, desired: int) -> None: ...
    async def stop(self, key: str) -> None: ...
    async def remove(self, key: str) -> None: ...
    def status(self, key: str) -> AppRuntime | None: ...
    def keys(self) -> list[str]: ...
    def log(self, key: str) -> AppLogLike: ...
    async def shutdown(self) -> None: ...


class CertsLike(Protocol):
    def ensure_hosts(self, hosts: Iterable[str], plan: Any = None) -> list[Any]: ...
    def forget(self, hosts: Iterable[str]) -> None: ...
    def status(self, host: str) -> Any | None: ...


def utc_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class ServerContext:
    settings: ServerSettings
    state: StateStore
    secrets: SecretsStore
    supervisor: SupervisorLike
    locks: DeployLocks
    tasks: TaskGroup
    certs: CertsLike | None = None
    #: the cgroup tree (v2 or v1) of per-app limits (None: the reduced mode, no limits)
    cgroups: CgroupTree | None = None
    #: what the edge routes with; the app service sets routes, public dirs, running/stopped
    routing: RoutingState = field(default_factory=RoutingState)
    socket_path: str = ""
    pid: int = 0
    #: this process's start and takeovers (old and new side), as ``server_info`` reports them
    takeover: TakeoverRecord = field(default_factory=TakeoverRecord.of_this_process)
    #: releases a deploy prepared but has not rolled out yet (deploys with a release command)
    staging: StagedReleases = field(default_factory=StagedReleases)
    #: (``deploy``/``rollback``, app key, ``ok``/``error``) -> count, for the metrics
    events: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: the one guard of state-changing requests (its ``in_flight`` is what a takeover awaits)
    guard: MutationGuard = field(init=False)
    #: storage bindings and backup settings per app, sealed with the secrets key
    storage: StorageStore = field(init=False)
    #: worker groups, job queues and schedules (None: a server built without them, tests)
    workflows: WorkflowService | None = None
    #: provider credentials per app (``tako credentials``), sealed with the secrets key
    credentials: CredentialStore = field(init=False)

    def __post_init__(self) -> None:
        self.guard = MutationGuard(self.state, self.locks)
        self.storage = StorageStore(self.secrets.box, self.state)
        self.credentials = CredentialStore(self.secrets.box, self.state)

    @property
    def layout(self) -> ServerLayout:
        return self.settings.layout
