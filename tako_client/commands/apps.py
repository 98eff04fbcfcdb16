"""App-scoped commands over every server of an environment: ``logs``, ``releases ls``,
``releases rollback``, ``scale``, ``delete`` and ``secrets sync``.

Rules: the app is the one of ``-c FILE`` or ``DIR/tako.toml``; every server of the
environment is asked in parallel; every host's result is printed and any failure makes
the exit code 1. Destructive commands (``delete``, production ``rollback``) ask on a
terminal and need ``--yes`` without one. Secret values travel only inside requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

import typer

from tako_client import output
from tako_client.appctx import app_dir_for, load_app, servers_of
from tako_client.commands.secrets import secrets_app
from tako_client.fanout import HostResult, failed
from tako_client.global_config import ServerEntry
from tako_client.secrets import decrypt_env, list_secrets
from tako_client.sessions import Session, on_servers
from tako_client.ssh import SshClient
from tako_common.errors import TakoError
from tako_common.protocol import DeployData, ReleasesData

T = TypeVar("T")

EnvOpt = typer.Option("production", "--env", "-e", help="Environment.")
ConfigOpt = typer.Option(None, "--config", "-c", help="Path to tako.toml (app dir = its parent).")
DirArg = typer.Argument(None, help="App directory (default: current).")

releases_app = typer.Typer(
    name="releases", help="List releases and roll back.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.command("logs", help="Show (and follow) app logs from every server.")(logs_command)
    releases_app.command("ls", help="List releases, newest first.")(releases_ls)
    releases_app.command("list", hidden=True)(releases_ls)
    releases_app.command("rollback", help="Roll back to an earlier release.")(releases_rollback)
    app.add_typer(releases_app, name="releases")
    app.command("scale", help="Set the number of instances (0 = scale to zero).")(scale_command)
    app.command("delete", help="Delete the app's environment from its servers.")(delete_command)
    secrets_app.command("sync", help="Send secrets to the servers; instances restart.")(
        sync_command
    )



def _run(
    servers: list[ServerEntry], operation: Callable[[Session], Awaitable[T]]
) -> list[HostResult[T]]:
    return asyncio.run(on_servers(SshClient.from_env(), servers, operation))


def _report(results: list[HostResult[Any]], what: str, describe: Callable[[Any], str]) -> None:
    for result in results:
        if result.ok:
            output.success(f"{result.server}: {describe(result.value)}")
        else:
            assert result.error is not None
            output.error(f"{result.server}: {result.error.message}", result.error.hint)
    bad = failed(results)
    if bad:
        output.error(f"{what} failed on {len(bad)} of {len(results)} servers")
        raise typer.Exit(1)


def _confirm_or_exit(question: str, yes: bool, flag_hint: str) -> None:
    if yes:
        return
    if not output.is_interactive():
        raise TakoError(f"{question.rstrip('?')} needs confirmation", hint=flag_hint)
    if not typer.confirm(question, default=False):
        output.line("Cancelled.")
        raise typer.Exit(1)


# --------------------------------------------------------------------------- logs


def logs_command(
    directory: Path | None = DirArg,
    env: str = EnvOpt,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new lines."),
    lines: int = typer.Option(100, "--lines", "-n", min=0, help="Lines of history per server."),
    config: str | None = ConfigOpt,
) -> None:
    ctx = load_app(config, directory, env)
    servers = servers_of(ctx)

    async def one(session: Session) -> int:
        prefix = f"[{session.entry.name}] "
        count = 0
        if follow:
            async with aclosing(session.remote.follow_logs(ctx.app, env, lines)) as stream:
                async for line in stream:
                    output.line(prefix + line)
                    count += 1
        else:
            for line in (await session.remote.logs(ctx.app, env, lines)).lines:
                output.line(prefix + line)
                count += 1
        return count

    try:
        results = _run(servers, one)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    bad = failed(results)
    for result in bad:
        assert result.error is not None
        output.error(f"{result.server}: {result.error.message}", result.error.hint)
    if bad:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- releases


def releases_ls(
    directory: Path | None = DirArg, env: str = EnvOpt, config: str | None = ConfigOpt
) -> None:
    ctx = load_app(config, directory, env)

    async def one(session: Session) -> ReleasesData:
        return await session.remote.list_releases(ctx.app, env)

    results = _run(servers_of(ctx), one)
    for result in results:
        output.section(result.server)
        if result.value is None:
            assert result.error is not None
            output.error(result.error.message, result.error.hint)
            continue
        if not result.value.releases:
            output.line("  no releases")
        for rel in result.value.releases:
            mark = "*" if rel.current else " "
            state = "dirty" if rel.git_dirty else "clean"
            message = (rel.commit_message or "").splitlines()[0] if rel.commit_message else ""
            output.line(
                f"{mark} {rel.version:<24} {rel.deployed_at or '':<25} {state:<5} {message}"
            )
    if failed(results):
        raise typer.Exit(1)


def releases_rollback(
    version: str = typer.Argument(..., help="Release version to roll back to."),
    directory: Path | None = DirArg,
    env: str = EnvOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: str | None = ConfigOpt,
) -> None:
    ctx = load_app(config, directory, env)
    if env == "production":
        _confirm_or_exit(f"Roll {ctx.app} back to {version} in production?", yes, "pass --yes")

    async def one(session: Session) -> DeployData:
        return await session.remote.rollback(ctx.app, env, version)

    results = _run(servers_of(ctx), one)
    _report(results, "rollback", lambda d: f"now running {d.version}")


# --------------------------------------------------------------------------- scale


def scale_command(
    instances: int = typer.Argument(..., min=0, max=64, help="Instances per server (0-64)."),
    directory: Path | None = DirArg,
    env: str = EnvOpt,
    server: str | None = typer.Option(None, "--server", "-s", help="Only this server."),
    group: str | None = typer.Option(
        None, "--group", "-g", help="Set this workflow group's workers instead."
    ),
    config: str | None = ConfigOpt,
) -> None:
    ctx = load_app(config, directory, env)

    async def one(session: Session) -> int:
        return (await session.remote.scale(ctx.app, env, instances, group)).instances

    results = _run(servers_of(ctx, server), one)
    if group is not None:
        _report(
            results, "scale", lambda n: f"{group}: {n} worker(s)" if n else f"{group}: on demand"
        )
        return
    _report(
        results,
        "scale",
        lambda n: "scaled to zero (starts on the next request)" if n == 0 else f"{n} instance(s)",
    )


# --------------------------------------------------------------------------- delete


def delete_command(
    directory: Path | None = DirArg,
    env: str = EnvOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: str | None = ConfigOpt,
) -> None:
    ctx = load_app(config, directory, env)
    servers = servers_of(ctx)
    _confirm_or_exit(
        f"Delete {ctx.key} from {', '.join(s.name for s in servers)} (with its data "
        "directory and local storages; backups in the bucket are kept)?",
        yes,
        "pass --yes to delete in non-interactive mode",
    )

    async def one(session: Session) -> bool:
        return (await session.remote.delete(ctx.app, env)).existed

    results = _run(servers, one)
    _report(results, "delete", lambda existed: "deleted" if existed else "was not deployed")


# --------------------------------------------------------------------------- secrets sync


def sync_command(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    config: str | None = ConfigOpt,
) -> None:
    if env is not None:
        envs = [env]
    else:
        declared = set(load_app(config, None, "development").loaded.config.envs)
        present = {e for names in list_secrets(app_dir_for(config)).values() for e in names}
        for name in sorted(present - declared):
            output.warn(f"secrets of '{name}' are not synced: no [envs.{name}] in tako.toml")
        envs = sorted((present & declared) - {"development"})
        if not envs:
            raise TakoError("no secrets to sync", hint="set one with `tako secrets set NAME`")
    failures = 0
    for name in envs:
        output.section(f"{name}")
        try:
            _sync_env(config, name)
        except TakoError as exc:
            output.error(exc.message, exc.hint)
            failures += 1
        except typer.Exit:
            failures += 1
    if failures:
        raise typer.Exit(1)


def _sync_env(config: str | None, env: str) -> None:
    ctx = load_app(config, None, env)
    values = decrypt_env(ctx.app_dir, env)

    async def one(session: Session) -> int:
        return (await session.remote.update_secrets(ctx.app, env, values)).count

    results = _run(servers_of(ctx), one)
    _report(results, "secrets sync", lambda n: f"{n} secret(s) synced; instances restarted")
