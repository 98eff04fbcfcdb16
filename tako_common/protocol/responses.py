"""Response payloads of the management protocol: the ``data`` of every ``ok`` answer.

Rules: one model per answer shape; a handler returns one of these, never a dict, and the
client reads one of these, never a dict. Payloads ignore fields they do not know
(``extra="ignore"``), so a newer server that adds a field never breaks an older CLI;
renaming or removing a field is a protocol change (bump ``PROTOCOL_VERSION``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Feature names a server announces in ``hello`` (the client may check them).
CAPABILITIES: tuple[str, ...] = (
    "deploy_instances_idle_timeout",
    "on_demand_cold_start",
    "idle_scale_to_zero",
    "upgrade_mode_control",
    "server_runtime_info",
    "release_history",
    "rollback",
    "deploy_lock",
    "has_artifact",
    "logs_follow",
    "release_command",
    "exec",
    "storages",
    "backups",
    "maintenance",
    "images",
)


class Data(BaseModel):
    """Base of every response payload (lenient on unknown fields, immutable)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class HelloData(Data):
    protocol_version: int
    server_version: str
    capabilities: list[str]


TakeoverState = Literal["idle", "in_progress", "succeeded", "failed", "rolled_back"]


class TakeoverStatus(Data):
    """The last takeover (SIGHUP) the answering process started; ``idle`` before its first.

    ``attempt`` counts the takeovers this process started, so a new one always changes
    the status. ``failed``: no successor was started (deploys still running, the
    executable could not be started); ``rolled_back``: a successor was started but exited
    or missed the deadline; it was stopped, ``tako.sock`` points back at this process and
    the upgrading mode it took was left. After both this process keeps serving and
    ``error`` says why. ``succeeded``: ``successor_pid`` serves now; this one drains.
    Times are UTC ISO 8601.
    """

    state: TakeoverState = "idle"
    attempt: int = 0
    successor_pid: int | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class ServerInfoData(Data):
    """``server_info``. One process is named by ``pid`` + ``started_at`` (its start time
    as the kernel records it, so a reused pid never looks like the same process)."""

    server_version: str
    mode: Literal["normal", "upgrading"]
    upgrade_owner: str | None = None
    pid: int
    data_dir: str
    incoming_dir: str
    socket: str
    http_port: int
    https_port: int
    disk_free_bytes: int
    acme_enabled: bool
    acme_directory_url: str | None = None
    started_at: str | None = None
    #: the running executable (``/proc/self/exe``: the binary, or the venv's interpreter)
    executable: str | None = None
    #: the pid this process took over from (it was started by that one's SIGHUP takeover)
    took_over_from: int | None = None
    #: that process still runs (it drains its connections, then exits; a zombie has exited)
    predecessor_running: bool = False
    takeover: TakeoverStatus = Field(default_factory=TakeoverStatus)
    #: ``podman 4.3.1`` when container releases can run here, else ``unavailable: why``
    containers: str | None = None
    #: pinned runtimes provisioned on this host (``bun@1.1.38``); see docs/runtimes.md
    runtimes: list[str] = Field(default_factory=list)


class ArtifactData(Data):
    """``has_artifact``: is ``incoming/{sha256}.tar.zst`` there (and how big)?"""

    sha256: str
    present: bool
    size: int | None = None
    path: str = ""


class UpgradingData(Data):
    """``enter_upgrading``: the server is in upgrading mode since ``since``."""

    mode: Literal["upgrading"] = "upgrading"
    owner: str
    since: str


class NormalModeData(Data):
    """``exit_upgrading``: the server is back in normal mode."""

    mode: Literal["normal"] = "normal"
    owner: str


class LockData(Data):
    app: str
    env: str
    owner: str
    since: str


class UnlockData(Data):
    app: str
    env: str
    released: bool


class InstanceStatus(Data):
    id: int
    state: Literal["starting", "healthy", "unhealthy", "draining", "stopped", "failed"]
    version: str
    pid: int | None = None
    port: int | None = None
    uptime_secs: float = 0.0
    in_flight: int = 0
    requests_total: int = 0
    restarts: int = 0


class CertStatus(Data):
    host: str
    state: Literal["issued", "pending", "failed", "self_signed", "needs_dns01", "none"]
    not_after: str | None = None
    reason: str | None = None


AppState = Literal["running", "idle", "deploying", "stopped", "error"]


class AppStatus(Data):
    app: str
    env: str
    version: str | None
    state: AppState
    desired_instances: int
    healthy_instances: int
    instances: list[InstanceStatus] = Field(default_factory=list)
    routes: list[str] = Field(default_factory=list)
    idle_timeout: int = 300
    deployed_at: str | None = None
    last_error: str | None = None
    certificates: list[CertStatus] = Field(default_factory=list)
    #: why the last backup failed (``None`` when it succeeded or backups are off)
    backup_error: str | None = None
    #: maintenance mode: the edge answers 503 for the app (its instances keep running)
    maintenance: bool = False
    maintenance_message: str = ""
    maintenance_since: str | None = None


class StatusData(Data):
    apps: list[AppStatus]


class AppSummary(Data):
    """One line of ``list``: ``instances`` counts the live ones."""

    app: str
    env: str
    version: str | None
    state: AppState
    instances: int
    desired_instances: int
    routes: list[str] = Field(default_factory=list)


class ListData(Data):
    apps: list[AppSummary]


class AppRoutes(Data):
    app: str
    env: str
    routes: list[str]


class RoutesData(Data):
    routes: list[AppRoutes]


class ReleaseInfo(Data):
    version: str
    current: bool
    deployed_at: str | None = None
    commit_message: str | None = None
    git_dirty: bool | None = None


class ReleasesData(Data):
    app: str
    env: str
    releases: list[ReleaseInfo]


class DeployData(Data):
    """``deploy`` and ``rollback``: what runs now."""

    app: str
    env: str
    version: str
    new_app: bool
    instances: int
    replaced: int = 0
    routes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class StopData(Data):
    app: str
    env: str
    stopped: bool = True


class ScaleData(Data):
    app: str
    env: str
    instances: int


class DeleteData(Data):
    """``delete`` is idempotent: ``existed`` says whether there was anything to delete."""

    app: str
    env: str
    existed: bool


class SecretsData(Data):
    """``update_secrets``: ``restarted`` when running instances rolled with the new values."""

    app: str
    env: str
    restarted: bool
    count: int


class LogsData(Data):
    lines: list[str]


class MaintenanceData(Data):
    """``maintenance``: the mode now (``since`` when it was turned on, None when off)."""

    app: str
    env: str
    enabled: bool
    message: str = ""
    since: str | None = None


class PrepareData(Data):
    """``prepare``: the release is extracted and prepared; ``reused`` when it already was."""

    app: str
    env: str
    version: str
    reused: bool = False


class DiscardData(Data):
    """``discard``: ``removed`` when the prepared release's directory was deleted."""

    app: str
    env: str
    version: str
    removed: bool


class BackupInfo(Data):
    """One backup object in the bucket (``id`` is also its creation time, UTC)."""

    id: str
    server: str
    created_at: str
    size: int
    key: str


class BackupRun(Data):
    """One attempt to take a backup on this server; a failure carries its reason."""

    id: str
    trigger: Literal["schedule", "manual"]
    started_at: str
    finished_at: str | None = None
    ok: bool
    reason: str | None = None
    size: int | None = None
    sha256: str | None = None
    pruned: list[str] = Field(default_factory=list)


class BackupNowData(Data):
    """``backup_now``: the new backup, verified in the bucket (size and SHA-256)."""

    app: str
    env: str
    backup: BackupInfo
    sha256: str
    pruned: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class BackupListData(Data):
    app: str
    env: str
    backups: list[BackupInfo]


class BackupStatusData(Data):
    """``backup_status``: settings, the last runs and when the next one is due."""

    app: str
    env: str
    enabled: bool
    storage: str | None = None
    bucket: str | None = None
    endpoint: str | None = None
    server: str | None = None
    interval_hours: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    last_success: BackupRun | None = None
    last_run: BackupRun | None = None
    next_due: str | None = None
    runs: list[BackupRun] = Field(default_factory=list)


class BackupFetchData(Data):
    """``backup_fetch``: where the verified (still encrypted) copy waits on the server."""

    app: str
    env: str
    id: str
    path: str
    size: int
    sha256: str


class BackupFetchDoneData(Data):
    app: str
    env: str
    id: str
    removed: bool


class BackupRestoreData(Data):
    """``backup_restore``: the data was replaced; ``instances`` run again."""

    app: str
    env: str
    id: str
    from_server: str
    created_at: str
    files: int
    instances: int
