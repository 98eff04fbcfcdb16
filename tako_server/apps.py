"""The app service: every command that changes an app (deploy, rollback, update_secrets,
stop, scale, delete) in one place.

Rules:

- callers (the dispatcher) have already applied the mutation guard
  (:mod:`tako_server.guard`): not upgrading, the app's deploy lock not held by another
  connection, no other operation of the app running. Methods here never take locks;
- every method takes its typed request and returns its typed answer
  (:mod:`tako_common.protocol`); errors are :class:`TakoError` subclasses;
- releases are addressed by :class:`~tako_server.launch.ReleaseRef` and started through
  :func:`tako_server.deployer.spec_for` (the one environment builder);
- state, secrets and storage settings change only after the supervisor succeeded (see
  :mod:`tako_server.deployer`); ``delete`` is idempotent and removes the app's data
  directory and local storages with it;
- the routing state (:mod:`tako_server.routing`) learns each change of an app's routes,
  ``public/`` directory, running/stopped and maintenance mode from here, with what the command holds
  (the supervisor feeds it the backends); nothing reads the database back for it;
- the release step of a deploy with a release command (``prepare``, ``run_release``,
  ``discard``) and ``exec`` live in :class:`~tako_server.oneoff_service.OneOffService`
  (:attr:`AppService.oneoffs`); ``deploy`` adopts what ``prepare`` staged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import replace

from tako_common.errors import TakoError
from tako_common.protocol import (
    DeleteData,
    DeleteRequest,
    DeployData,
    DeployRequest,
    MaintenanceData,
    MaintenanceRequest,
    RollbackRequest,
    ScaleData,
    ScaleRequest,
    SecretsData,
    StopData,
    StopRequest,
    UpdateSecretsRequest,
)
from tako_common.routes import route_hosts
from tako_server import deployer, isolation, releases
from tako_server.context import ServerContext, utc_iso
from tako_server.launch import ReleaseRef
from tako_server.oneoff_service import OneOffService
from tako_server.state import AppRecord
from tako_server.storage_store import storage_record

log = logging.getLogger(__name__)


class AppService:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        #: the release step of a deploy with a release command, and exec
        self.oneoffs = OneOffService(ctx)

    def __repr__(self) -> str:
        return f"AppService(apps={len(self.ctx.state.list_apps())})"

    async def deploy(self, req: DeployRequest) -> DeployData:
        ctx = self.ctx
        started = time.monotonic()
        routes = deployer.normalize_routes(ctx, req.key, req.routes)
        archive = await asyncio.to_thread(
            releases.verify_artifact, ctx.layout, req.artifact, req.sha256
        )
        previous = ctx.state.get_app(req.app, req.env)
        desired = _desired(req.instances, previous)
        if ctx.workflows is not None:  # refused before anything changes (postgres_url)
            await ctx.workflows.check(req.app, req.env, req.workflows, req.credentials)
        try:
            staged = ctx.staging.pop(req.key, req.version)  # made by this deploy's prepare
            adopted = staged is not None and staged.created
            async with deployer.staged_release(ctx, req, archive, adopted=adopted) as release:
                prepared = time.monotonic()
                spec = deployer.spec_for(ctx, release, req.vars, req.secrets, req.storages)
                log.info("deploying %s version %s (%d instances)", req.key, req.version, desired)
                result = await ctx.supervisor.deploy(spec, desired, req.idle_timeout)
        except BaseException:
            if previous is None and req.key in ctx.supervisor.keys():
                # a failed first deploy leaves nothing registered (no runner, no "existed")
                with contextlib.suppress(Exception):
                    await ctx.supervisor.remove(req.key)
            raise
        # before commit: the certificates commit asks for may need ssl.cloudflare
        ctx.credentials.put(req.app, req.env, dict(req.credentials))
        ctx.state.save_edge_settings(req.app, req.env, req.ssl, req.source_ip)
        ctx.routing.set_source_ip(req.key, req.source_ip)
        record = AppRecord(
            app=req.app,
            env=req.env,
            version=req.version,
            desired_instances=desired,
            idle_timeout=req.idle_timeout,
            manifest=req.manifest.model_dump(mode="json"),
            vars=dict(req.vars),
            deployed_at=utc_iso(),
            state="running",
            routes=routes,
        )
        warnings = await deployer.commit(ctx, record, dict(req.secrets), previous, release)
        stored = storage_record(ctx.storage.get(req.app, req.env), req, utc_iso())
        ctx.storage.put(req.app, req.env, stored)
        if ctx.workflows is not None:  # after the web instances are healthy
            await ctx.workflows.deploy(spec, req.workflows, req.idle_timeout)
        return DeployData(
            app=req.app,
            env=req.env,
            version=req.version,
            new_app=previous is None,
            instances=result.instances,
            replaced=result.replaced,
            routes=routes,
            warnings=warnings,
            prepare_seconds=round(prepared - started, 4),
            rollout_seconds=round(time.monotonic() - prepared, 4),
        )

    async def rollback(self, req: RollbackRequest) -> DeployData:
        ctx = self.ctx
        record = deployer.require_app(ctx, req.app, req.env)
        manifest, release_vars = deployer.release_app_json(ctx, record, req.version)
        variables = release_vars if release_vars is not None else record.vars
        secrets = ctx.secrets.get(req.app, req.env)
        release = ReleaseRef.locate(ctx.layout, req.app, req.env, req.version, manifest)
        spec = deployer.spec_for(ctx, release, variables, secrets)
        result = await ctx.supervisor.deploy(spec, record.desired_instances, record.idle_timeout)
        if ctx.workflows is not None:
            await ctx.workflows.restart(spec)
        updated = replace(
            record,
            version=req.version,
            manifest=manifest.model_dump(mode="json"),
            vars=variables,
            deployed_at=utc_iso(),
            state="running",
        )
        warnings = await deployer.commit(ctx, updated, secrets, record, release)
        return DeployData(
            app=req.app,
            env=req.env,
            version=req.version,
            new_app=False,
            instances=result.instances,
            replaced=result.replaced,
            routes=record.routes,
            warnings=warnings,
        )

    async def update_secrets(self, req: UpdateSecretsRequest) -> SecretsData:
        """Store new secrets; a running app is rolled to the same release with them first."""
        ctx = self.ctx
        record = ctx.state.get_app(req.app, req.env)
        secrets = dict(req.secrets)
        restarted = False
        if record is not None and record.state == "running":
            spec = deployer.spec_for(ctx, deployer.release_of(ctx, record), record.vars, secrets)
            await ctx.supervisor.deploy(spec, record.desired_instances, record.idle_timeout)
            if ctx.workflows is not None:
                await ctx.workflows.restart(spec)
            restarted = True
        ctx.secrets.put(req.app, req.env, secrets)
        return SecretsData(app=req.app, env=req.env, restarted=restarted, count=len(secrets))

    async def stop(self, req: StopRequest) -> StopData:
        ctx = self.ctx
        record = deployer.require_app(ctx, req.app, req.env)
        if ctx.workflows is not None:
            await ctx.workflows.stop(req.app, req.env)
        if record.key in ctx.supervisor.keys():
            await ctx.supervisor.stop(record.key)
        ctx.state.set_state(req.app, req.env, "stopped")
        ctx.routing.set_running(record.key, False)
        return StopData(app=req.app, env=req.env, stopped=True)

    async def scale(self, req: ScaleRequest) -> ScaleData:
        ctx = self.ctx
        record = deployer.require_app(ctx, req.app, req.env)
        if req.group is not None:
            if ctx.workflows is None:
                raise TakoError("this server runs without workflows")
            await ctx.workflows.scale(req.app, req.env, req.group, req.instances)
            return ScaleData(app=req.app, env=req.env, instances=req.instances, group=req.group)
        if record.key in ctx.supervisor.keys():
            await ctx.supervisor.scale(record.key, req.instances)
        else:
            await deployer.register(ctx, replace(record, desired_instances=req.instances))
        ctx.state.set_desired(req.app, req.env, req.instances)
        ctx.routing.set_running(record.key, True)
        return ScaleData(app=req.app, env=req.env, instances=req.instances)

    async def delete(self, req: DeleteRequest) -> DeleteData:
        ctx = self.ctx
        record = ctx.state.get_app(req.app, req.env)
        if ctx.workflows is not None:
            await ctx.workflows.remove(req.app, req.env)
        await ctx.supervisor.remove(req.key)
        existed = ctx.state.delete_app(req.app, req.env)
        if record is not None and ctx.certs is not None:
            unused = set(route_hosts(record.routes)) - deployer.hosts_in_use(ctx, req.key)
            ctx.certs.forget(sorted(unused))
        ctx.locks.forget(req.app, req.env)
        ctx.staging.forget(req.key)
        app_dir = ctx.layout.app_dir(req.app, req.env)
        existed = existed or app_dir.exists()
        await asyncio.to_thread(shutil.rmtree, app_dir, True)
        await asyncio.to_thread(isolation.forget_app, ctx.settings, ctx.cgroups, req.app, req.env)
        await deployer.remove_app_images(ctx, req.app, req.env)
        deployer.remove_if_empty([ctx.layout.apps_dir / req.app])
        ctx.routing.remove_app(req.key)
        return DeleteData(app=req.app, env=req.env, existed=existed)

    async def maintenance(self, req: MaintenanceRequest) -> MaintenanceData:
        """Maintenance mode on/off: stored (it survives restarts and deploys), then the
        edge answers 503 for the app or forwards again; instances are not touched."""
        ctx = self.ctx
        record = deployer.require_app(ctx, req.app, req.env)
        if not req.enabled:
            ctx.state.clear_maintenance(req.app, req.env)
            ctx.routing.set_maintenance(record.key, None)
            return MaintenanceData(app=req.app, env=req.env, enabled=False)
        mode = ctx.state.set_maintenance(req.app, req.env, req.message, utc_iso())
        ctx.routing.set_maintenance(record.key, mode.message)
        log.info("maintenance mode on for %s", record.key)
        return MaintenanceData(
            app=req.app, env=req.env, enabled=True, message=mode.message, since=mode.since
        )


def _desired(requested: int | None, previous: AppRecord | None) -> int:
    if requested is not None:
        return requested
    return previous.desired_instances if previous is not None else 1
