"""``tako dev [-c FILE] [--ready-timeout S] [-- CMD ARGS...]`` and ``tako dev ls | stop |
trust | untrust``.

Rules:

- ``tako dev`` runs the app's dev command (:mod:`tako_client.dev.command`) behind the
  local dev edge at ``https://{name}.localhost`` (and the ``development`` routes); the
  first ``tako dev`` starts the edge, later ones register with it; everything after
  ``--`` is the command to run instead of the configured one;
- ``ls`` lists the apps served now; ``stop [NAME | --all]`` stops one app's ``tako dev``
  (default: the app of ``-c FILE`` or the current directory) or all of them;
- ``trust`` / ``untrust`` add the local CA to / remove it from the system trust store
  and print exactly what changed (:mod:`tako_client.dev.trust`);
- bad input changes nothing: an unknown app to stop, ``--`` with no command, ``--`` on a
  subcommand, a bad port variable are refused with the rule.
"""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from typer.core import TyperGroup

from tako_client import output
from tako_client.appctx import app_dir_for
from tako_client.dev.ca import CA_CERT, LocalCA
from tako_client.dev.edgelink import EdgeNotRunning, ask
from tako_client.dev.plan import make_plan
from tako_client.dev.session import serve
from tako_client.dev.settings import DevSettings
from tako_client.dev.trust import TrustStore, trust, untrust
from tako_common.config import load_config, resolve_config_path
from tako_common.errors import ValidationError
from tako_common.protocol.dev import DevList, DevListing, DevStop, DevStopped

COMMAND_KEY = "tako_dev_command"
ConfigOpt = typer.Option(None, "--config", "-c", help="Path to tako.toml (app dir = its parent).")


class DevGroup(TyperGroup):
    """``tako dev`` is a command and a group: ``-- CMD ARGS`` is taken off before click
    reads the arguments (click would take ``CMD`` for a subcommand)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click
        if "--" in args:
            cut = args.index("--")
            ctx.meta[COMMAND_KEY] = args[cut + 1:]
            args = args[:cut]
        return super().parse_args(ctx, args)


dev_app = typer.Typer(
    name="dev",
    cls=DevGroup,
    invoke_without_command=True,
    subcommand_metavar="[-- CMD ARGS...] | ls | stop | trust | untrust",
    help=(
        "Run the app locally at https://NAME.localhost with its dev command, development "
        "variables and secrets; restarts it when files change. `tako dev -- CMD ARGS` runs "
        "CMD instead of the configured dev command."
    ),
)


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")


@dev_app.callback()
def dev_command(
    ctx: typer.Context,
    config: str | None = ConfigOpt,
    ready_timeout: float = typer.Option(
        30.0, "--ready-timeout", min=1.0, help="Seconds to wait for the app to listen on PORT."
    ),
) -> None:
    override: list[str] | None = ctx.meta.get(COMMAND_KEY)
    if ctx.invoked_subcommand is not None:
        if override is not None:
            raise ValidationError(
                "`-- CMD ARGS` goes with `tako dev` itself, not with a subcommand",
                hint="run `tako dev -- CMD ARGS`",
            )
        return
    if override is not None and not override:
        raise ValidationError(
            "nothing after `--`: give the command to run, e.g. `tako dev -- npm run dev`"
        )
    settings = DevSettings.from_environ()
    settings.check_socket_path()
    loaded = load_config(resolve_config_path(config, app_dir_for(None)))
    for warning in loaded.warnings:
        output.warn(warning)
    plan = make_plan(loaded, override, ready_timeout)
    raise typer.Exit(asyncio.run(serve(plan, settings)))


@dev_app.command("ls", help="List the apps running under tako dev.")
def ls_command() -> None:
    listing = _listing()
    if listing is None or not listing.apps:
        output.line("No app runs under tako dev.")
        return
    output.line(f"dev edge pid {listing.edge_pid}, HTTPS port {listing.https_port}")
    for app in listing.apps:
        state = app.state + (f" ({app.message})" if app.message else "")
        output.line(f"{app.name}  {state}  pid {app.pid}  {app.app_dir}")
        for url in app.urls:
            output.bullet(url)


def _listing() -> DevListing | None:
    try:
        data = asyncio.run(ask(DevSettings.from_environ(), DevList()))
    except EdgeNotRunning:
        return None
    return DevListing.model_validate(data)


@dev_app.command("stop", help="Stop an app's tako dev (default: this directory's app).")
def stop_command(
    name: str | None = typer.Argument(None, help="App name (default: the app of -c / here)."),
    all_apps: bool = typer.Option(False, "--all", help="Stop every app under tako dev."),
    config: str | None = ConfigOpt,
) -> None:
    if name is not None and all_apps:
        raise ValidationError("name an app or use --all, not both")
    if not all_apps and name is None:
        name = load_config(resolve_config_path(config, app_dir_for(None))).app_name
    try:
        request = DevStop(app=name, all=all_apps)
    except ValueError as exc:
        raise ValidationError(f"invalid app name {name!r}: {exc}") from exc
    try:
        data = asyncio.run(ask(DevSettings.from_environ(), request))
    except EdgeNotRunning:
        if all_apps:
            output.line("No app runs under tako dev: nothing to stop.")
            return
        raise ValidationError(
            f"no app named {name!r} runs under tako dev (no app runs at all)"
        ) from None
    stopped = DevStopped.model_validate(data).stopped
    if not stopped:
        output.line("No app runs under tako dev: nothing to stop.")
    for app in stopped:
        output.success(f"stopped {app}")


@dev_app.command("trust", help="Add tako dev's local CA to the system trust store.")
def trust_command() -> None:
    settings = DevSettings.from_environ()
    ca, made = LocalCA.ensure(settings.ca_dir)
    if made:
        output.success(f"made a local certificate authority: {ca.cert_path}")
    for line in trust(ca, TrustStore(settings.trust_root)):
        output.bullet(line)


@dev_app.command("untrust", help="Remove tako dev's local CA from the system trust store.")
def untrust_command() -> None:
    settings = DevSettings.from_environ()
    ca = LocalCA.load(settings.ca_dir) if (settings.ca_dir / CA_CERT).exists() else None
    for line in untrust(ca, TrustStore(settings.trust_root)):
        output.bullet(line)
