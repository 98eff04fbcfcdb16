"""The ``tako`` command line: the typer root app and its single error boundary.

Command modules live in ``tako_client.commands`` and each exposes ``register(app)``.
Errors: a :class:`TakoError` anywhere below becomes one red line and a hint on stderr and
exit code 1; a traceback only with ``--verbose``; locals are never printed (secrets).
"""

from __future__ import annotations

import importlib
import sys
import traceback

import typer

from tako_client import output
from tako_common import __version__
from tako_common.errors import TakoError

app = typer.Typer(
    name="tako",
    help="Deploy web apps to your own servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Command modules, each with ``register(app)``; order is the order in ``--help``.
COMMAND_MODULES: tuple[str, ...] = (
    "init",
    "config",
    "dev",
    "deploy",
    "exec",
    "apps",
    "maintenance",
    "secrets",
    "credentials",
    "storages",
    "backups",
    "workflows",
    "servers",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tako {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show details and tracebacks."),
) -> None:
    output.set_verbose(verbose)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"tako_client.commands.{name}")
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point with the error boundary."""
    try:
        # standalone_mode=False: click *returns* typer.Exit's code instead of exiting
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except TakoError as exc:
        output.error(exc.message, exc.hint)
        if output.is_verbose():
            traceback.print_exc()
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        output.error("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        output.error("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the unexpected
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):  # click's (or typer's) ClickException
            show()
            sys.exit(exit_code)
        output.error(
            f"unexpected error: {type(exc).__name__}: {exc}", "re-run with --verbose and report it"
        )
        if output.is_verbose():
            traceback.print_exc()
        sys.exit(1)
