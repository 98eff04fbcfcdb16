"""``tako servers add|ls|rm|status``: the global server inventory and a live look at it.

Rules:

- the inventory is ``$TAKO_HOME/config.toml`` (:mod:`tako_client.global_config`);
- ``add HOST --name N`` connects as ``tako``, detects the build target (``uname -m``,
  ``ldd --version``) and checks that tako-server answers ``hello`` before saving;
  ``--no-test`` saves without connecting. Adding the same name/host/port again is a no-op;
- ``rm NAME`` asks on a terminal; without one it needs ``--yes``. It only edits the local
  inventory, never the server;
- ``status`` needs no tako.toml: every server is asked in parallel; one block per server
  and one line per deployed app/env; unreachable servers are reported and make the exit
  code 1 (after every server was shown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import typer

from tako_client import output
from tako_client.fanout import HostResult, failed, fan_out
from tako_client.global_config import ARCHES, GlobalConfig, ServerEntry, normalize_arch
from tako_client.remote import RemoteServer
from tako_client.ssh import SshClient, SshTarget
from tako_common.errors import TakoError, ValidationError
from tako_common.protocol import AppStatus, HelloData, ServerInfoData, StatusData


def register(app: typer.Typer) -> None:
    """Add the ``servers`` sub-command group to ``app``."""
    servers = typer.Typer(
        name="servers", help="Manage the servers you deploy to.", no_args_is_help=True
    )
    servers.command("add", help="Add a server (checks SSH and tako-server first).")(add_command)
    servers.command("ls", help="List configured servers.")(ls_command)
    servers.command("list", hidden=True)(ls_command)
    servers.command("rm", help="Remove a server from the local inventory.")(rm_command)
    servers.command("remove", hidden=True)(rm_command)
    servers.command("delete", hidden=True)(rm_command)
    servers.command("status", help="Show every server and the apps deployed on it.")(status_command)
    app.add_typer(servers, name="servers")


def target_of(entry: ServerEntry) -> SshTarget:
    return SshTarget(entry.host, entry.port, label=entry.name)


# --------------------------------------------------------------------------- add


@dataclass(frozen=True)
class Probe:
    """What ``servers add`` learned about a host."""

    arch: str
    libc: str
    server_version: str


def parse_libc(ldd_output: str) -> str:
    """``glibc`` or ``musl`` from the output of ``ldd --version`` (stdout and stderr)."""
    text = ldd_output.lower()
    if "musl" in text:
        return "musl"
    if "glibc" in text or "gnu libc" in text or "gnu c library" in text:
        return "glibc"
    first = ldd_output.strip().splitlines()[0] if ldd_output.strip() else "(no output)"
    raise ValidationError(
        f"cannot tell the C library from `ldd --version`: {first}",
        hint="tako supports glibc and musl Linux hosts",
    )


def parse_arch(uname_output: str) -> str:
    arch = normalize_arch(uname_output.strip())
    if arch not in ARCHES:
        raise ValidationError(
            f"unsupported architecture {arch!r}: tako supports {', '.join(ARCHES)}"
        )
    return arch


async def probe_server(ssh: SshClient, target: SshTarget) -> Probe:
    async with await ssh.connect(target) as conn:
        uname = await conn.run("uname -m")
        if uname.exit != 0:
            raise TakoError(f"`uname -m` failed on {target.display}: {uname.stderr.strip()}")
        ldd = await conn.run("ldd --version 2>&1")
        arch, libc = parse_arch(uname.stdout), parse_libc(ldd.stdout)
        async with RemoteServer(conn) as server:
            try:
                hello = await server.hello()
            except TakoError as exc:
                raise TakoError(
                    f"tako-server on {target.display} did not answer: {exc.message}",
                    hint="install and start tako-server there, or pass --no-test to add it anyway",
                    code=exc.code,
                ) from exc
    return Probe(arch, libc, hello.server_version)


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
) -> None:
    """Add a server to the inventory."""
    entry = ServerEntry(name=name, host=host, port=port, description=description)
    GlobalConfig.load().add(entry)  # name/host clashes are reported before connecting
    if not no_test:
        target = target_of(entry)
        with output.spinner(f"Connecting to {target.display} as tako..."):
            probe = asyncio.run(probe_server(SshClient.from_env(), target))
        output.success(
            f"{target.display}: linux-{probe.arch}-{probe.libc}, tako-server {probe.server_version}"
        )
        entry = ServerEntry(
            name=name,
            host=host,
            port=port,
            description=description,
            arch=probe.arch,
            libc=probe.libc,
        )
    config = GlobalConfig.load()
    outcome = config.add(entry)
    if outcome == "unchanged":
        output.success(f"server {name!r} is already configured ({host}:{port})")
        return
    config.save()
    verb = "added" if outcome == "added" else "updated"
    output.success(f"{verb} server {name!r} ({host}:{port}) in {config.path}")
    if no_test:
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
    return f"reachable, tako-server {report.hello.server_version}, mode {mode}, {apps} app(s)"


def app_line(app: AppStatus) -> str:
    """``app/env  state  healthy/desired healthy  version  deployed``."""
    parts = [
        f"{app.app}/{app.env}",
        app.state,
        f"{app.healthy_instances}/{app.desired_instances} healthy",
        f"version {app.version or '-'}",
        f"deployed {app.deployed_at or '-'}",
    ]
    if app.last_error:
        parts.append(f"last error: {app.last_error}")
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
