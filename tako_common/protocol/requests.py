"""Request models of the management protocol and the command registry derived from them.

Rules:

- one model per command, tagged by a ``command`` literal; :data:`Request` is their
  discriminated union and the ONLY list of commands: :data:`REQUEST_MODELS`,
  :data:`COMMANDS`, :data:`MUTATING_COMMANDS` and :data:`SLOW_COMMANDS` are derived from
  it, and so are the server's handler table and the client's timeouts;
- every model declares, in its own class body, ``mutates`` (the server refuses it while
  upgrading and a takeover waits until none runs) and ``slow`` (it prepares releases or
  rolls instances: the client waits minutes, not seconds); a model that forgets either
  fails at import;
- ``exclusive`` requests (app-scoped, mutating) run as the app's one operation: refused
  when another connection holds the app's deploy lock or another operation of the app
  runs;
- requests are strict: unknown fields are refused (``extra="forbid"``), integers and
  booleans must be JSON integers and booleans.
"""

from __future__ import annotations

import typing
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tako_common.credentials import CredentialMap
from tako_common.protocol.fields import (
    AppName,
    Argv,
    ArtifactName,
    Count,
    EnvMap,
    EnvName,
    Flag,
    MaintenanceMessage,
    Owner,
    Sha256,
    ShellCommand,
    SubDir,
    TermName,
    Version,
)
from tako_common.protocol.images import ImageSettings
from tako_common.protocol.storage import BackupId, BackupSettings, StorageBinding


class Message(BaseModel):
    """Base of every request: strict about fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Refused while the server is upgrading; counted as in flight (a takeover waits).
    mutates: ClassVar[bool]
    #: Prepares a release or rolls instances: the client waits DEPLOY_TIMEOUT for it.
    slow: ClassVar[bool]
    #: Runs as the app's one operation under its deploy lock (app-scoped requests only).
    exclusive: ClassVar[bool] = False


class AppRef(Message):
    """Every app-scoped command names the remote identity ``{app}/{env}``."""

    app: AppName
    env: EnvName

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"

    @property
    def lock_owner(self) -> str | None:
        """The deploy-lock owner this request acts for (its own connection otherwise)."""
        return None


class HelloRequest(Message):
    command: Literal["hello"] = "hello"
    protocol_version: Count = Field(ge=0)
    client_version: str = ""
    mutates, slow = False, False


class ServerInfoRequest(Message):
    command: Literal["server_info"] = "server_info"
    mutates, slow = False, False


class ContainerManifest(BaseModel):
    """A container release: its artifact holds the image archive ``image.tar`` (what
    ``podman save`` / ``docker save`` wrote); see docs/containers.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the tag the client built (informational: the server tags the loaded image itself)
    built_tag: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
    #: ``container_read_only = false`` in tako.toml: a writable root file system
    read_only: Flag = True


class ReleaseManifest(BaseModel):
    """What the server needs to run a release; written (without secrets) to ``app.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Literal["bun", "node", "deno", "python", "go", "binary", "container"]
    #: a pinned version (``bun@1.2.3``); the server provisions it (docs/runtimes.md)
    runtime_version: str | None = Field(default=None, pattern=r"^[0-9][0-9A-Za-z.+_-]{0,63}$")
    main: str = Field(min_length=1, max_length=1024)
    start: list[str] | None = None
    install: str | None = None
    app_subdir: SubDir = "."
    # JS apps: the package manager of the server's production install (bun/node; None =
    # the runtime's own) and where channels/workflows live (tako.toml app_root)
    package_manager: Literal["bun", "npm", "pnpm", "yarn"] | None = None
    app_root: SubDir | None = None
    commit: str | None = None
    commit_message: str | None = Field(default=None, max_length=4096)
    git_dirty: Flag = False
    #: ``[images]`` resolved (None: no image endpoint); see docs/images.md
    images: ImageSettings | None = None
    #: set for container releases (``runtime = "container"``)
    container: ContainerManifest | None = None

    @model_validator(mode="after")
    def _container_runtime(self) -> ReleaseManifest:
        if (self.runtime == "container") != (self.container is not None):
            raise ValueError("runtime 'container' and the 'container' settings go together")
        return self


class DeployRequest(AppRef):
    command: Literal["deploy"] = "deploy"
    version: Version
    artifact: ArtifactName
    sha256: Sha256
    routes: list[str] = Field(min_length=1)
    manifest: ReleaseManifest
    vars: EnvMap = Field(default_factory=dict)
    secrets: EnvMap = Field(default_factory=dict)
    instances: Count | None = Field(default=None, ge=0, le=64)
    idle_timeout: Count = Field(default=300, ge=0, le=7 * 24 * 3600)
    owner: Owner | None = None
    #: ``[envs.<env>].storages`` resolved (S3 credentials included); see docs/storages.md
    storages: list[StorageBinding] = Field(default_factory=list, max_length=64)
    #: ``[envs.<env>].backup`` resolved, with the backup keys; see docs/backups.md
    backup: BackupSettings | None = None
    #: provider credentials (``tako credentials``) tako-server itself uses; never app vars
    credentials: CredentialMap = Field(default_factory=dict)
    mutates, slow, exclusive = True, True, True

    @property
    def lock_owner(self) -> str | None:
        return self.owner


class StatusRequest(Message):
    command: Literal["status"] = "status"
    app: AppName | None = None
    env: EnvName | None = None
    mutates, slow = False, False


class ListRequest(Message):
    command: Literal["list"] = "list"
    mutates, slow = False, False


class RoutesRequest(Message):
    command: Literal["routes"] = "routes"
    mutates, slow = False, False


class ListReleasesRequest(AppRef):
    command: Literal["list_releases"] = "list_releases"
    mutates, slow = False, False


class RollbackRequest(AppRef):
    command: Literal["rollback"] = "rollback"
    version: Version
    mutates, slow, exclusive = True, True, True


class StopRequest(AppRef):
    command: Literal["stop"] = "stop"
    mutates, slow, exclusive = True, True, True


class DeleteRequest(AppRef):
    command: Literal["delete"] = "delete"
    mutates, slow, exclusive = True, True, True


class ScaleRequest(AppRef):
    command: Literal["scale"] = "scale"
    instances: Count = Field(ge=0, le=64)
    mutates, slow, exclusive = True, True, True


class UpdateSecretsRequest(AppRef):
    command: Literal["update_secrets"] = "update_secrets"
    secrets: EnvMap
    mutates, slow, exclusive = True, True, True


class LogsRequest(AppRef):
    command: Literal["logs"] = "logs"
    lines: Count = Field(default=100, ge=0, le=100_000)
    follow: Flag = False
    mutates, slow = False, False


class EnterUpgradingRequest(Message):
    command: Literal["enter_upgrading"] = "enter_upgrading"
    owner: Owner
    mutates, slow = False, False


class ExitUpgradingRequest(Message):
    command: Literal["exit_upgrading"] = "exit_upgrading"
    owner: Owner
    mutates, slow = False, False


class LockRequest(AppRef):
    """Take the per-app deploy lock; it is released by ``unlock`` or when the connection closes."""

    command: Literal["lock"] = "lock"
    owner: Owner
    mutates, slow = True, False


class UnlockRequest(AppRef):
    command: Literal["unlock"] = "unlock"
    owner: Owner
    mutates, slow = False, False


class MaintenanceRequest(AppRef):
    """Maintenance mode on or off: the edge answers 503 for the app, instances keep running."""

    command: Literal["maintenance"] = "maintenance"
    enabled: Flag
    #: shown on the edge's 503 page (HTML-escaped); empty: a default sentence
    message: MaintenanceMessage = ""
    mutates, slow = True, False


class HasArtifactRequest(Message):
    """Is ``incoming/{sha256}.tar.zst`` already on the server? (then the upload is skipped)"""

    command: Literal["has_artifact"] = "has_artifact"
    sha256: Sha256
    mutates, slow = False, False


class BackupNowRequest(AppRef):
    """Take a backup of the app's data now; answered once the object is verified."""

    command: Literal["backup_now"] = "backup_now"
    mutates, slow = True, True


class BackupListRequest(AppRef):
    """The app/env's backups in its bucket (every server's), newest first."""

    command: Literal["backup_list"] = "backup_list"
    mutates, slow = False, False


class BackupStatusRequest(AppRef):
    """Backup settings, the last runs (failures with their reason) and the next due time."""

    command: Literal["backup_status"] = "backup_status"
    mutates, slow = False, False


class BackupFetchRequest(AppRef):
    """Download one (encrypted) backup from the bucket into the server's downloads dir."""

    command: Literal["backup_fetch"] = "backup_fetch"
    backup_id: BackupId
    mutates, slow = False, True


class BackupFetchDoneRequest(AppRef):
    """The client copied a fetched backup: the server removes its copy."""

    command: Literal["backup_fetch_done"] = "backup_fetch_done"
    backup_id: BackupId
    mutates, slow = False, False


class BackupRestoreRequest(AppRef):
    """Stop the app's instances, replace its data with a backup, start them again."""

    command: Literal["backup_restore"] = "backup_restore"
    backup_id: BackupId
    mutates, slow, exclusive = True, True, True


# --------------------------------------------------------------------------- release and exec


class PrepareRequest(DeployRequest):
    """A deploy's first half: extract and prepare the release, roll nothing out.

    Used when the app has a ``release`` command: every server prepares,
    the leader runs the command (``run_release``), then every server gets ``deploy`` (which
    reuses the prepared release) or ``discard``. Same fields as ``deploy``; the rollout
    ones (``instances``, ``idle_timeout``) are ignored here.
    """

    command: Literal["prepare"] = "prepare"  # type: ignore[assignment]
    mutates, slow, exclusive = True, True, True


class RunReleaseRequest(AppRef):
    """Run ``run`` with ``/bin/sh -c`` in a release ``prepare`` staged: a session."""

    command: Literal["run_release"] = "run_release"
    version: Version
    run: ShellCommand
    #: seconds before the command is killed; ``None``: the server's ``release_timeout``
    timeout: Count | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    owner: Owner | None = None
    mutates, slow, exclusive = True, True, True

    @property
    def lock_owner(self) -> str | None:
        return self.owner


class DiscardRequest(AppRef):
    """Drop a release ``prepare`` staged and made (a later step of the deploy failed)."""

    command: Literal["discard"] = "discard"
    version: Version
    owner: Owner | None = None
    mutates, slow, exclusive = True, False, True

    @property
    def lock_owner(self) -> str | None:
        return self.owner


class ExecRequest(AppRef):
    """Run ``argv`` in the current release with the app's environment: a session.

    ``tty``: on a pseudo-terminal of ``cols`` x ``rows`` (``term`` becomes ``TERM``);
    ``stdin``: the client sends stdin frames (else stdin is ``/dev/null``; a terminal
    always takes input).
    """

    command: Literal["exec"] = "exec"
    argv: Argv = Field(max_length=4096)
    tty: Flag = False
    stdin: Flag = False
    cols: Count = Field(default=80, ge=1, le=10_000)
    rows: Count = Field(default=24, ge=1, le=10_000)
    term: TermName | None = None
    mutates, slow = False, False


Request = Annotated[
    HelloRequest
    | ServerInfoRequest
    | DeployRequest
    | StatusRequest
    | ListRequest
    | RoutesRequest
    | ListReleasesRequest
    | RollbackRequest
    | StopRequest
    | DeleteRequest
    | ScaleRequest
    | UpdateSecretsRequest
    | LogsRequest
    | EnterUpgradingRequest
    | ExitUpgradingRequest
    | LockRequest
    | UnlockRequest
    | HasArtifactRequest
    | MaintenanceRequest
    | PrepareRequest
    | RunReleaseRequest
    | DiscardRequest
    | ExecRequest
    | BackupNowRequest
    | BackupListRequest
    | BackupStatusRequest
    | BackupFetchRequest
    | BackupFetchDoneRequest
    | BackupRestoreRequest,
    Field(discriminator="command"),
]


def _registry() -> dict[str, type[Message]]:
    """``command -> model`` from the union; refuses a model that does not declare its traits."""
    registry: dict[str, type[Message]] = {}
    for model in typing.get_args(typing.get_args(Request)[0]):
        undeclared = [name for name in ("mutates", "slow") if name not in vars(model)]
        if undeclared:
            raise TypeError(f"{model.__name__} must declare {' and '.join(undeclared)}")
        if model.exclusive and not (model.mutates and issubclass(model, AppRef)):
            raise TypeError(f"{model.__name__}: only mutating app requests can be exclusive")
        command = model.model_fields["command"].default
        if command in registry:
            raise TypeError(f"command {command!r} has two models")
        registry[command] = model
    return registry


#: Every command's request model, in the union's order.
REQUEST_MODELS: dict[str, type[Message]] = _registry()
COMMANDS: tuple[str, ...] = tuple(REQUEST_MODELS)
#: Commands refused while the server is in upgrading mode.
MUTATING_COMMANDS = frozenset(c for c, m in REQUEST_MODELS.items() if m.mutates)
#: Commands the client waits minutes for (release prep, rollouts, draining).
SLOW_COMMANDS = frozenset(c for c, m in REQUEST_MODELS.items() if m.slow)
