"""One handler per management command; :class:`Handlers.dispatch` is the single entry.

Rules:

- Requests arrive validated by :func:`tako_common.protocol.parse_request`; handlers add
  the checks that need server state (app exists, lock holder, upgrade mode) before they
  act, so a refused command changes nothing.
- While the server is upgrading, every command in ``MUTATING_COMMANDS`` is refused with
  the command's name and the owner of the upgrade.
- A handler returns a response envelope (``ok(...)``) or a :class:`Stream` (``logs`` with
  ``follow``); :class:`TakoError` becomes an error envelope; nothing else leaks secrets
  or tracebacks to the client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tako_common import __version__
from tako_common.errors import TakoError
from tako_common.protocol import (
    MUTATING_COMMANDS,
    PROTOCOL_VERSION,
    AppRoutes,
    AppStatus,
    CertStatus,
    DeleteRequest,
    EnterUpgradingRequest,
    ExitUpgradingRequest,
    HasArtifactRequest,
    HelloData,
    HelloRequest,
    ListReleasesRequest,
    LockRequest,
    LogsData,
    LogsRequest,
    ReleaseInfo,
    ReleasesData,
    Request,
    RoutesData,
    ScaleRequest,
    ServerInfoData,
    StatusData,
    StatusRequest,
    StopRequest,
    UnlockRequest,
    check_hello,
    error_from,
    ok,
)
from tako_common.routes import route_hosts
from tako_server import deployer, releases
from tako_server.context import ServerContext, utc_iso
from tako_server.runtimes import PrepError
from tako_server.state import AppRecord
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.spec import RolloutError

log = logging.getLogger(__name__)

CAPABILITIES = [
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
]


class Upgrading(TakoError):
    code = "upgrading"


@dataclass
class Stream:
    """A streamed answer: ``first`` now, then every envelope ``rest`` yields."""

    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]


Reply = dict[str, Any] | Stream
Handler = Callable[[Any, int], Awaitable[Reply]]


class Handlers:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._table: dict[str, Handler] = {
            "hello": self.hello,
            "server_info": self.server_info,
            "deploy": self.deploy,
            "status": self.status,
            "list": self.list_apps,
            "routes": self.routes,
            "list_releases": self.list_releases,
            "rollback": self.rollback,
            "stop": self.stop,
            "delete": self.delete,
            "scale": self.scale,
            "update_secrets": self.update_secrets,
            "logs": self.logs,
            "enter_upgrading": self.enter_upgrading,
            "exit_upgrading": self.exit_upgrading,
            "lock": self.lock,
            "unlock": self.unlock,
            "has_artifact": self.has_artifact,
        }

    def __repr__(self) -> str:
        return f"Handlers(commands={len(self._table)})"

    async def dispatch(self, request: Request, connection: int) -> Reply:
        try:
            if request.command in MUTATING_COMMANDS:
                self._refuse_if_upgrading(request.command)
            return await self._table[request.command](request, connection)
        except (RolloutError, PrepError) as exc:
            log.warning("%s failed: %s", request.command, exc.message)
            return deployer.failure_response(exc)
        except TakoError as exc:
            return error_from(exc)

    def _refuse_if_upgrading(self, command: str) -> None:
        mode = self.ctx.state.server_mode()
        if mode.mode == "upgrading":
            raise Upgrading(
                f"server is upgrading (owner {mode.owner}, since {mode.since});"
                f" '{command}' is refused until the upgrade finishes",
                hint="retry shortly",
            )

    # ------------------------------------------------------------------ server

    async def hello(self, req: HelloRequest, connection: int) -> Reply:
        check_hello(req.protocol_version, PROTOCOL_VERSION)
        return ok(
            HelloData(
                protocol_version=PROTOCOL_VERSION,
                server_version=__version__,
                capabilities=CAPABILITIES,
            )
        )

    async def server_info(self, req: Any, connection: int) -> Reply:
        s = self.ctx.settings
        mode = self.ctx.state.server_mode()
        incoming = self.ctx.layout.incoming_dir
        return ok(
            ServerInfoData(
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
            )
        )

    async def has_artifact(self, req: HasArtifactRequest, connection: int) -> Reply:
        path = self.ctx.layout.artifact(req.sha256)
        present = path.is_file() and not path.is_symlink()
        size = path.stat().st_size if present else None
        return ok({"sha256": req.sha256, "present": present, "size": size, "path": str(path)})

    async def enter_upgrading(self, req: EnterUpgradingRequest, connection: int) -> Reply:
        mode = self.ctx.state.server_mode()
        if mode.mode == "upgrading" and mode.owner != req.owner:
            raise Upgrading(
                f"server is already upgrading (owner {mode.owner}, since {mode.since})",
                hint="wait for that upgrade to finish",
            )
        since = mode.since if mode.mode == "upgrading" else utc_iso()
        self.ctx.state.set_server_mode("upgrading", req.owner, since)
        return ok({"mode": "upgrading", "owner": req.owner, "since": since})

    async def exit_upgrading(self, req: ExitUpgradingRequest, connection: int) -> Reply:
        mode = self.ctx.state.server_mode()
        if mode.mode == "upgrading" and mode.owner != req.owner:
            raise Upgrading(
                f"cannot exit upgrading mode: it is held by {mode.owner!r}, not {req.owner!r}"
            )
        self.ctx.state.set_server_mode("normal", None, None)
        return ok({"mode": "normal", "owner": req.owner})

    # ------------------------------------------------------------------ locks

    async def lock(self, req: LockRequest, connection: int) -> Reply:
        info = self.ctx.locks.acquire(req.app, req.env, req.owner, connection, utc_iso())
        return ok({"app": req.app, "env": req.env, "owner": info.owner, "since": info.since})

    async def unlock(self, req: UnlockRequest, connection: int) -> Reply:
        released = self.ctx.locks.release(req.app, req.env, req.owner)
        return ok({"app": req.app, "env": req.env, "released": released})

    # ------------------------------------------------------------------ deploys

    async def deploy(self, req: Any, connection: int) -> Reply:
        return ok(await deployer.deploy(self.ctx, req, connection))

    async def rollback(self, req: Any, connection: int) -> Reply:
        return ok(await deployer.rollback(self.ctx, req, connection))

    async def update_secrets(self, req: Any, connection: int) -> Reply:
        return ok(await deployer.update_secrets(self.ctx, req, connection))

    # ------------------------------------------------------------------ apps

    async def status(self, req: StatusRequest, connection: int) -> Reply:
        records = [
            r
            for r in self.ctx.state.list_apps()
            if (req.app is None or r.app == req.app) and (req.env is None or r.env == req.env)
        ]
        if req.app is not None and not records:
            where = f"{req.app}/{req.env}" if req.env else req.app
            raise deployer.NotDeployed(f"app {where} is not deployed on this server")
        return ok(StatusData(apps=[self._app_status(r) for r in records]))

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
        )

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

    async def list_apps(self, req: Any, connection: int) -> Reply:
        apps = []
        for record in self.ctx.state.list_apps():
            runtime = self.ctx.supervisor.status(record.key)
            state = runtime.state if runtime and record.state == "running" else "stopped"
            apps.append(
                {
                    "app": record.app,
                    "env": record.env,
                    "version": record.version,
                    "state": state,
                    "instances": len(runtime.instances) if runtime else 0,
                    "desired_instances": record.desired_instances,
                    "routes": record.routes,
                }
            )
        return ok({"apps": apps})

    async def routes(self, req: Any, connection: int) -> Reply:
        items = []
        for key, routes in self.ctx.state.all_routes().items():
            app, env = key.split("/")
            items.append(AppRoutes(app=app, env=env, routes=routes))
        return ok(RoutesData(routes=items))

    async def list_releases(self, req: ListReleasesRequest, connection: int) -> Reply:
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
        return ok(ReleasesData(app=req.app, env=req.env, releases=items))

    async def stop(self, req: StopRequest, connection: int) -> Reply:
        self.ctx.locks.check_access(req.app, req.env, None, connection)
        record = deployer.require_app(self.ctx, req.app, req.env)
        self.ctx.locks.begin_operation(record.key, "stop")
        try:
            if record.key in self.ctx.supervisor.keys():
                await self.ctx.supervisor.stop(record.key)
        finally:
            self.ctx.locks.end_operation(record.key)
        self.ctx.state.set_state(req.app, req.env, "stopped")
        self.ctx.notify()
        return ok({"app": req.app, "env": req.env, "stopped": True})

    async def scale(self, req: ScaleRequest, connection: int) -> Reply:
        self.ctx.locks.check_access(req.app, req.env, None, connection)
        record = deployer.require_app(self.ctx, req.app, req.env)
        self.ctx.locks.begin_operation(record.key, "scale")
        try:
            if record.key in self.ctx.supervisor.keys():
                await self.ctx.supervisor.scale(record.key, req.instances)
            else:
                await deployer.register(self.ctx, replace(record, desired_instances=req.instances))
        finally:
            self.ctx.locks.end_operation(record.key)
        self.ctx.state.set_desired(req.app, req.env, req.instances)
        self.ctx.notify()
        return ok({"app": req.app, "env": req.env, "instances": req.instances})

    async def delete(self, req: DeleteRequest, connection: int) -> Reply:
        ctx = self.ctx
        ctx.locks.check_access(req.app, req.env, None, connection)
        ctx.locks.begin_operation(req.key, "delete")
        try:
            record = ctx.state.get_app(req.app, req.env)
            await ctx.supervisor.remove(req.key)
            existed = ctx.state.delete_app(req.app, req.env)
            if record is not None and ctx.certs is not None:
                unused = set(route_hosts(record.routes)) - deployer.hosts_in_use(ctx, req.key)
                ctx.certs.forget(sorted(unused))
            ctx.locks.forget(req.app, req.env)
            app_dir = ctx.layout.app_dir(req.app, req.env)
            existed = existed or app_dir.exists()
            await asyncio.to_thread(shutil.rmtree, app_dir, True)
            deployer.remove_if_empty([ctx.layout.apps_dir / req.app])
        finally:
            ctx.locks.end_operation(req.key)
        ctx.notify()
        return ok({"app": req.app, "env": req.env, "existed": existed})

    async def logs(self, req: LogsRequest, connection: int) -> Reply:
        record = deployer.require_app(self.ctx, req.app, req.env)
        if record.key not in self.ctx.supervisor.keys():
            stored = AppLog(self.ctx.layout.logs_dir(req.app, req.env))
            return ok(LogsData(lines=stored.history(req.lines)))
        app_log = self.ctx.supervisor.log(record.key)
        first = ok(LogsData(lines=app_log.history(req.lines) if req.lines else []))
        if not req.follow:
            return first
        return Stream(first=first, rest=_follow(app_log.follow()))


async def _follow(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines:
        yield ok(LogsData(lines=[line]))


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
