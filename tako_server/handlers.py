"""One handler per management command; :meth:`Handlers.dispatch` is the single entry.

Rules:

- Requests arrive validated by :func:`tako_common.protocol.parse_request`. The handler
  table is derived from the protocol's command registry: command ``x`` is handled by
  ``on_x``, and construction fails if a command has no handler.
- Dispatch applies the one mutation guard (:mod:`tako_server.guard`) to every request
  whose model ``mutates``: refused while upgrading, counted in flight, and, for
  ``exclusive`` ones, the app's deploy lock and one-operation rule; so a refused command
  changes nothing. App-changing commands are delegated to
  :class:`~tako_server.apps.AppService`; the handlers here read state or manage modes
  and locks.
- A handler takes its typed request and returns its typed answer (a
  :class:`~tako_common.protocol.Data` model), a :class:`LogStream` or a session
  (:class:`~tako_server.oneoff.OneOffSession`); dispatch wraps it in an envelope (a
  session in a :class:`~tako_server.control.Duplex` that holds the request's guard until
  the session ends, so a release command runs under the deploy lock's rules).
  :class:`TakoError` becomes an error envelope; nothing else leaks secrets or tracebacks
  to the client.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tako_common import __version__
from tako_common.errors import TakoError
from tako_common.protocol import (
    CAPABILITIES,
    COMMANDS,
    PROTOCOL_VERSION,
    AppRoutes,
    AppStatus,
    AppSummary,
    ArtifactData,
    BackupFetchData,
    BackupFetchDoneData,
    BackupFetchDoneRequest,
    BackupFetchRequest,
    BackupListData,
    BackupListRequest,
    BackupNowData,
    BackupNowRequest,
    BackupRestoreData,
    BackupRestoreRequest,
    BackupStatusData,
    BackupStatusRequest,
    CertStatus,
    Data,
    DeleteData,
    DeleteRequest,
    DeployData,
    DeployRequest,
    DiscardData,
    DiscardRequest,
    EnterUpgradingRequest,
    ExecRequest,
    ExitUpgradingRequest,
    HasArtifactRequest,
    HelloData,
    HelloRequest,
    ListData,
    ListReleasesRequest,
    ListRequest,
    LockData,
    LockRequest,
    LogsData,
    LogsRequest,
    MaintenanceData,
    MaintenanceRequest,
    NormalModeData,
    PrepareData,
    PrepareRequest,
    ReleaseInfo,
    ReleasesData,
    Request,
    RollbackRequest,
    RoutesData,
    RoutesRequest,
    RunReleaseRequest,
    ScaleData,
    ScaleRequest,
    SecretsData,
    ServerInfoData,
    ServerInfoRequest,
    StatusData,
    StatusRequest,
    StopData,
    StopRequest,
    UnlockData,
    UnlockRequest,
    UpdateSecretsRequest,
    UpgradingData,
    check_hello,
    error_from,
    ok,
)
from tako_common.routes import route_hosts
from tako_server import deployer, pinned, podman, releases
from tako_server.apps import AppService
from tako_server.backups.service import BackupService
from tako_server.context import ServerContext, utc_iso
from tako_server.control import Duplex
from tako_server.guard import Upgrading
from tako_server.oneoff import OneOffSession
from tako_server.runtimes import PrepError
from tako_server.state import AppRecord
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.spec import RolloutError

COUNTED = frozenset({"deploy", "rollback"})
log = logging.getLogger(__name__)


@dataclass
class LogStream:
    """A handler's streamed answer: ``first`` now, then every payload ``rest`` yields."""

    first: LogsData
    rest: AsyncIterator[LogsData]


@dataclass
class Stream:
    """A streamed reply: ``first`` envelope now, then every envelope ``rest`` yields."""

    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]


Reply = dict[str, Any] | Stream | Duplex
Answer = Data | LogStream | OneOffSession
Handler = Callable[[Any, int], Awaitable[Answer]]


class Handlers:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.apps = AppService(ctx)
        self.backups = BackupService(ctx)
        self.table: dict[str, Handler] = {c: getattr(self, f"on_{c}") for c in COMMANDS}

    def __repr__(self) -> str:
        return f"Handlers(commands={len(self.table)}, {self.ctx.guard!r})"

    async def dispatch(self, request: Request, connection: int) -> Reply:
        guard = ExitStack()  # a session keeps it until it ends (Duplex.close)
        try:
            guard.enter_context(self.ctx.guard.admit(request, connection))
            answer = await self.table[request.command](request, connection)
        except (RolloutError, PrepError) as exc:
            guard.close()
            log.warning("%s failed: %s", request.command, exc.message)
            self._count(request, "error")
            return deployer.failure_response(exc)
        except TakoError as exc:
            guard.close()
            self._count(request, "error")
            return error_from(exc)
        except BaseException:
            guard.close()
            raise
        self._count(request, "ok")
        if isinstance(answer, OneOffSession):
            return _duplex(answer, guard)
        guard.close()
        if isinstance(answer, LogStream):
            return Stream(first=ok(answer.first), rest=_envelopes(answer.rest))
        return ok(answer)

    def _count(self, request: Request, result: str) -> None:
        """Deploys and rollbacks by result, for the metrics (``tako_deploys_total``)."""
        if request.command in COUNTED:
            key = f"{getattr(request, 'app', '')}/{getattr(request, 'env', '')}"
            self.ctx.events[(request.command, key, result)] += 1

    # ------------------------------------------------------------------ server

    async def on_hello(self, req: HelloRequest, connection: int) -> HelloData:
        check_hello(req.protocol_version, PROTOCOL_VERSION)
        return HelloData(
            protocol_version=PROTOCOL_VERSION,
            server_version=__version__,
            capabilities=list(CAPABILITIES),
        )

    async def on_server_info(self, req: ServerInfoRequest, connection: int) -> ServerInfoData:
        s = self.ctx.settings
        mode = self.ctx.state.server_mode()
        incoming = self.ctx.layout.incoming_dir
        record = self.ctx.takeover  # this process's start and takeovers (tako_server.takeover)
        predecessor = record.predecessor
        return ServerInfoData(
            server_version=__version__,
            mode=mode.mode,
            upgrade_owner=mode.owner,
            pid=self.ctx.pid or os.getpid(),
            data_dir=str(s.data_dir),
            incoming_dir=str(incoming),
            socket=self.ctx.socket_path or str(s.socket),
            http_port=s.http_port,
            https_port=s.https_port,
            disk_free_bytes=shutil.disk_usage(incoming).free,
            acme_enabled=s.acme_enabled,
            acme_directory_url=s.directory_url if s.acme_enabled else None,
            started_at=utc_iso(record.started) if record.started else None,
            executable=_executable(),
            took_over_from=predecessor.pid if predecessor is not None else None,
            predecessor_running=record.predecessor_running(),
            takeover=record.status,
            containers=await podman.engine_status(s.container_socket),
            runtimes=pinned.installed(s.data_dir),
        )

    async def on_has_artifact(self, req: HasArtifactRequest, connection: int) -> ArtifactData:
        path = self.ctx.layout.artifact(req.sha256)
        present = path.is_file() and not path.is_symlink()
        size = path.stat().st_size if present else None
        return ArtifactData(sha256=req.sha256, present=present, size=size, path=str(path))

    async def on_enter_upgrading(
        self, req: EnterUpgradingRequest, connection: int
    ) -> UpgradingData:
        mode = self.ctx.state.server_mode()
        if mode.mode == "upgrading" and mode.owner != req.owner:
            raise Upgrading(
                f"server is already upgrading (owner {mode.owner}, since {mode.since})",
                hint="wait for that upgrade to finish",
            )
        since = mode.since if mode.mode == "upgrading" and mode.since else utc_iso()
        self.ctx.state.set_server_mode("upgrading", req.owner, since)
        return UpgradingData(owner=req.owner, since=since)

    async def on_exit_upgrading(self, req: ExitUpgradingRequest, connection: int) -> NormalModeData:
        mode = self.ctx.state.server_mode()
        if mode.mode == "upgrading" and mode.owner != req.owner:
            raise Upgrading(
                f"cannot exit upgrading mode: it is held by {mode.owner!r}, not {req.owner!r}"
            )
        self.ctx.state.set_server_mode("normal", None, None)
        return NormalModeData(owner=req.owner)

    # ------------------------------------------------------------------ locks

    async def on_lock(self, req: LockRequest, connection: int) -> LockData:
        info = self.ctx.locks.acquire(req.app, req.env, req.owner, connection, utc_iso())
        return LockData(app=req.app, env=req.env, owner=info.owner, since=info.since)

    async def on_unlock(self, req: UnlockRequest, connection: int) -> UnlockData:
        released = self.ctx.locks.release(req.app, req.env, req.owner)
        return UnlockData(app=req.app, env=req.env, released=released)

    # ------------------------------------------------------------------ app changes

    async def on_deploy(self, req: DeployRequest, connection: int) -> DeployData:
        return await self.apps.deploy(req)

    async def on_rollback(self, req: RollbackRequest, connection: int) -> DeployData:
        return await self.apps.rollback(req)

    async def on_update_secrets(self, req: UpdateSecretsRequest, connection: int) -> SecretsData:
        return await self.apps.update_secrets(req)

    async def on_stop(self, req: StopRequest, connection: int) -> StopData:
        return await self.apps.stop(req)

    async def on_scale(self, req: ScaleRequest, connection: int) -> ScaleData:
        return await self.apps.scale(req)

    async def on_delete(self, req: DeleteRequest, connection: int) -> DeleteData:
        return await self.apps.delete(req)

    async def on_maintenance(self, req: MaintenanceRequest, connection: int) -> MaintenanceData:
        return await self.apps.maintenance(req)

    # ------------------------------------------------------------------ release step, exec

    async def on_prepare(self, req: PrepareRequest, connection: int) -> PrepareData:
        return await self.apps.oneoffs.prepare(req, connection)

    async def on_run_release(self, req: RunReleaseRequest, connection: int) -> OneOffSession:
        return await self.apps.oneoffs.run_release(req)

    async def on_discard(self, req: DiscardRequest, connection: int) -> DiscardData:
        return await self.apps.oneoffs.discard(req)

    async def on_exec(self, req: ExecRequest, connection: int) -> OneOffSession:
        return await self.apps.oneoffs.exec(req)

    # ------------------------------------------------------------------ reads

    async def on_status(self, req: StatusRequest, connection: int) -> StatusData:
        records = [
            r
            for r in self.ctx.state.list_apps()
            if (req.app is None or r.app == req.app) and (req.env is None or r.env == req.env)
        ]
        if req.app is not None and not records:
            where = f"{req.app}/{req.env}" if req.env else req.app
            raise deployer.NotDeployed(f"app {where} is not deployed on this server")
        return StatusData(apps=[self._app_status(r) for r in records])

    def _app_status(self, record: AppRecord) -> AppStatus:
        runtime = self.ctx.supervisor.status(record.key)
        instances = list(runtime.instances) if runtime else []
        state = runtime.state if runtime and record.state == "running" else "stopped"
        return AppStatus(
            app=record.app,
            env=record.env,
            version=record.version,
            state=state,
            desired_instances=record.desired_instances,
            healthy_instances=sum(1 for i in instances if i.state == "healthy"),
            instances=instances,
            routes=record.routes,
            idle_timeout=record.idle_timeout,
            deployed_at=record.deployed_at,
            last_error=runtime.last_error if runtime else None,
            certificates=self._certificates(record),
            backup_error=self.backups.last_failure(record.app, record.env),
            **self._maintenance(record),
        )

    def _maintenance(self, record: AppRecord) -> dict[str, Any]:
        mode = self.ctx.state.maintenance(record.app, record.env)
        if mode is None:
            return {}
        return {
            "maintenance": True,
            "maintenance_message": mode.message,
            "maintenance_since": mode.since,
        }

    def _certificates(self, record: AppRecord) -> list[CertStatus]:
        if self.ctx.certs is None:
            return []
        result = []
        for host in route_hosts(record.routes):
            status = self.ctx.certs.status(host)
            if status is None:
                continue
            not_after = status.not_after.isoformat() if status.not_after else None
            state = getattr(status.state, "value", status.state)
            result.append(
                CertStatus(host=host, state=state, not_after=not_after, reason=status.reason)
            )
        return result

    async def on_list(self, req: ListRequest, connection: int) -> ListData:
        apps = []
        for record in self.ctx.state.list_apps():
            runtime = self.ctx.supervisor.status(record.key)
            state = runtime.state if runtime and record.state == "running" else "stopped"
            summary = AppSummary(
                app=record.app,
                env=record.env,
                version=record.version,
                state=state,
                instances=len(runtime.instances) if runtime else 0,
                desired_instances=record.desired_instances,
                routes=record.routes,
            )
            apps.append(summary)
        return ListData(apps=apps)

    async def on_routes(self, req: RoutesRequest, connection: int) -> RoutesData:
        items = []
        for key, routes in self.ctx.state.all_routes().items():
            app, env = key.split("/")
            items.append(AppRoutes(app=app, env=env, routes=routes))
        return RoutesData(routes=items)

    async def on_list_releases(self, req: ListReleasesRequest, connection: int) -> ReleasesData:
        record = deployer.require_app(self.ctx, req.app, req.env)
        layout = self.ctx.layout
        current = releases.current_version(layout.current_link(req.app, req.env))
        times = self.ctx.state.release_times(req.app, req.env)
        items = []
        for entry in releases.release_dirs(layout.releases_dir(req.app, req.env)):
            info = _release_info(layout.release_dir(req.app, req.env, entry.version), record)
            items.append(
                ReleaseInfo(
                    version=entry.version,
                    current=entry.version == current,
                    deployed_at=times.get(entry.version),
                    **info,
                )
            )
        items.sort(key=lambda r: (r.deployed_at or "", r.version), reverse=True)
        return ReleasesData(app=req.app, env=req.env, releases=items)

    async def on_logs(self, req: LogsRequest, connection: int) -> LogsData | LogStream:
        record = deployer.require_app(self.ctx, req.app, req.env)
        if record.key not in self.ctx.supervisor.keys():
            stored = AppLog(self.ctx.layout.logs_dir(req.app, req.env))
            return LogsData(lines=stored.history(req.lines))
        app_log = self.ctx.supervisor.log(record.key)
        first = LogsData(lines=app_log.history(req.lines) if req.lines else [])
        if not req.follow:
            return first
        return LogStream(first=first, rest=_follow(app_log.follow()))

    # ------------------------------------------------------------------ backups

    async def on_backup_now(self, req: BackupNowRequest, connection: int) -> BackupNowData:
        return await self.backups.backup_now(req.app, req.env)

    async def on_backup_list(self, req: BackupListRequest, connection: int) -> BackupListData:
        return await self.backups.list_backups(req.app, req.env)

    async def on_backup_status(
        self, req: BackupStatusRequest, connection: int
    ) -> BackupStatusData:
        return self.backups.status(req.app, req.env)

    async def on_backup_fetch(self, req: BackupFetchRequest, connection: int) -> BackupFetchData:
        return await self.backups.fetch(req.app, req.env, req.backup_id)

    async def on_backup_fetch_done(
        self, req: BackupFetchDoneRequest, connection: int
    ) -> BackupFetchDoneData:
        return self.backups.fetch_done(req.app, req.env, req.backup_id)

    async def on_backup_restore(
        self, req: BackupRestoreRequest, connection: int
    ) -> BackupRestoreData:
        return await self.backups.restore(req.app, req.env, req.backup_id)


def _duplex(session: OneOffSession, guard: ExitStack) -> Duplex:
    session.finished = guard.close  # before the exit event: the client may go on at once

    def close() -> None:
        try:
            session.close()
        finally:
            guard.close()

    return Duplex(first=ok(session.first), run=session.run, close=close)


async def _follow(lines: AsyncIterator[str]) -> AsyncIterator[LogsData]:
    async for line in lines:
        yield LogsData(lines=[line])


async def _envelopes(payloads: AsyncIterator[LogsData]) -> AsyncIterator[dict[str, Any]]:
    try:
        async for payload in payloads:
            yield ok(payload)
    finally:
        aclose = getattr(payloads, "aclose", None)
        if aclose is not None:
            await aclose()


def _executable() -> str | None:
    try:
        return os.readlink("/proc/self/exe")
    except OSError:
        return None


def _release_info(release_dir: Path, record: AppRecord) -> dict[str, Any]:
    data = None
    for subdir in dict.fromkeys([record.manifest.get("app_subdir", "."), "."]):
        try:
            data = releases.read_app_json(releases.workdir_of(release_dir, subdir))
        except TakoError:
            data = None
        if data is not None:
            break
    if data is None:
        return {"commit_message": None, "git_dirty": None}
    return {"commit_message": data.get("commit_message"), "git_dirty": data.get("git_dirty")}
