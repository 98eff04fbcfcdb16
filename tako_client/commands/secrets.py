"""``tako secrets``: set, remove and list encrypted app secrets; export/import env keys.

Rules:

- the app directory is the parent of ``-c/--config`` (default: the current directory);
- ``set`` warns about a name that is not UPPER_SNAKE_CASE (and stores it as written),
  and refuses an environment that tako.toml does not declare (``development`` always
  exists; no tako.toml means nothing is declared) unless ``--force``; both are checked
  before the value is asked for;
- values and keys are read from a masked prompt (confirmed) when stdin is a terminal,
  else from ONE line of stdin (CR/LF stripped; empty is an error); they never travel in
  argv and never appear in output — except ``key export``, which prints the key because
  the user asked for it (with a warning on stderr);
- ``rm`` asks for confirmation on a terminal; without one it needs ``--yes``;
- ``secrets_app`` is module-level so other modules can add commands (e.g. ``sync``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from tako_client import output
from tako_client import secrets as store
from tako_client.appctx import app_dir_for
from tako_common.config import CONFIG_FILE, load_config, resolve_config_path
from tako_common.errors import TakoError, ValidationError
from tako_common.names import RESERVED_ENV, validate_env_name

secrets_app = typer.Typer(
    name="secrets", help="Manage encrypted app secrets.", no_args_is_help=True
)
key_app = typer.Typer(
    name="key", help="Export or import an environment's key.", no_args_is_help=True
)
secrets_app.add_typer(key_app, name="key")

ConfigOpt = typer.Option(None, "--config", "-c", help="Path to tako.toml (app dir = its parent).")
DEFAULT_ENV = "production"


def register(app: typer.Typer) -> None:
    """Add the ``secrets`` command group to the root app."""
    app.add_typer(secrets_app, name="secrets")


def app_dir_of(config: Path | None) -> Path:
    """The app directory, resolved as for every app command (so secrets land where deploy
    reads them)."""
    return app_dir_for(config)


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def read_hidden(prompt: str, *, what: str) -> str:
    """A masked, confirmed prompt on a terminal; else one line of stdin."""
    if stdin_is_tty():
        value = str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if value == "":
        raise ValidationError(
            f"{what} cannot be empty", hint=f"pipe the {what} on stdin or run in a terminal"
        )
    return value


def check_env_declared(config: Path | None, env: str) -> None:
    """Refuse ``env`` unless the app's tako.toml declares it (``development`` always exists)."""
    force = "or pass --force to store the secret anyway"
    if config is None and not (Path.cwd() / CONFIG_FILE).is_file():
        raise TakoError(
            f"no {CONFIG_FILE} in {Path.cwd()}: cannot check that environment {env!r} is "
            "declared",
            hint=f"run `tako init` here or select the file with -c, {force}",
        )
    path = resolve_config_path(str(config) if config is not None else None, Path.cwd())
    declared = sorted(load_config(path).config.envs)
    if env == RESERVED_ENV or env in declared:
        return
    raise ValidationError(
        f"environment {env!r} is not declared in {path.name} "
        f"(declared: {', '.join(declared) or 'none'})",
        hint=f"pick a declared environment with --env, add [envs.{env}] to {path.name}, {force}",
    )


@secrets_app.command("set")
def set_cmd(
    name: str = typer.Argument(..., help="Secret name, e.g. DATABASE_URL."),
    env: str = typer.Option(DEFAULT_ENV, "--env", "-e", help="Environment."),
    config: Path | None = ConfigOpt,
    force: bool = typer.Option(
        False, "--force", help="Store it even if tako.toml does not declare the environment."
    ),
) -> None:
    """Set a secret (value from a masked prompt or one line of stdin)."""
    store.validate_secret_name(name)
    validate_env_name(env)
    if not store.is_upper_snake_case(name):
        output.warn(
            f"secret name {name!r} is not UPPER_SNAKE_CASE (e.g. {name.upper()!r}), the usual "
            "form of environment variables; stored as written"
        )
    if not force:
        check_env_declared(config, env)
    value = read_hidden(f"Value for {name} ({env})", what="secret value")
    key = store.set_secret(app_dir_of(config), env, name, value)
    output.success(f"Secret {name} set for {env}")
    output.detail(f"encrypted with the key from {key.source}")


def _rm(
    name: str = typer.Argument(..., help="Secret name."),
    env: str | None = typer.Option(
        None, "--env", "-e", help="Only this environment (default: all)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: Path | None = ConfigOpt,
) -> None:
    """Remove a secret from one environment, or from all of them."""
    app_dir = app_dir_of(config)
    store.validate_secret_name(name)
    where = f"environment {env}" if env else "all environments"
    if not yes:
        if not stdin_is_tty():
            raise TakoError(
                f"removing {name} from {where} needs confirmation",
                hint="pass --yes in non-interactive mode",
            )
        if not typer.confirm(f"Remove secret {name} from {where}?", default=False):
            output.line("Cancelled.")
            return
    removed = store.remove_secret(app_dir, name, env)
    output.success(f"Secret {name} removed from {', '.join(removed)}")


def _ls(config: Path | None = ConfigOpt) -> None:
    """Show which secrets each environment defines (never their values)."""
    table = store.list_secrets(app_dir_of(config))
    if not table:
        output.line("No secrets. Add one with `tako secrets set NAME --env ENV`.")
        return
    envs = sorted({e for present in table.values() for e in present})
    rows = [["NAME", *envs]]
    rows += [
        [name, *("✓" if e in present else "-" for e in envs)] for name, present in table.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        output.line("  ".join(cells).rstrip())


for _name, _hidden in (("rm", False), ("remove", True), ("delete", True)):
    secrets_app.command(_name, hidden=_hidden)(_rm)
for _name, _hidden in (("ls", False), ("list", True)):
    secrets_app.command(_name, hidden=_hidden)(_ls)


@key_app.command("export")
def key_export(env: str = typer.Option(DEFAULT_ENV, "--env", "-e", help="Environment.")) -> None:
    """Print the environment's key (base64) to stdout."""
    key = store.require_key(env)
    output.warn(f"this is the {env} secrets key: keep it secret, share it only over a safe channel")
    output.line(store.encode_key(key.key))


@key_app.command("import")
def key_import(
    env: str = typer.Option(DEFAULT_ENV, "--env", "-e", help="Environment."),
    force: bool = typer.Option(False, "--force", help="Replace a different existing key."),
) -> None:
    """Store a key (from a masked prompt or one line of stdin) as the environment's key file."""
    text = read_hidden(f"Key for {env}", what="key")
    key = store.decode_key(text, "the given key")
    result = store.write_key(env, key, force=force)
    path = store.key_path(env)
    messages = {
        "created": f"Key for {env} saved to {path}",
        "replaced": f"Key for {env} replaced at {path}",
        "unchanged": f"Key for {env} already present at {path}",
    }
    output.success(messages[result])
    var = store.key_env_var(env)
    if os.environ.get(var):
        output.warn(f"{var} is set and takes precedence over the key file")
