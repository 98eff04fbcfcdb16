"""``tako servers add|ls|rm|status``: the global server inventory and a live look at it.

Rules:

- the inventory is ``$TAKO_HOME/config.toml`` (:mod:`tako_client.global_config`);
- ``add HOST --name N`` connects as ``tako``, detects the build target (``uname -m``,
  ``ldd --version``) and checks that tako-server answers ``hello`` before saving;
  ``--no-test`` saves without connecting. Adding the same name/host/port again is a no-op;
- ``add HOST --name N --install [--artifact TARBALL] [--user root]`` first installs
  tako-server over a root (or passwordless-sudo) login and authorises the caller's key
  for ``tako`` (:mod:`tako_client.bootstrap`), then adds the server by the same code path;
- ``rm NAME`` asks on a terminal; without one it needs ``--yes``. It only edits the local
  inventory, never the server;
- ``status`` needs no tako.toml: every server is asked in parallel; one block per server
  and one line per deployed app/env; unreachable servers are reported and make the exit
  code 1 (after every server was shown).
- ``restart NAME`` = a graceful takeover (``docs/upgrade.md``): ``kill -HUP <pid>`` over
  SSH (the pid from ``server_info``; same user), then follow it through ``server_info``
  until another process answers and the old one has exited; a failed takeover is
  reported at once with the server's reason (:mod:`tako_client.takeover`).
- ``upgrade NAME [--artifact TARBALL]``: the same inside upgrading mode (deploys are
  refused meanwhile; owner ``upgrade-{name}-{unix}-{pid}``); with ``--artifact`` the
  release tarball and its ``.sha256`` are uploaded and installed first (a passwordless
  ``sudo -n`` installer helper, else an in-place replace of a binary that ``tako`` may
  write). After entering upgrading mode, any failure makes a best-effort exit of it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import typer

from tako_client import bootstrap, output
from tako_client.fanout import HostResult, failed, fan_out
from tako_client.global_config import GlobalConfig, ServerEntry
from tako_client.remote import RemoteServer
from tako_client.server_release import detect_target, install_release, read_checksum
from tako_client.server_release import parse_arch as parse_arch  # re-exported (tests)
from tako_client.server_release import parse_libc as parse_libc  # re-exported (tests)
from tako_client.sessions import target_of
from tako_client.ssh import Connection, SshClient, SshTarget
from tako_client.takeover import Restarted, reload_server
from tako_common.errors import TakoError, ValidationError
from tako_common.protocol import AppStatus, HelloData, ServerInfoData, StatusData


def register(app: typer.Typer) -> None:
    """Add the ``servers`` sub-command group to ``app``."""
    servers = typer.Typer(
        name="servers", help="Manage the servers you deploy to.", no_args_is_help=True
    )
    servers.command(
        "add", help="Add a server (checks SSH and tako-server first; --install installs it)."
    )(add_command)
    servers.command("ls", help="List configured servers.")(ls_command)
    servers.command("list", hidden=True)(ls_command)
    servers.command("rm", help="Remove a server from the local inventory.")(rm_command)
    servers.command("remove", hidden=True)(rm_command)
    servers.command("delete", hidden=True)(rm_command)
    servers.command("status", help="Show every server and the apps deployed on it.")(status_command)
    servers.command("restart", help="Restart tako-server gracefully (zero downtime).")(
        restart_command
    )
    servers.command("upgrade", help="Upgrade tako-server and restart it gracefully.")(
        upgrade_command
    )
    app.add_typer(servers, name="servers")


# --------------------------------------------------------------------------- add


@dataclass(frozen=True)
class HostFacts:
    """What ``servers add`` learned about a host."""

    arch: str
    libc: str
    server_version: str


async def probe_server(ssh: SshClient, target: SshTarget) -> HostFacts:
    async with await ssh.connect(target) as conn:
        arch, libc = await detect_target(conn)
        async with RemoteServer(conn) as server:
            try:
                hello = await server.hello()
            except TakoError as exc:
                raise TakoError(
                    f"tako-server on {target.display} did not answer: {exc.message}",
                    hint="install and start tako-server there, or pass --no-test to add it anyway",
                    code=exc.code,
                ) from exc
    return HostFacts(arch, libc, hello.server_version)


def add_command(
    host: str = typer.Argument(..., help="Host name or address of the server."),
    name: str = typer.Option(
        ..., "--name", "-n", help="Name of the server in tako.toml and commands."
    ),
    port: int = typer.Option(22, "--port", "-p", help="SSH port."),
    description: str | None = typer.Option(
        None, "--description", help="Free text shown by `servers ls`."
    ),
    no_test: bool = typer.Option(
        False, "--no-test", help="Save without connecting (no target detection)."
    ),
    install: bool = typer.Option(
        False, "--install", help="First install tako-server there over a root or sudo login."
    ),
    artifact: Path | None = typer.Option(
        None,
        "--artifact",
        help="With --install: release tarball (.sha256 beside it); default: newest in dist/.",
    ),
    user: str | None = typer.Option(
        None, "--user", help="With --install: SSH login user, root or a sudoer (default root)."
    ),
) -> None:
    """Add a server to the inventory (with --install: install tako-server there first)."""
    if not install and (artifact is not None or user is not None):
        raise ValidationError("--artifact and --user only go with --install")
    if install and no_test:
        raise ValidationError(
            "--install cannot be combined with --no-test",
            hint="--install tests the server it installed before saving it",
        )
    entry = ServerEntry(name=name, host=host, port=port, description=description)
    GlobalConfig.load().add(entry)  # name/host clashes are reported before connecting
    ssh = None if no_test else SshClient.from_env()
    if ssh is not None and install:
        bootstrap.precheck(artifact)
        login = SshTarget(host, port, label=name, user=user or "root")
        with output.spinner(f"Installing tako-server on {login.display} as {login.user}..."):
            done = asyncio.run(bootstrap.install_on_host(ssh, login, artifact))
        bootstrap.report(login, done)
    add_server(entry, ssh)


def add_server(entry: ServerEntry, ssh: SshClient | None) -> None:
    """HostFacts the server as ``tako`` (unless ``ssh`` is None: --no-test), then save it."""
    if ssh is not None:
        target = target_of(entry)
        with output.spinner(f"Connecting to {target.display} as tako..."):
            probe = asyncio.run(probe_server(ssh, target))
        output.success(
            f"{target.display}: linux-{probe.arch}-{probe.libc}, tako-server {probe.server_version}"
        )
        entry = replace(entry, arch=probe.arch, libc=probe.libc)
    config = GlobalConfig.load()
    outcome = config.add(entry)
    name, where = entry.name, f"{entry.host}:{entry.port}"
    if outcome == "unchanged":
        output.success(f"server {name!r} is already configured ({where})")
        return
    config.save()
    verb = "added" if outcome == "added" else "updated"
    output.success(f"{verb} server {name!r} ({where}) in {config.path}")
    if ssh is None:
        output.warn(
            "not tested: deploys need the build target; "
            "run `tako servers add` again without --no-test"
        )


# --------------------------------------------------------------------------- ls / rm


def ls_command() -> None:
    """List configured servers."""
    config = GlobalConfig.load()
    if not config.servers:
        output.line("No servers configured.")
        output.line("Add one with: tako servers add HOST --name NAME")
        return
    rows = [("NAME", "HOST", "PORT", "TARGET", "DESCRIPTION")]
    rows += [
        (s.name, s.host, str(s.port), s.target_label or "-", s.description or "")
        for s in config.servers
    ]
    for row in align(rows):
        output.line(row)


def align(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns separated by two spaces; trailing blanks trimmed."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def rm_command(
    name: str = typer.Argument(..., help="Name of the server to remove."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove a server from the local inventory (the server itself is not touched)."""
    config = GlobalConfig.load()
    entry = config.require(name)
    if not yes:
        if not output.is_interactive():
            raise TakoError(
                f"removing server {name!r} needs confirmation",
                hint="pass --yes to remove it in a non-interactive session",
            )
        if not typer.confirm(
            f"Remove server {name!r} ({entry.host}:{entry.port}) from {config.path}?", default=False
        ):
            output.line("Cancelled.")
            return
    config.remove(name)
    config.save()
    output.success(f"removed server {name!r}")


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class ServerReport:
    hello: HelloData
    info: ServerInfoData
    status: StatusData


async def fetch_report(ssh: SshClient, entry: ServerEntry) -> ServerReport:
    async with await ssh.connect(target_of(entry)) as conn, RemoteServer(conn) as server:
        hello = await server.hello()
        return ServerReport(hello, await server.server_info(), await server.status())


def server_line(report: ServerReport) -> str:
    mode: str = report.info.mode
    if report.info.upgrade_owner:
        mode += f" (by {report.info.upgrade_owner})"
    apps = len(report.status.apps)
    containers = report.info.containers or "unknown (older tako-server)"
    line = (
        f"reachable, tako-server {report.hello.server_version}, mode {mode}, {apps} app(s), "
        f"containers: {containers}"
    )
    if report.info.runtimes:
        line += f", pinned runtimes: {', '.join(report.info.runtimes)}"
    return line


def app_line(app: AppStatus) -> str:
    """``app/env  state  [MAINTENANCE since ...]  healthy/desired healthy  version  deployed``."""
    parts = [
        f"{app.app}/{app.env}",
        app.state,
        f"{app.healthy_instances}/{app.desired_instances} healthy",
        f"version {app.version or '-'}",
        f"deployed {app.deployed_at or '-'}",
    ]
    if app.maintenance:
        parts.insert(2, f"MAINTENANCE since {app.maintenance_since or '-'}")
    if app.last_error:
        parts.append(f"last error: {app.last_error}")
    if app.backup_error:
        parts.append(f"BACKUP FAILED: {app.backup_error}")
    return "  ".join(parts)


def print_report(entry: ServerEntry, result: HostResult[ServerReport]) -> None:
    output.section(f"{entry.name} ({entry.host}:{entry.port})")
    if result.error is not None:
        output.error(f"unreachable: {result.error.message}", result.error.hint)
        return
    report = result.value
    assert report is not None
    output.success(server_line(report))
    if not report.status.apps:
        output.bullet("no apps deployed")
    for app in sorted(report.status.apps, key=lambda a: (a.app, a.env)):
        output.bullet(app_line(app))
        if app.backup_error:
            output.warn(f"{app.app}/{app.env}: the last backup failed (see `tako backups status`)")


def status_command() -> None:
    """Show every configured server and the apps deployed on it."""
    config = GlobalConfig.load()
    entries = config.servers
    if not entries:
        output.line("No servers configured.")
        output.line("Add one with: tako servers add HOST --name NAME")
        return
    ssh = SshClient.from_env()
    with output.spinner(f"Asking {len(entries)} server(s)..."):
        results = asyncio.run(fan_out(entries, lambda e: e.name, lambda e: fetch_report(ssh, e)))
    for entry, result in zip(entries, results, strict=True):
        print_report(entry, result)
    bad = failed(results)
    output.line()
    if bad:
        raise TakoError(
            f"{len(bad)} of {len(results)} server(s) could not be reached: "
            f"{', '.join(r.server for r in bad)}"
        )
    output.success(f"{len(results)} server(s) reachable")


# --------------------------------------------------------------------------- restart / upgrade


def upgrade_owner(name: str, now: float, pid: int) -> str:
    """Upgrade-mode owner of one CLI run (characters outside [A-Za-z0-9] become '-')."""
    return re.sub(r"[^A-Za-z0-9]", "-", f"upgrade-{name}-{int(now)}-{pid}")


async def restart_server(ssh: SshClient, entry: ServerEntry) -> Restarted:
    async with await ssh.connect(target_of(entry)) as conn:
        async with RemoteServer(conn) as server:
            await server.hello()
            info = await server.server_info()
        if info.mode == "upgrading":
            raise TakoError(
                f"{entry.name} is upgrading (owner {info.upgrade_owner}); restart refused",
                hint="wait for that upgrade to finish",
            )
        return await reload_server(conn, info)


def _report(entry: ServerEntry, result: Restarted, verb: str) -> None:
    output.success(
        f"{verb} tako-server on {entry.name}: pid {result.old_pid} -> {result.new_pid}"
        f" (tako-server {result.version})"
    )
    if not result.old_gone:
        output.warn(f"the old process (pid {result.old_pid}) is still draining connections")


def restart_command(name: str = typer.Argument(..., help="Name of the server.")) -> None:
    """Restart tako-server without dropping a request (a graceful takeover)."""
    entry = GlobalConfig.load().require(name)
    with output.spinner(f"Restarting tako-server on {name}..."):
        result = asyncio.run(restart_server(SshClient.from_env(), entry))
    _report(entry, result, "restarted")


# -- upgrade -----------------------------------------------------------------------------


async def upgrade_server(
    ssh: SshClient, entry: ServerEntry, artifact: Path | None, owner: str
) -> Restarted:
    async with await ssh.connect(target_of(entry)) as conn:
        async with RemoteServer(conn) as server:
            await server.hello()
            info = await server.server_info()
            await server.enter_upgrading(owner)
        try:
            if artifact is not None:
                how = await install_release(conn, info, artifact)
                output.detail(f"installed {artifact.name} ({how})")
            result = await reload_server(conn, info)
        except BaseException:
            await _exit_upgrading(conn, owner)
            raise
        await _exit_upgrading(conn, owner, strict=True)
        return result


async def _exit_upgrading(conn: Connection, owner: str, *, strict: bool = False) -> None:
    try:
        async with RemoteServer(conn) as server:
            await server.exit_upgrading(owner)
    except TakoError as exc:
        if strict:
            raise
        output.warn(f"could not leave upgrading mode: {exc.message}")


def upgrade_command(
    name: str = typer.Argument(..., help="Name of the server."),
    artifact: Path | None = typer.Option(
        None,
        "--artifact",
        help="Release tarball (tako-server-linux-<arch>-<libc>.tar.gz, .sha256 beside it).",
    ),
) -> None:
    """Install a new tako-server (optional) and hand over to it without dropping requests."""
    entry = GlobalConfig.load().require(name)
    if artifact is not None:
        read_checksum(artifact)  # refuse a bad tarball before touching the server
    owner = upgrade_owner(name, time.time(), os.getpid())
    with output.spinner(f"Upgrading tako-server on {name}..."):
        result = asyncio.run(upgrade_server(SshClient.from_env(), entry, artifact, owner))
    _report(entry, result, "upgraded")
