"""Release steps behind the app service: stage, launch, commit, read back, restore.

:class:`tako_server.apps.AppService` owns the commands; this module holds the steps they
share and the start-up restore. Rules (and the original's bugs we do not copy):

- Validation first, then action: upgrade mode, deploy locks and the one-operation-per-app
  rule are applied by the dispatcher's guard; here routes are parsed, conflicts with
  other apps refused (naming both routes), and the artifact's checksum verified before
  anything touches the disk.
- A failed deploy leaves state, secrets and ``current`` exactly as they were and removes
  the release directory it created (a pre-existing one, e.g. a redeploy of the same
  version, is kept) — :func:`staged_release` does that on every failure path.
- State (app row, routes, release history), encrypted secrets and the ``current`` link
  change only after the supervisor reports a successful rollout (:func:`commit`); so do
  the app's routes and ``public/`` directory in the routing state
  (:mod:`tako_server.routing`, what the edge serves), set from the record and the
  release in hand, never read back from the database.
- Secrets and storage credentials never reach ``app.json``, the state database in
  plaintext, or a log line.
- Launch specs are built only through :func:`spec_for` (one environment builder:
  :func:`tako_server.launch.instance_environ`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets as random_tokens
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tako_common.errors import TakoError, ValidationError
from tako_common.protocol import DeployRequest, ReleaseManifest, StorageBinding
from tako_common.routes import RouteConflictError, find_conflicts, parse_route, route_hosts
from tako_server import pinned, podman, releases, runtimes
from tako_server.context import ServerContext
from tako_server.edge.snapshot import ImageRules
from tako_server.isolation import isolation_for
from tako_server.launch import (
    ContainerHost,
    ReleaseRef,
    ensure_data_dirs,
    instance_environ,
    launch_spec,
    manifest_from,
)
from tako_server.routing import image_rules
from tako_server.state import AppRecord
from tako_server.supervisor.spec import LaunchSpec, RolloutError
from tako_server.tls.policy import CertPlan

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


def release_of(ctx: ServerContext, record: AppRecord) -> ReleaseRef:
    """The release a persisted app runs."""
    manifest = manifest_from(record.manifest)
    return ReleaseRef.locate(ctx.layout, record.app, record.env, record.version, manifest)


def spec_for(
    ctx: ServerContext,
    release: ReleaseRef,
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    storages: Sequence[StorageBinding] | None = None,
) -> LaunchSpec:
    """The LaunchSpec of ``release`` with these vars and secrets; storage bindings are the
    app's stored ones unless a deploy passes its new ones."""
    if storages is None:
        storages = ctx.storage.get(release.app, release.env).storages
    api = ctx.workflows.api_environ(release.app, release.env) if ctx.workflows else {}
    spec = launch_spec(
        release,
        variables,
        secrets,
        server_env=ctx.settings.inherited_env,
        log_dir=ctx.layout.logs_dir(release.app, release.env),
        storages=storages,
        api=api,
        containers=container_host(ctx),
    )
    if spec.container is not None:
        return spec
    return dataclasses.replace(spec, isolation=isolation_for(ctx.settings, release, ctx.cgroups))


def container_host(ctx: ServerContext) -> ContainerHost:
    s = ctx.settings
    return ContainerHost(s.container_socket, s.container_memory_mb, s.container_pids_limit)


def remove_if_empty(paths: list[Path]) -> None:
    for path in reversed(paths):
        try:
            path.rmdir()
        except OSError:
            pass


def _missing_dirs(ctx: ServerContext, app: str, env: str) -> list[Path]:
    """App directories that do not exist yet (removed again if a first deploy fails)."""
    layout = ctx.layout
    candidates = [layout.apps_dir / app, layout.app_dir(app, env), layout.releases_dir(app, env)]
    return [p for p in candidates if not p.exists()]


def is_reusable(ctx: ServerContext, app: str, env: str, version: str) -> bool:
    """Is there a release directory a deploy of ``version`` keeps (prepared, or current)?"""
    release_dir = ctx.layout.release_dir(app, env, version)
    current = releases.current_version(ctx.layout.current_link(app, env))
    return release_dir.exists() and ((release_dir / PREPARED).exists() or current == version)


@asynccontextmanager
async def staged_release(
    ctx: ServerContext, req: DeployRequest, archive: Path, *, adopted: bool = False
) -> AsyncIterator[ReleaseRef]:
    """Extract and prepare the release of ``req`` (or reuse a prepared one); yield it.

    When the body (or the preparation) fails, a release directory created here is
    removed again, with the app directories a first deploy made; so is a prepared one
    this deploy made in its ``prepare`` step (``adopted``).
    """
    layout = ctx.layout
    release_dir = layout.release_dir(req.app, req.env, req.version)
    if release_dir.exists() and not is_reusable(ctx, req.app, req.env, req.version):
        # left half-prepared by a server that died mid-deploy: start it over
        log.warning("removing half-prepared release %s", release_dir)
        await asyncio.to_thread(shutil.rmtree, release_dir, True)
    created = not release_dir.exists()
    new_dirs = _missing_dirs(ctx, req.app, req.env) if created else []
    try:
        if created:
            staging = layout.incoming_dir / f".extract-{random_tokens.token_hex(8)}"
            await asyncio.to_thread(releases.install_release, archive, staging, release_dir)
        release = ReleaseRef.locate(layout, req.app, req.env, req.version, req.manifest)
        if created:
            await _prepare_release(ctx, req, release)
            (release_dir / PREPARED).touch()
        yield release
    except BaseException:
        if created or adopted:
            shutil.rmtree(release_dir, ignore_errors=True)
            if req.manifest.container is not None:
                await forget_image(ctx, req.app, req.env, req.version)
            if layout.app_dir(req.app, req.env) in new_dirs:  # a first deploy: empty data dirs
                remove_empty_tree(layout.data_root(req.app, req.env))
            remove_if_empty(new_dirs)
        raise


def remove_empty_tree(root: Path) -> None:
    """Remove ``root`` and its directories when no file is anywhere below it."""
    if not root.is_dir() or any(p.is_file() or p.is_symlink() for p in root.rglob("*")):
        return
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        path.rmdir()
    root.rmdir()


async def _prepare_release(ctx: ServerContext, req: DeployRequest, release: ReleaseRef) -> None:
    manifest = req.manifest
    if manifest.container is not None:
        await _load_image(ctx, req, release)
        return
    if manifest.start is None and not (release.workdir / manifest.main).exists():
        raise ValidationError(
            f"main file {manifest.main!r} is not in the release of {req.key}",
            hint="set `main` in tako.toml to a file the build produces",
        )
    extra = {
        "app": req.app,
        "env": req.env,
        "version": req.version,
        "vars": dict(req.vars),  # [vars] are not secret (they live in tako.toml)
        "routes": list(req.routes),
    }
    releases.write_app_json(release.workdir, manifest.model_dump(mode="json"), extra)
    ensure_data_dirs(release, req.storages)
    python = None
    if manifest.runtime_version and manifest.runtime in pinned.PINNABLE:  # before any instance
        pinned_bin = await pinned.provision(
            manifest.runtime, manifest.runtime_version, ctx.layout.data_dir,
            ctx.settings.runtime_registry,
        )
        python = str(pinned_bin / "python3") if manifest.runtime == "python" else None
    environ = instance_environ(
        release, req.vars, req.secrets, ctx.settings.inherited_env, storages=req.storages
    )
    await runtimes.prepare(
        manifest.runtime,
        manifest.install,
        release.workdir,
        environ,
        manifest.package_manager,
        python=python,
    )


async def _load_image(ctx: ServerContext, req: DeployRequest, release: ReleaseRef) -> None:
    """A container release: load its image archive into Podman (tagged for this release),
    delete the archive, write ``app.json``."""
    archive = release.workdir / podman.IMAGE_ARCHIVE
    ref = podman.image_ref(req.app, req.env, req.version)
    image_id = await podman.load_image(ctx.settings.container_socket, archive, ref)
    archive.unlink()
    log.info("loaded image %s (%s) for %s", ref, image_id[:19], req.key)
    extra = {
        "app": req.app,
        "env": req.env,
        "version": req.version,
        "vars": dict(req.vars),
        "routes": list(req.routes),
        "image": ref,
        "image_id": image_id,
    }
    releases.write_app_json(release.workdir, req.manifest.model_dump(mode="json"), extra)
    ensure_data_dirs(release, req.storages)


async def forget_image(ctx: ServerContext, app: str, env: str, version: str) -> None:
    """Remove the image of a release that failed (never raises: the deploy's error wins)."""
    try:
        ref = podman.image_ref(app, env, version)
        await podman.remove_images(ctx.settings.container_socket, [ref])
    except (TakoError, OSError) as exc:
        log.warning("removing the image of %s/%s@%s failed: %s", app, env, version, exc)


async def remove_app_images(ctx: ServerContext, app: str, env: str) -> None:
    """``tako delete``: the app's leftover containers and every image of it go."""
    socket = ctx.settings.container_socket
    if not socket.exists():
        return
    try:
        await podman.remove_app_containers(
            socket, f"{app}/{env}", ctx.layout.logs_dir(app, env)
        )
        await podman.remove_images(socket, await podman.app_images(socket, app, env))
    except (TakoError, OSError) as exc:
        log.warning("removing the containers and images of %s/%s failed: %s", app, env, exc)


async def prune_images(ctx: ServerContext, record: AppRecord, versions: Sequence[str]) -> None:
    """Remove the images of pruned releases of a container app (same retention as the
    release directories); a failure is logged, never fails the deploy."""
    if not versions or record.manifest.get("runtime") != "container":
        return
    refs = [podman.image_ref(record.app, record.env, v) for v in versions]
    try:
        await podman.remove_images(ctx.settings.container_socket, refs)
    except TakoError as exc:
        log.warning("pruning images of %s failed: %s", record.key, exc)


async def commit(
    ctx: ServerContext,
    record: AppRecord,
    secrets: dict[str, str],
    previous: AppRecord | None,
    release: ReleaseRef,
) -> list[str]:
    """Persist a successful rollout of ``release``: state, secrets, current link, pruning,
    certificates; then the edge routes to it."""
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
        await prune_images(ctx, record, pruned)
    warnings: list[str] = []
    if ctx.certs is not None:
        old_hosts = set(route_hosts(previous.routes)) if previous else set()
        new_hosts = route_hosts(record.routes)
        try:
            ctx.certs.ensure_hosts(new_hosts, cert_plan(ctx, record.app, record.env))
            unused = old_hosts - set(new_hosts) - hosts_in_use(ctx, exclude=record.key)
            if unused:
                ctx.certs.forget(sorted(unused))
        except TakoError as exc:
            warnings.append(f"certificates: {exc.message}")
    running = record.state == "running"
    images = image_rules_of(ctx, release)
    ctx.routing.set_app(
        record.key, record.routes, release.public_dir, running=running, images=images
    )
    return warnings


def cert_plan(ctx: ServerContext, app: str, env: str) -> CertPlan:
    """How the app's hosts get certificates: its ``ssl`` and ``ssl.cloudflare`` token."""
    ssl, _ = ctx.state.edge_settings(app, env)
    token = ctx.credentials.get(app, env).get("ssl.cloudflare")
    return CertPlan("cloudflare" if ssl == "cloudflare" else "letsencrypt", token or None)


def hosts_in_use(ctx: ServerContext, exclude: str) -> set[str]:
    hosts: set[str] = set()
    for key, routes in ctx.state.all_routes().items():
        if key != exclude:
            hosts.update(route_hosts(routes))
    return hosts


def release_app_json(
    ctx: ServerContext, record: AppRecord, version: str
) -> tuple[ReleaseManifest, dict[str, str] | None]:
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
            found = data.get("vars")
            variables = (
                {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None
            )
            return manifest_from(data), variables
    raise NotDeployed(f"release {version!r} of {record.key} has no app.json; it cannot be started")


async def restore_all(ctx: ServerContext) -> list[str]:
    """Register every persisted running app with the supervisor (after a restart).

    Containers (and processes) a previous server left running are adopted by the
    supervisor (:meth:`~tako_server.supervisor.runner.AppRunner.adopt`), never removed
    here: after a SIGHUP takeover they are the ones the predecessor released to this
    successor; containers of another version are removed there."""
    problems = []
    for key, mode in ctx.state.all_maintenance().items():  # before any app is routed
        ctx.routing.set_maintenance(key, mode.message)
    for record in ctx.state.list_apps():
        if record.state != "running":
            continue
        try:
            await register(ctx, record)
        except (TakoError, OSError) as exc:
            problems.append(f"{record.key}: {exc}")
            log.error("restore of %s failed: %s", record.key, exc)
    if ctx.certs is not None:
        for key, routes in sorted(ctx.state.all_routes().items()):
            app, env = key.split("/", 1)
            try:
                ctx.certs.ensure_hosts(sorted(set(route_hosts(routes))), cert_plan(ctx, app, env))
            except TakoError as exc:
                problems.append(f"certificates of {key}: {exc}")
    return problems


async def register(ctx: ServerContext, record: AppRecord) -> None:
    """Hand an app to the supervisor without a rollout (restore, or scale of a stopped app)
    and its routes to the routing state (running)."""
    secrets = ctx.secrets.get(record.app, record.env)
    release = release_of(ctx, record)
    spec = spec_for(ctx, release, record.vars, secrets)
    await ctx.supervisor.restore(spec, record.desired_instances, record.idle_timeout)
    ctx.routing.set_source_ip(record.key, ctx.state.edge_settings(record.app, record.env)[1])
    if ctx.workflows is not None:
        await ctx.workflows.restart(spec, record.idle_timeout)
    ctx.routing.set_app(
        record.key, record.routes, release.public_dir, images=image_rules_of(ctx, release)
    )


def image_rules_of(ctx: ServerContext, release: ReleaseRef) -> ImageRules | None:
    """The edge's image rules for ``release`` (its ``[images]``), cached in the app's dir."""
    cache_dir = ctx.layout.image_cache_dir(release.app, release.env)
    return image_rules(release.manifest.images, cache_dir)


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
