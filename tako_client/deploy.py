"""``tako deploy``: from a loaded tako.toml to a release running on every server.

Steps (000 "Deploy Flow"): validate the environment and its secrets, build (or reuse) the
artifact locally, then on every server in parallel: hello, deploy lock, disk preflight,
upload (skipped when the server already holds that sha256), ``deploy`` (the server
extracts, prepares, rolls out and moves ``current``), unlock. One server's failure never
stops the others; the summary names each server's result.

Rules: secrets and storage credentials travel only inside the ``deploy`` request (never
argv, logs or app.json);
the lock is released on every path (and by the server when the connection drops); a
failed deploy leaves no release behind (the server removes the directory it created); the
URLs are shown only when at least one server runs the release.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from tako_client.build.artifacts import BuiltArtifact
from tako_client.remote import RemoteServer
from tako_client.timings import PhaseClock
from tako_common.config import ImagesConfig, LoadedConfig, workflow_groups, workflow_settings
from tako_common.errors import TakoError, ValidationError
from tako_common.protocol import (
    BackupSettings,
    DeployData,
    DeployRequest,
    ImageSettings,
    ReleaseManifest,
    ServerInfoData,
    StorageBinding,
    WorkflowGroupSpec,
    WorkflowsSpec,
)
from tako_common.routes import parse_route

#: Free space the server needs beyond the artifact: room to extract it (x3) plus slack.
DISK_SLACK_BYTES = 64 * 1024 * 1024

ProgressCallback = Callable[[int, int], None]
#: A step between the upload and the ``deploy`` command (it may raise to stop the deploy).
BeforeRollout = Callable[["ServerChannel", DeployRequest], Awaitable[None]]


class DeployError(TakoError):
    code = "deploy"


class ServerChannel(Protocol):
    """One server's control channel (typed requests) and SFTP over its SSH connection."""

    @property
    def remote(self) -> RemoteServer: ...

    async def upload(
        self, local: Path, remote: str, progress: ProgressCallback | None = None
    ) -> None: ...


@dataclass(frozen=True)
class DeployTarget:
    """What is deployed where: the same for every server of the environment."""

    app: str
    env: str
    routes: list[str]
    vars: dict[str, str]
    secrets: dict[str, str]
    instances: int | None
    idle_timeout: int
    #: storage bindings (S3 credentials included) and this server's backup settings
    storages: list[StorageBinding] = field(default_factory=list)
    backup: BackupSettings | None = field(default=None, repr=False)
    #: ``[images]`` resolved (None: no image endpoint); it travels in the release manifest
    images: ImageSettings | None = None
    #: provider credentials of the environment (``tako credentials``), decrypted
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    #: ``[envs.<env>].ssl`` and ``source_ip`` (docs/tls.md, docs/source-ip.md)
    ssl: Literal["letsencrypt", "cloudflare"] = "letsencrypt"
    source_ip: Literal["auto", "direct", "cloudflare-proxy", "trusted-proxy"] = "auto"
    #: ``[workflows]`` resolved for this server (None: no workflows)
    workflows: WorkflowsSpec | None = None


@dataclass(frozen=True)
class ServerOutcome:
    data: DeployData
    uploaded: bool


def lock_owner() -> str:
    """Who holds a deploy lock, as shown to a second deployer: ``user@host:pid``."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "tako"
    host = socket.gethostname().split(".")[0] or "localhost"
    raw = f"{user}@{host}:{os.getpid()}"
    return "".join(c if c.isalnum() or c in "._@:-" else "-" for c in raw)[:128]


def required_disk_bytes(artifact_size: int) -> int:
    return 3 * artifact_size + DISK_SLACK_BYTES


def check_disk(info: ServerInfoData, artifact_size: int) -> None:
    need = required_disk_bytes(artifact_size)
    if info.disk_free_bytes < need:
        raise DeployError(
            f"not enough disk space under {info.data_dir}: "
            f"{_mib(info.disk_free_bytes)} free, {_mib(need)} needed "
            f"(3x the {_mib(artifact_size)} artifact + {_mib(DISK_SLACK_BYTES)})",
            hint="free space on the server (old releases are pruned after 30 days)",
        )


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def image_settings(config: ImagesConfig | None) -> ImageSettings | None:
    """``[images]`` with the defaults filled in (docs/images.md); None without the table."""
    if config is None:
        return None
    given = {
        "local_patterns": config.local_patterns,
        "remote_patterns": config.remote_patterns,
        "sizes": config.sizes,
        "qualities": config.qualities,
        "formats": config.formats,
    }
    return ImageSettings.model_validate({k: v for k, v in given.items() if v is not None})


def workflows_spec(loaded: LoadedConfig, server: str, servers: int) -> WorkflowsSpec | None:
    """``[workflows]`` resolved for ``server`` (None without groups); a group must have a
    ``run`` command. ``shared`` when the environment has more than one server."""
    groups = []
    for name in workflow_groups(loaded):
        settings = workflow_settings(loaded, name, server)
        if settings.run is None:
            raise ValidationError(
                f"workflow group {name!r} has no run command",
                hint=f'set run = ["./worker", "{name}"] in [workflows.{name}] of tako.toml',
            )
        groups.append(
            WorkflowGroupSpec(
                name=name,
                run=settings.run,
                workers=settings.workers,
                concurrency=settings.concurrency,
                schedule=settings.schedule,
                retries=settings.retries,
            )
        )
    return WorkflowsSpec(groups=groups, shared=servers > 1) if groups else None


def check_workflows_storage(
    spec: WorkflowsSpec | None, env: str, credentials: dict[str, str]
) -> None:
    """Multi-server workflows keep their queue in PostgreSQL: ``postgres_url`` is required."""
    if spec is not None and spec.shared and "postgres_url" not in credentials:
        raise ValidationError(
            f"environment '{env}' has workflows on more than one server: their queue needs"
            " PostgreSQL, and the postgres_url credential is not set",
            hint=f"tako credentials set postgres_url --env {env}",
        )


def build_request(target: DeployTarget, artifact: BuiltArtifact, owner: str) -> DeployRequest:
    return DeployRequest(
        app=target.app,
        env=target.env,
        version=artifact.version,
        artifact=f"{artifact.sha256}.tar.zst",
        sha256=artifact.sha256,
        routes=target.routes,
        manifest=ReleaseManifest.model_validate({**artifact.manifest, "images": target.images}),
        vars=target.vars,
        secrets=target.secrets,
        instances=target.instances,
        idle_timeout=target.idle_timeout,
        owner=owner,
        storages=target.storages,
        backup=target.backup,
        credentials=target.credentials,
        ssl=target.ssl,
        source_ip=target.source_ip,
        workflows=target.workflows,
    )


async def deploy_to_server(
    session: ServerChannel,
    target: DeployTarget,
    artifact: BuiltArtifact,
    *,
    owner: str,
    progress: ProgressCallback | None = None,
    before_rollout: BeforeRollout | None = None,
    clock: PhaseClock | None = None,
) -> ServerOutcome:
    """The per-server deploy: lock, preflight, upload, deploy, unlock.

    ``before_rollout`` runs after the upload, under the lock, before ``deploy`` (a deploy
    with a release command prepares there and waits for it: :mod:`tako_client.release`).
    ``clock`` (``--timings``) gets a lap at the end of each phase.
    """
    lap = clock.lap if clock is not None else _no_lap
    server = session.remote
    info = await server.server_info()
    if info.mode == "upgrading":
        raise DeployError(
            f"tako-server is being upgraded (by {info.upgrade_owner or 'unknown'})",
            hint="retry in a minute",
        )
    await server.lock(target.app, target.env, owner)
    try:
        check_disk(info, artifact.size)
        uploaded = not await server.has_artifact(artifact.sha256)
        lap("lock", time.monotonic())
        if uploaded:
            remote = f"{info.incoming_dir.rstrip('/')}/{artifact.sha256}.tar.zst"
            await session.upload(artifact.path, remote, progress)
            lap("upload", time.monotonic())
        request = build_request(target, artifact, owner)
        if before_rollout is not None:
            await before_rollout(session, request)
            lap("release", time.monotonic())
        data = await server.deploy(request)
        if clock is not None:
            clock.lap_deploy(time.monotonic(), data.prepare_seconds)
        return ServerOutcome(data, uploaded)
    finally:
        try:
            await server.unlock(target.app, target.env, owner)
        except (TakoError, OSError):
            pass  # the server also drops the lock when this connection closes


def _no_lap(phase: str, now: float) -> None:
    """Phases are not timed (no ``--timings``)."""


def failure_summary(key: str, succeeded: int, total: int) -> str | None:
    """The summary line of a deploy with failed servers; ``None`` when every server succeeded.

    Some succeeded: the partial-failure line (those servers run the new release). None
    succeeded: the deploy failed as a whole, said as such (there is nothing to browse).
    """
    if succeeded == total:
        return None
    if succeeded == 0:
        where = "its only server" if total == 1 else f"all {total} servers"
        return f"deploy of {key} failed on {where}"
    return f"deployment of {key} partially failed: {succeeded}/{total} servers succeeded"


def route_urls(routes: list[str]) -> list[str]:
    """Browsable URLs of the routes: ``https://host/path`` (wildcards shown as written)."""
    urls = []
    for text in routes:
        route = parse_route(text)
        host = f"*.{route.host}" if route.wildcard else route.host
        path = route.prefix or (route.path if route.path else "")
        urls.append(f"https://{host}{path if path != '/' else ''}")
    return urls
