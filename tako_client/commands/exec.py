"""``tako exec [--env ENV] [--server NAME | --all] [-i] [-c FILE] -- COMMAND [ARGS]...``.

Runs a one-off command on a server of the environment (default: the leader, the first of
its servers in tako.toml; ``--all``: every server in parallel, each output line prefixed
with its server) in the app's current release directory, with the environment of its
instances (vars, secrets, storage bindings, ``TAKO_*``), which the server builds: secrets
never travel in argv and are never printed by the CLI.

Rules:

- bad input changes nothing and names the rule: an empty command, an unknown server,
  ``--server`` with ``--all``, ``--interactive`` with ``--all``; an environment with no
  deployed release is refused by the server ("not deployed on this server");
- output streams live; the exit code is the command's (128 + N when signal N ended it);
  with ``--all`` it is the first non-zero one in server order (1 when a server could not
  run it at all);
- ``-i/--interactive`` sends stdin; with a terminal on stdin the command gets a real TTY
  of the terminal's size (raw mode here: Ctrl-C and every key go to the remote terminal,
  window-size changes follow); without ``-i`` its stdin is ``/dev/null``;
- leaving (Ctrl-C without ``-i``, a lost connection) closes the session and the server
  kills the command.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass

import typer

from tako_client import output
from tako_client.appctx import load_app, select_servers
from tako_client.fanout import HostResult
from tako_client.global_config import GlobalConfig, ServerEntry
from tako_client.oneoff import OutputSink, raw_terminal, relay, terminal_size
from tako_client.remote import RemoteServer
from tako_client.sessions import Session, on_servers, open_session
from tako_client.ssh import SshClient
from tako_common.errors import TakoError, ValidationError
from tako_common.protocol import ExecRequest

EnvOpt = typer.Option("production", "--env", "-e", help="Environment.")
ConfigOpt = typer.Option(None, "--config", "-c", help="Path to tako.toml (app dir = its parent).")
CAPABILITY = "exec"
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def register(app: typer.Typer) -> None:
    app.command(
        "exec",
        help="Run a one-off command in the app's current release on a server "
        "(e.g. tako exec -- python manage.py shell -i).",
        context_settings={"allow_interspersed_args": False},
    )(exec_command)


@dataclass(frozen=True)
class ExecPlan:
    """What ``tako exec`` was asked to do, checked (pure: no I/O)."""

    argv: list[str]
    servers: list[str]
    interactive: bool
    #: ``--all``: every line is prefixed with its server
    prefixed: bool = False


def check_command(argv: list[str]) -> None:
    if not argv or not argv[0]:
        raise ValidationError(
            "tako exec needs a command: tako exec [OPTIONS] -- COMMAND [ARGS]...",
            hint="e.g. tako exec -- env, or tako exec -i -- python manage.py shell",
        )


def plan_exec(
    argv: list[str], env_servers: list[str], server: str | None, every: bool, interactive: bool
) -> ExecPlan:
    """Check the arguments against the environment's servers; the leader is the default."""
    check_command(argv)
    if server is not None and every:
        raise ValidationError("--server and --all exclude each other: pick one")
    if interactive and every:
        raise ValidationError(
            "--interactive attaches one terminal to one server: drop --all "
            "(or choose the server with --server)"
        )
    if server is not None and server not in env_servers:
        raise ValidationError(
            f"server '{server}' is not a server of this environment; "
            f"its servers: {', '.join(env_servers)}",
            hint="see `tako config` for the environment's servers",
        )
    if every:
        chosen = list(env_servers)
    else:
        chosen = [server if server is not None else env_servers[0]]
    return ExecPlan(argv=list(argv), servers=chosen, interactive=interactive, prefixed=every)


def exit_code_of(codes: list[int | None]) -> int:
    """The CLI's exit code over servers: the first non-zero command exit; 1 for a server
    that could not run it (``None``); 0 when every command succeeded."""
    for code in codes:
        if code is None:
            return 1
        if code != 0:
            return code
    return 0


def exec_command(
    command: list[str] | None = typer.Argument(
        None, metavar="-- COMMAND [ARGS]...", help="The command to run (after --)."
    ),
    env: str = EnvOpt,
    server: str | None = typer.Option(
        None, "--server", "-s", help="Run on this server (default: the environment's first)."
    ),
    every: bool = typer.Option(
        False, "--all", help="Run on every server of the environment, in parallel."
    ),
    interactive: bool = typer.Option(
        False, "--interactive", "-i", help="Send stdin; a real TTY when stdin is a terminal."
    ),
    config: str | None = ConfigOpt,
) -> None:
    argv = list(command or [])
    check_command(argv)  # before reading any config: nothing to run is said first
    ctx = load_app(config, None, env)
    entries = select_servers(ctx, GlobalConfig.load()).servers
    plan = plan_exec(argv, [e.name for e in entries], server, every, interactive)
    chosen = [e for name in plan.servers for e in entries if e.name == name]
    tty = plan.interactive and sys.stdin.isatty()
    request = _request(ctx.app, env, plan, tty)
    if plan.prefixed:
        code = asyncio.run(_exec_everywhere(chosen, request))
    else:
        code = asyncio.run(_exec_one(chosen[0], request))
    raise typer.Exit(code)


def _request(app: str, env: str, plan: ExecPlan, tty: bool) -> ExecRequest:
    cols, rows = terminal_size() if tty else (80, 24)
    term = os.environ.get("TERM", "")
    return ExecRequest(
        app=app,
        env=env,
        argv=plan.argv,
        tty=tty,
        stdin=plan.interactive,
        cols=cols,
        rows=rows,
        term=term if tty and _TERM.fullmatch(term) else None,
    )


def _require_exec(server: RemoteServer) -> None:
    capabilities = server.hello_data.capabilities if server.hello_data else []
    if CAPABILITY not in capabilities:
        raise TakoError(
            f"tako-server on {server.where} cannot run tako exec (it is too old)",
            hint="upgrade it with `tako servers upgrade NAME`",
        )


async def _exec_one(entry: ServerEntry, request: ExecRequest) -> int:
    async with open_session(SshClient.from_env(), entry) as session:
        _require_exec(session.remote)
        remote = await session.remote.exec(request)
        sink = OutputSink()
        if request.tty:
            with raw_terminal():
                result = await relay(remote, sink, stdin=True, terminal=True)
        else:
            result = await relay(remote, sink, stdin=request.stdin)
    return result.exit_code


async def _exec_everywhere(entries: list[ServerEntry], request: ExecRequest) -> int:
    async def one(session: Session) -> int:
        _require_exec(session.remote)
        remote = await session.remote.exec(request)
        result = await relay(remote, OutputSink(prefix=session.entry.name))
        return result.exit_code

    results: list[HostResult[int]] = await on_servers(SshClient.from_env(), entries, one)
    for result in results:
        if result.error is not None:
            output.error(f"{result.server}: {result.error.message}", result.error.hint)
    return exit_code_of([r.value if r.ok else None for r in results])
