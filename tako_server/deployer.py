"""Deploy, rollback, secrets updates and restore: everything that (re)starts a release.

Rules (and the original's bugs we do not copy):

- Validation first, then action: upgrade mode and locks are checked by the dispatcher;
  here routes are parsed, conflicts with other apps refused (naming both routes), and
  the artifact's checksum verified before anything touches the disk.
- A failed deploy leaves state, secrets and ``current`` exactly as they were and removes
  the release directory it created (a pre-existing one, e.g. a redeploy of the same
  version, is kept).
- State (app row, routes, release history), encrypted secrets and the ``current`` link
  change only after the supervisor reports a successful rollout; rollback moves
  ``current`` too.
- Secrets never reach ``app.json``, the state database in plaintext, or a log line.
- Only one deploy/rollback/secrets update of an app/env runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets as random_tokens
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tako_common.errors import TakoError, ValidationError
from tako_common.protocol import (
    DeployData,
    DeployRequest,
    ReleaseManifest,
    RollbackRequest,
    UpdateSecretsRequest,
)
from tako_common.routes import RouteConflictError, find_conflicts, parse_route, route_hosts
from tako_server import releases, runtimes
from tako_server.context import ServerContext, utc_iso
from tako_server.state import AppRecord
from tako_server.supervisor.spec import LaunchSpec, RolloutError

#: Marker written into a release directory once extraction and runtime prep finished.
PREPARED = ".tako-prepared"

log = logging.getLogger(__name__)


class NotDeployed(TakoError):
    code = "not_found"


def require_app(ctx: ServerContext, app: str, env: str) -> AppRecord:
    record = ctx.state.get_app(app, env)
    if record is None:
        raise NotDeployed(f"app {app}/{env} is not deployed on this server", hint="run tako deploy")
    return record


def normalize_routes(ctx: ServerContext, key: str, texts: list[str]) -> list[str]:
    """Parse routes (normalised text, duplicates dropped) and refuse conflicts with other apps."""
    routes = list(dict.fromkeys(parse_route(text).text for text in texts))
    conflicts = find_conflicts(ctx.state.all_routes(), key, routes)
    if conflicts:
        raise RouteConflictError(conflicts)
    return routes


def build_spec(
    ctx: ServerContext,
    record_fields: dict[str, Any],
    manifest: dict[str, Any],
    secrets: dict[str, str],
) -> LaunchSpec:
    """The LaunchSpec of ``{app}/{env}`` at ``version`` (keys: app, env, version, vars)."""
    app, env, version = record_fields["app"], record_fields["env"], record_fields["version"]
    release_dir = ctx.layout.release_dir(app, env, version)
    workdir = releases.workdir_of(release_dir, manifest.get("app_subdir", "."))
    environ = runtimes.app_environ(
        manifest=manifest,
        workdir=workdir,
        app=app,
        env=env,
        version=version,
        variables=record_fields["vars"],
        secrets=secrets,
        server_env=ctx.settings.inherited_env,
    )
    public = workdir / "public"
    log_dir = ctx.layout.logs_dir(app, env)
    log_dir.mkdir(parents=True, exist_ok=True)
    return LaunchSpec(
        app=app,
        env=env,
        version=version,
        workdir=workdir,
        command=runtimes.start_command(manifest, workdir),
        environ=environ,
        public_dir=public if public.is_dir() else None,
        log_dir=log_dir,
    )


def _missing_dirs(ctx: ServerContext, app: str, env: str) -> list[Path]:
    """App directories that do not exist yet (removed again if a first deploy fails)."""
    layout = ctx.layout
    candidates = [layout.apps_dir / app, layout.app_dir(app, env), layout.releases_dir(app, env)]
    return [p for p in candidates if not p.exists()]


def remove_if_empty(paths: list[Path]) -> None:
    for path in reversed(paths):
        try:
            path.rmdir()
        except OSError:
            pass


async def deploy(ctx: ServerContext, req: DeployRequest, connection: int) -> DeployData:
    key = req.key
    ctx.locks.check_access(req.app, req.env, req.owner, connection)
    routes = normalize_routes(ctx, key, req.routes)
    ctx.locks.begin_operation(key, "deploy")
    try:
        archive = await asyncio.to_thread(
            releases.verify_artifact, ctx.layout, req.artifact, req.sha256
        )
        return await _deploy_release(ctx, req, routes, archive)
    finally:
        ctx.locks.end_operation(key)


async def _deploy_release(
    ctx: ServerContext, req: DeployRequest, routes: list[str], archive: Path
) -> DeployData:
    layout = ctx.layout
    previous = ctx.state.get_app(req.app, req.env)
    release_dir = layout.release_dir(req.app, req.env, req.version)
    current = releases.current_version(layout.current_link(req.app, req.env))
    if release_dir.exists() and not (release_dir / PREPARED).exists() and current != req.version:
        # left half-prepared by a server that died mid-deploy: start it over
        log.warning("removing half-prepared release %s", release_dir)
        await asyncio.to_thread(shutil.rmtree, release_dir, True)
    created = not release_dir.exists()
    new_dirs = _missing_dirs(ctx, req.app, req.env) if created else []
    manifest = req.manifest.model_dump(mode="json")
    try:
        if created:
            staging = layout.incoming_dir / f".extract-{random_tokens.token_hex(8)}"
            await asyncio.to_thread(releases.install_release, archive, staging, release_dir)
            await _prepare_release(ctx, req, manifest, release_dir)
            (release_dir / PREPARED).touch()
        fields = {"app": req.app, "env": req.env, "version": req.version, "vars": dict(req.vars)}
        spec = build_spec(ctx, fields, manifest, dict(req.secrets))
        desired = _desired(req.instances, previous)
        log.info("deploying %s version %s (%d instances)", req.key, req.version, desired)
        result = await ctx.supervisor.deploy(spec, desired, req.idle_timeout)
    except BaseException:
        if created:
            shutil.rmtree(release_dir, ignore_errors=True)
            remove_if_empty(new_dirs)
        if previous is None and req.key in ctx.supervisor.keys():
            # a failed first deploy leaves nothing registered (no runner, no "existed")
            with contextlib.suppress(Exception):
                await ctx.supervisor.remove(req.key)
        raise
    record = AppRecord(
        app=req.app,
        env=req.env,
        version=req.version,
        desired_instances=desired,
        idle_timeout=req.idle_timeout,
        manifest=manifest,
        vars=dict(req.vars),
        deployed_at=utc_iso(),
        state="running",
        routes=routes,
    )
    warnings = await _commit(ctx, record, dict(req.secrets), previous)
    return DeployData(
        app=req.app,
        env=req.env,
        version=req.version,
        new_app=previous is None,
        instances=result.instances,
        replaced=result.replaced,
        routes=routes,
        warnings=warnings,
    )


def _desired(requested: int | None, previous: AppRecord | None) -> int:
    if requested is not None:
        return requested
    return previous.desired_instances if previous is not None else 1


async def _prepare_release(
    ctx: ServerContext, req: DeployRequest, manifest: dict[str, Any], release_dir: Path
) -> None:
    workdir = releases.workdir_of(release_dir, req.manifest.app_subdir)
    if req.manifest.start is None and not (workdir / req.manifest.main).exists():
        raise ValidationError(
            f"main file {req.manifest.main!r} is not in the release of {req.key}",
            hint="set `main` in tako.toml to a file the build produces",
        )
    extra = {
        "app": req.app,
        "env": req.env,
        "version": req.version,
        "vars": dict(req.vars),  # [vars] are not secret (they live in tako.toml)
        "routes": list(req.routes),
    }
    releases.write_app_json(workdir, manifest, extra)
    environ = runtimes.app_environ(
        manifest=manifest,
        workdir=workdir,
        app=req.app,
        env=req.env,
        version=req.version,
        variables=dict(req.vars),
        secrets=dict(req.secrets),
        server_env=ctx.settings.inherited_env,
    )
    await runtimes.prepare(req.manifest.runtime, req.manifest.install, workdir, environ)


async def _commit(
    ctx: ServerContext, record: AppRecord, secrets: dict[str, str], previous: AppRecord | None
) -> list[str]:
    """Persist a successful rollout: state, secrets, current link, pruning, certificates."""
    ctx.state.save_app(record)
    ctx.secrets.put(record.app, record.env, secrets)
    layout = ctx.layout
    releases.switch_current(layout.current_link(record.app, record.env), record.version)
    pruned = await asyncio.to_thread(  # big trees (node_modules) must not stall the loop
        releases.prune_releases,
        layout.releases_dir(record.app, record.env),
        record.version,
        time.time(),
    )
    if pruned:
        ctx.state.forget_releases(record.app, record.env, pruned)
    warnings: list[str] = []
    if ctx.certs is not None:
        old_hosts = set(route_hosts(previous.routes)) if previous else set()
        new_hosts = route_hosts(record.routes)
        try:
            ctx.certs.ensure_hosts(new_hosts)
            unused = old_hosts - set(new_hosts) - hosts_in_use(ctx, exclude=record.key)
            if unused:
                ctx.certs.forget(sorted(unused))
        except TakoError as exc:
            warnings.append(f"certificates: {exc.message}")
    ctx.notify()
    return warnings


def hosts_in_use(ctx: ServerContext, exclude: str) -> set[str]:
    hosts: set[str] = set()
    for key, routes in ctx.state.all_routes().items():
        if key != exclude:
            hosts.update(route_hosts(routes))
    return hosts


def release_manifest(ctx: ServerContext, record: AppRecord, version: str) -> dict[str, Any]:
    """The manifest of an existing release, read back from its ``app.json``."""
    return _release_app_json(ctx, record, version)[0]


def _release_app_json(
    ctx: ServerContext, record: AppRecord, version: str
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """``(manifest, vars)`` of an existing release from its ``app.json`` (vars None if absent)."""
    release_dir = ctx.layout.release_dir(record.app, record.env, version)
    if not release_dir.is_dir():
        known = [
            r.version
            for r in releases.release_dirs(ctx.layout.releases_dir(record.app, record.env))
        ]
        raise NotDeployed(
            f"release {version!r} of {record.key} not found on this server",
            hint=f"available: {', '.join(known) or 'none'} (tako releases)",
        )
    for subdir in dict.fromkeys([record.manifest.get("app_subdir", "."), "."]):
        try:
            data = releases.read_app_json(releases.workdir_of(release_dir, subdir))
        except TakoError:
            continue
        if data is not None:
            fields = {k: v for k, v in data.items() if k in ReleaseManifest.model_fields}
            manifest = ReleaseManifest.model_validate(fields).model_dump(mode="json")
            found = data.get("vars")
            variables = (
                {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None
            )
            return manifest, variables
    raise NotDeployed(f"release {version!r} of {record.key} has no app.json; it cannot be started")


async def rollback(ctx: ServerContext, req: RollbackRequest, connection: int) -> DeployData:
    ctx.locks.check_access(req.app, req.env, None, connection)
    record = require_app(ctx, req.app, req.env)
    manifest, release_vars = _release_app_json(ctx, record, req.version)
    variables = release_vars if release_vars is not None else record.vars
    ctx.locks.begin_operation(req.key, "rollback")
    try:
        secrets = ctx.secrets.get(req.app, req.env)
        fields = {"app": req.app, "env": req.env, "version": req.version, "vars": variables}
        spec = build_spec(ctx, fields, manifest, secrets)
        result = await ctx.supervisor.deploy(spec, record.desired_instances, record.idle_timeout)
        updated = replace(
            record,
            version=req.version,
            manifest=manifest,
            vars=variables,
            deployed_at=utc_iso(),
            state="running",
        )
        warnings = await _commit(ctx, updated, secrets, record)
    finally:
        ctx.locks.end_operation(req.key)
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


async def update_secrets(
    ctx: ServerContext, req: UpdateSecretsRequest, connection: int
) -> dict[str, Any]:
    """Store new secrets; a running app is rolled to the same release with them first."""
    ctx.locks.check_access(req.app, req.env, None, connection)
    record = ctx.state.get_app(req.app, req.env)
    secrets = dict(req.secrets)
    restarted = False
    ctx.locks.begin_operation(req.key, "update_secrets")
    try:
        if record is not None and record.state == "running":
            fields = {
                "app": req.app,
                "env": req.env,
                "version": record.version,
                "vars": record.vars,
            }
            spec = build_spec(ctx, fields, record.manifest, secrets)
            await ctx.supervisor.deploy(spec, record.desired_instances, record.idle_timeout)
            restarted = True
        ctx.secrets.put(req.app, req.env, secrets)
    finally:
        ctx.locks.end_operation(req.key)
    return {"app": req.app, "env": req.env, "restarted": restarted, "count": len(secrets)}


async def restore_all(ctx: ServerContext) -> list[str]:
    """Register every persisted running app with the supervisor (after a restart)."""
    problems = []
    for record in ctx.state.list_apps():
        if record.state != "running":
            continue
        try:
            await register(ctx, record)
        except (TakoError, OSError) as exc:
            problems.append(f"{record.key}: {exc}")
            log.error("restore of %s failed: %s", record.key, exc)
    if ctx.certs is not None:
        hosts = sorted(
            {h for routes in ctx.state.all_routes().values() for h in route_hosts(routes)}
        )
        try:
            ctx.certs.ensure_hosts(hosts)
        except TakoError as exc:
            problems.append(f"certificates: {exc}")
    ctx.notify()
    return problems


async def register(ctx: ServerContext, record: AppRecord) -> None:
    """Hand an app to the supervisor without a rollout (restore, or scale of a stopped app)."""
    secrets = ctx.secrets.get(record.app, record.env)
    fields = {"app": record.app, "env": record.env, "version": record.version, "vars": record.vars}
    spec = build_spec(ctx, fields, record.manifest, secrets)
    await ctx.supervisor.restore(spec, record.desired_instances, record.idle_timeout)


def failure_response(exc: RolloutError | runtimes.PrepError) -> dict[str, Any]:
    """Error envelope of a failed prep or rollout, with the last output/log lines."""
    tail = (exc.log_tail if isinstance(exc, RolloutError) else exc.tail)[-30:]
    hint = "last app log lines:\n" + "\n".join(tail) if tail else exc.hint
    return {
        "status": "error",
        "code": exc.code,
        "message": exc.message,
        "hint": hint,
        "data": {"log_tail": tail},
    }
