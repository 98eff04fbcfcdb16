"""``tako credentials set | rm | ls``: provider credentials tako-server uses for an environment.

Rules:

- names are ``ssl.cloudflare`` and ``postgres_url`` (:mod:`tako_common.credentials`); the
  environment must be declared in tako.toml (``--force`` stores it anyway) and may not be
  ``development``, which is never deployed;
- a value comes from a masked, confirmed prompt on a terminal, else from ONE line of stdin;
  it never travels in argv and never appears in output; it is checked before it is stored;
- the servers get the environment's credentials with its next ``tako deploy``;
- ``rm`` asks for confirmation on a terminal, else needs ``--yes``;
- ``ls`` shows which environment has which credential (no key needed, never a value).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tako_client import output
from tako_client.commands.secrets import (
    ConfigOpt,
    app_dir_of,
    check_env_declared,
    read_hidden,
    stdin_is_tty,
)
from tako_client.credentials import credential_table, remove_credential, set_credential
from tako_common.credentials import (
    CREDENTIAL_NAMES,
    PURPOSE,
    validate_credential_name,
    validate_credential_value,
)
from tako_common.errors import TakoError, ValidationError
from tako_common.names import RESERVED_ENV, validate_env_name

EnvOpt = typer.Option("production", "--env", "-e", help="Environment.")
NameArg = typer.Argument(..., help=f"Credential name: {', '.join(CREDENTIAL_NAMES)}.")

credentials_app = typer.Typer(
    name="credentials",
    help="Provider credentials tako-server uses (Cloudflare token, workflow PostgreSQL URL).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``credentials`` command group to the root app."""
    app.add_typer(credentials_app, name="credentials")


def _check_env(env: str) -> str:
    validate_env_name(env)
    if env == RESERVED_ENV:
        raise ValidationError(
            f"environment {RESERVED_ENV!r} is never deployed, so it has no credentials",
            hint="pick a deployed environment with --env",
        )
    return env


@credentials_app.command("set")
def set_cmd(
    name: str = NameArg,
    env: str = EnvOpt,
    config: Path | None = ConfigOpt,
    force: bool = typer.Option(
        False, "--force", help="Store it even if tako.toml does not declare the environment."
    ),
) -> None:
    """Set a credential (value from a masked prompt or one line of stdin)."""
    validate_credential_name(name)
    _check_env(env)
    if not force:
        check_env_declared(config, env)
    value = read_hidden(f"Value of {name} ({env})", what=f"value of {name}")
    validate_credential_value(name, value)
    key = set_credential(app_dir_of(config), env, name, value)
    output.success(f"Credential {name} set for {env}; servers get it with the next `tako deploy`")
    output.detail(f"encrypted with the key from {key.source}")


def _rm(
    name: str = NameArg,
    env: str = EnvOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: Path | None = ConfigOpt,
) -> None:
    """Remove a credential from an environment."""
    validate_credential_name(name)
    _check_env(env)
    if not yes:
        if not stdin_is_tty():
            raise TakoError(
                f"removing credential {name} from {env} needs confirmation",
                hint="pass --yes in non-interactive mode",
            )
        if not typer.confirm(f"Remove credential {name} from {env}?", default=False):
            output.line("Cancelled.")
            return
    if not remove_credential(app_dir_of(config), env, name):
        raise TakoError(
            f"environment {env} has no credential {name}",
            hint=f"`tako credentials ls` shows what is set; `tako credentials set {name} "
            f"--env {env}` sets it",
        )
    output.success(f"Credential {name} removed from {env}; servers drop it with the next deploy")


def _ls(config: Path | None = ConfigOpt) -> None:
    """Show which credentials each environment has (never their values)."""
    table = credential_table(app_dir_of(config))
    if not table:
        output.line("No credentials. Set one with `tako credentials set NAME --env ENV`:")
        for name in CREDENTIAL_NAMES:
            output.line(f"  {name}: {PURPOSE[name]}")
        return
    envs = sorted(table)
    rows = [["NAME", *envs, "PURPOSE"]]
    rows += [
        [name, *("✓" if name in table[e] else "-" for e in envs), PURPOSE[name]]
        for name in CREDENTIAL_NAMES
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        output.line("  ".join(cells).rstrip())


for _name, _hidden in (("rm", False), ("remove", True)):
    credentials_app.command(_name, hidden=_hidden)(_rm)
for _name, _hidden in (("ls", False), ("list", True)):
    credentials_app.command(_name, hidden=_hidden)(_ls)
