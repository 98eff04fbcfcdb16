"""``tako deploy [--env production] [--yes] [-c FILE] [DIR]``.

Validates the environment (declared, routed, not ``development``, servers mapped, secrets
complete, every S3 storage with credentials, ``local`` storage on one server only), builds
or reuses the artifact, then deploys to every server in parallel
(:mod:`tako_client.deploy`) and prints one line per server, the URLs and a summary. Any
failed server makes the exit code 1; when every server failed the summary says so and no
URL is printed. Interactive production deploys ask first unless ``--yes``. With a
``release`` command the servers prepare, the leader runs it, then they roll out
(:mod:`tako_client.release`; ``--release-timeout`` overrides the server's limit).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from tako_client import output, release
from tako_client.appctx import AppContext, build_plan, load_app, select_servers
from tako_client.build import build_artifact
from tako_client.build.artifacts import BuiltArtifact
from tako_client.build.container import build_container_artifact, pick_builder
from tako_client.build.plan import Target, target_label
from tako_client.build.presets import load_preset
from tako_client.credentials import load_credentials
from tako_client.deploy import (
    DeployTarget,
    ServerOutcome,
    deploy_to_server,
    failure_summary,
    image_settings,
    lock_owner,
    route_urls,
)
from tako_client.fanout import HostResult, failed
from tako_client.global_config import GlobalConfig, ServerEntry
from tako_client.release import ReleaseCoordinator, ReleaseStep, release_step
from tako_client.secrets import decrypt_env, extra_for_env, missing_for_env
from tako_client.sessions import Session, on_servers
from tako_client.ssh import SshClient
from tako_client.storages import plan_storages
from tako_common.config import (
    deploy_check,
    env_routes,
    idle_timeout_for,
    merged_vars,
    release_command,
)
from tako_common.errors import TakoError

EnvOpt = typer.Option("production", "--env", "-e", help="Environment to deploy.")
ConfigOpt = typer.Option(None, "--config", "-c", help="Path to tako.toml (app dir = its parent).")


def register(app: typer.Typer) -> None:
    app.command("deploy", help="Build the app and deploy it to every server of an environment.")(
        deploy_command
    )


def deploy_command(
    directory: Path | None = typer.Argument(None, help="App directory (default: current)."),
    env: str = EnvOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: str | None = ConfigOpt,
    release_timeout: int | None = typer.Option(
        None,
        "--release-timeout",
        min=1,
        help="Seconds the release command may run (default: the server's, 10 minutes).",
    ),
    builder: str | None = typer.Option(
        None,
        "--builder",
        help="Container releases: build the image with podman or docker (default: whichever "
        "is installed, podman first).",
    ),
) -> None:
    ctx = load_app(config, directory, env)
    for warning in ctx.loaded.warnings:
        output.warn(warning)
    deploy_check(ctx.loaded, env)
    selection = select_servers(ctx, GlobalConfig.load())
    if selection.note:
        output.warn(selection.note)
    secrets = _secrets(ctx)
    credentials = load_credentials(ctx.app_dir, env)
    storage = plan_storages(ctx, [entry.name for entry in selection.servers])
    if storage.new_backup_key:
        output.warn(
            f"made backup key {storage.new_backup_key} for {env} (encrypted in "
            ".tako/secrets.json): without it and the env key no backup can be read; "
            f"keep the env key safe (`tako secrets key export --env {env}`)"
        )
    if env == "production" and not yes and output.is_interactive():
        if not typer.confirm(f"Deploy {ctx.app} to production now?", default=False):
            output.line("Deployment cancelled.")
            raise typer.Exit(1)
    if ctx.loaded.config.container is not None:
        artifacts = _build_container(ctx, selection.servers, builder)
    else:
        artifacts = _build(ctx, selection.servers)
    targets = {
        entry.name: DeployTarget(
            app=ctx.app,
            env=env,
            routes=env_routes(ctx.loaded, env),
            vars=merged_vars(ctx.loaded, env, {}),
            secrets=secrets,
            instances=_instances(ctx, entry),
            idle_timeout=idle_timeout_for(ctx.loaded, env, entry.name),
            storages=storage.bindings,
            backup=storage.backup_for(entry.name),
            images=image_settings(ctx.loaded.config.images),
            credentials=credentials,
        )
        for entry in selection.servers
    }
    step = release_step(
        release_command(ctx.loaded, env), [e.name for e in selection.servers], release_timeout
    )
    results = asyncio.run(_deploy_all(targets, selection.servers, artifacts, step))
    version = next(iter(artifacts.values())).version
    _summary(ctx.key, env_routes(ctx.loaded, env), results, version)


def _secrets(ctx: AppContext) -> dict[str, str]:
    missing = missing_for_env(ctx.app_dir, ctx.env)
    if missing:
        raise TakoError(
            f"environment '{ctx.env}' is missing secrets that other environments define: "
            + ", ".join(missing),
            hint=f"set them with `tako secrets set NAME --env {ctx.env}`",
        )
    extra = extra_for_env(ctx.app_dir, ctx.env)
    if extra:
        output.warn(f"secrets only '{ctx.env}' defines: {', '.join(extra)}")
    return decrypt_env(ctx.app_dir, ctx.env)


def _instances(ctx: AppContext, entry: ServerEntry) -> int | None:
    """Desired instances only when the (legacy) config says so; else the server keeps its own."""
    hints = ctx.loaded.legacy
    server_hints = hints.servers.get(entry.name)
    if server_hints is not None and server_hints.instances is not None:
        return server_hints.instances
    return hints.instances


def _target_of(entry: ServerEntry) -> Target | None:
    return Target(entry.arch, entry.libc) if entry.arch and entry.libc else None


def _build(ctx: AppContext, servers: list[ServerEntry]) -> dict[str, BuiltArtifact]:
    """One artifact per build target (interpreted runtimes share one); keyed by server."""
    plan = build_plan(ctx)
    output.section("Build")
    by_label: dict[str, BuiltArtifact] = {}
    result: dict[str, BuiltArtifact] = {}
    preset = load_preset(plan.runtime, plan.preset)
    for entry in servers:
        target = _target_of(entry)
        label = target_label(preset.target_specific, target)
        if label not in by_label:
            with output.spinner(f"Building {ctx.app} for {label}..."):
                by_label[label] = build_artifact(
                    plan, ctx.app_dir, target=target, on_output=output.detail
                )
            built = by_label[label]
            how = "cached" if built.cache_hit else "built"
            output.success(f"{how} {built.version} ({built.size / 1024:.0f} KiB, {label})")
        result[entry.name] = by_label[label]
    return result


def _build_container(
    ctx: AppContext, servers: list[ServerEntry], builder: str | None
) -> dict[str, BuiltArtifact]:
    """One image archive for every server (docs/containers.md)."""
    config = ctx.loaded.config
    assert config.container is not None
    tool = pick_builder(builder)
    output.section("Build")
    with output.spinner(f"Building the image of {ctx.app} with {tool}..."):
        built = build_container_artifact(
            ctx.app_dir,
            config.container,
            app=ctx.app,
            builder=tool,
            read_only=config.container_read_only is not False,
            on_output=output.detail,
        )
    how = "cached" if built.cache_hit else "built"
    output.success(f"{how} image {built.version} ({built.size / 1024:.0f} KiB, {tool})")
    return {entry.name: built for entry in servers}


async def _deploy_all(
    targets: dict[str, DeployTarget],
    servers: list[ServerEntry],
    artifacts: dict[str, BuiltArtifact],
    step: ReleaseStep | None = None,
) -> list[HostResult[ServerOutcome]]:
    output.section("Deploy")
    owner = lock_owner()
    client = SshClient.from_env()
    progress = output.transfer_progress()
    coordinator = ReleaseCoordinator(step) if step is not None else None

    async def one(session: Session) -> ServerOutcome:
        name = session.entry.name
        outcome = await deploy_to_server(
            session,
            targets[name],
            artifacts[name],
            owner=owner,
            progress=progress.callback(name),
            before_rollout=coordinator.hook(name) if coordinator is not None else None,
        )
        output.success(
            f"{name}: {outcome.data.version} running "
            f"({outcome.data.instances} instance{'s' if outcome.data.instances != 1 else ''}"
            f"{', upload skipped' if not outcome.uploaded else ''})"
        )
        return outcome

    with progress:
        if coordinator is not None:
            return await release.on_servers(client, servers, one, coordinator)
        return await on_servers(client, servers, one)


def _summary(
    key: str, routes: list[str], results: list[HostResult[ServerOutcome]], version: str
) -> None:
    """One line per server; revision and URLs when any server runs it; exit 1 on failures."""
    output.section("Summary")
    for result in results:
        if result.ok:
            output.success(f"{result.server}: deployed")
        else:
            assert result.error is not None
            output.error(f"{result.server}: {result.error.message}", result.error.hint)
    bad = failed(results)
    if len(bad) < len(results):
        output.line(f"Revision: {version}")
        for url in route_urls(routes):
            output.line(f"URL     : {url}")
    verdict = failure_summary(key, len(results) - len(bad), len(results))
    if verdict is not None:
        hint = None if len(bad) < len(results) else "no server switched to this release"
        output.error(verdict, hint)
        raise typer.Exit(1)
