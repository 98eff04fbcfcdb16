"""``tako maintenance on|off``: the edge answers 503 for the app, its instances keep running.

Rules: the app is the one of ``-c FILE`` or ``DIR/tako.toml``; every server of the
environment (or ``--server``) is asked in parallel and every host's result is printed;
any failure makes the exit code 1. ``--message`` is shown on the edge's 503 page (unless
the release has a ``public/503.html``); ``off`` ignores it. The mode is kept by each
server (across restarts and deploys) until ``off``; ``tako servers status`` shows it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError as PydanticValidationError

from tako_client.appctx import load_app, servers_of
from tako_client.commands.apps import ConfigOpt, DirArg, EnvOpt, _report, _run
from tako_client.sessions import Session
from tako_common.errors import TakoError
from tako_common.protocol import MaintenanceData, MaintenanceRequest

STATES = ("on", "off")


def register(app: typer.Typer) -> None:
    app.command(
        "maintenance",
        help="Turn maintenance mode on or off (503 page; instances keep running).",
    )(maintenance_command)


def maintenance_command(
    state: str = typer.Argument(..., help="on or off.", metavar="on|off"),
    directory: Path | None = DirArg,
    env: str = EnvOpt,
    message: str = typer.Option("", "--message", "-m", help="Text of the 503 page."),
    server: str | None = typer.Option(None, "--server", "-s", help="Only this server."),
    config: str | None = ConfigOpt,
) -> None:
    if state not in STATES:
        raise TakoError(f"unknown maintenance state {state!r}: use on or off")
    enabled = state == "on"
    if not enabled and message:
        raise TakoError("--message only goes with `tako maintenance on`")
    ctx = load_app(config, directory, env)
    check_message(ctx.app, env, message)

    async def one(session: Session) -> MaintenanceData:
        return await session.remote.maintenance(ctx.app, env, enabled, message)

    results = _run(servers_of(ctx, server), one)
    _report(results, f"maintenance {state}", describe)


def check_message(app: str, env: str, message: str) -> None:
    """Refuse a message the servers would refuse, before asking any of them."""
    try:
        MaintenanceRequest(app=app, env=env, enabled=True, message=message)
    except PydanticValidationError as exc:
        problem = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise TakoError(f"invalid --message: {problem}") from None


def describe(data: MaintenanceData) -> str:
    """One host's line: what its edge does for the app now."""
    if not data.enabled:
        return f"{data.app}/{data.env}: maintenance off, requests reach the app again"
    return f"{data.app}/{data.env}: maintenance on since {data.since}, the edge answers 503"
