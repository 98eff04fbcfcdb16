"""The ``tako-server`` command line: ``run`` (the default), ``version`` and
``prepare-stop`` (the unit's ``ExecStop=``: stop or restart, :mod:`tako_server.stopmode`).

Rules: flags only override settings (see :mod:`tako_server.settings` for precedence);
besides the settings, ``run`` reads exactly two things from the environment, at the
process boundary: ``$NOTIFY_SOCKET`` (:mod:`tako_server.notify`) and the takeover
variables a predecessor passes (:mod:`tako_server.upgrade`, removed once read);
the CLI has one error boundary: a :class:`TakoError` at start-up prints a one-line
message (and hint) on stderr and exits 1, without a traceback or locals.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tako_common import __version__
from tako_common.errors import ConfigError, TakoError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    help="tako-server: the Tako daemon (proxy, supervisor, TLS, state).",
)


def _print_version(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


@app.callback()
def _default(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Run the daemon when no command is given."""
    if ctx.invoked_subcommand is None:
        run()


@app.command()
def version() -> None:
    """Print the server version."""
    typer.echo(f"tako-server {__version__}")


@app.command()
def run(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default /opt/tako).")
    ] = None,
    socket: Annotated[Path | None, typer.Option(help="Management socket path.")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP listen port (default 80).")] = None,
    https_port: Annotated[int | None, typer.Option(help="HTTPS listen port (default 443).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Edge worker processes (0 = in-process).")
    ] = None,
    no_edge: Annotated[
        bool, typer.Option("--no-edge", help="Run without the HTTP(S) proxy.")
    ] = False,
) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    from tako_server.daemon import run_daemon
    from tako_server.notify import Notifier
    from tako_server.settings import load_settings
    from tako_server.upgrade import Inheritance

    inherited = None
    try:
        inherited = Inheritance.from_environ(os.environ)
        settings = load_settings(
            data_dir=data_dir,
            socket=socket,
            http_port=http_port,
            https_port=https_port,
            workers=workers,
        )
        _configure_logging(settings.log_level)
        notifier = Notifier.from_environ(os.environ)
        run_daemon(settings, with_edge=not no_edge, inherited=inherited, notifier=notifier)
    except TakoError as exc:
        if inherited is not None:
            inherited.close()
        _fail(exc)
    except KeyboardInterrupt:
        pass


@app.command("prepare-stop")
def prepare_stop(
    data_dir: Annotated[Path, typer.Option(help="Data directory.")] = Path("/opt/tako"),
    unit: Annotated[str, typer.Option(help="The systemd unit of this server.")] = (
        "tako-server.service"
    ),
    keep_apps: Annotated[
        bool,
        typer.Option(
            "--keep-apps", help="Keep the apps running through the next stop (no systemd check)."
        ),
    ] = False,
) -> None:
    """Run before the daemon's SIGTERM (systemd ``ExecStop=``): on a restart, the apps
    keep running and the next tako-server adopts them; on a stop they are stopped."""
    from tako_server.stopmode import KEEP_APPS_MARKER, systemd_restart_pending, write_keep_marker

    if keep_apps or systemd_restart_pending(unit):
        write_keep_marker(data_dir / KEEP_APPS_MARKER)
        typer.echo("restart: the apps keep running for the next tako-server")
    else:
        typer.echo("stop: tako-server stops the apps")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(exc: TakoError) -> None:
    lines = exc.issues if isinstance(exc, ConfigError) else [exc.message]
    typer.secho("error: " + "\n  ".join(lines), fg=typer.colors.RED, err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
