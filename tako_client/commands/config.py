"""``tako config``: show the resolved configuration of one environment, or what is wrong.

Rules:
- the config file is ``-c FILE`` (a file, or a directory holding tako.toml) or
  ./tako.toml; its parent directory is the app directory;
- an invalid file prints every problem (``file:line key: rule``) to stderr and exits 1;
  warnings (legacy forms, ignored keys) go to stderr and never change the exit code;
- the report shows values from tako.toml and secret NAMES only (read from
  ``.tako/secrets.json`` beside the config when it exists) — never secret values;
- runtime, preset, package manager (and where it came from), main, start, dev and
  app_root are shown as deploy resolves them (:func:`tako_client.build.resolve.resolve_app`,
  the same call deploy makes); a preset, package manager or entrypoint deploy would refuse
  (an unknown preset, a Python module without uvicorn/gunicorn, ...) is an error here too,
  with the same message, and exits 1; without a runtime that tako.toml names or the app's
  files tell, these stay as written;
- ``--json`` prints the same report as one JSON object on stdout;
- the environment's servers are checked against the global inventory
  (``$TAKO_HOME/config.toml``, read only, never created here): an environment without
  servers and a server name missing from the inventory are warnings that name the env or
  server and the command that fixes it (``tako servers add HOST --name NAME``);
  ``development`` is never checked (it is not deployable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from tako_client import output
from tako_client import secrets as secret_store
from tako_client.appctx import plan_of
from tako_client.build.resolve import ResolvedApp, resolve_app
from tako_client.detect import detect
from tako_client.global_config import GlobalConfig, tako_home
from tako_common.config import (
    DEFAULT_ENV,
    LOCAL_STORAGE,
    LoadedConfig,
    build_steps,
    env_servers,
    idle_timeout_for,
    instances_for,
    load_config,
    merged_vars,
    release_command,
    resolve_config_path,
    resolve_env,
    wildcard_routes,
)
from tako_common.errors import ConfigError, TakoError
from tako_common.names import RESERVED_ENV


def register(app: typer.Typer) -> None:
    """Add ``tako config`` to ``app``."""
    app.command("config", help="Show the resolved configuration of an environment.")(config_command)


def print_config_error(exc: ConfigError) -> None:
    """Every issue on its own line on stderr, then the hint once."""
    issues = exc.issues or [exc.message]
    for issue in issues[:-1]:
        output.error(issue)
    output.error(issues[-1], exc.hint)


def load_or_exit(config: str | None) -> LoadedConfig:
    """Resolve and load the config; on problems print them and exit 1; print warnings."""
    try:
        loaded = load_config(resolve_config_path(config, Path.cwd()))
    except ConfigError as exc:
        print_config_error(exc)
        raise typer.Exit(1) from exc
    for warning in loaded.warnings:
        output.warn(warning)
    return loaded


def config_command(
    env: str = typer.Option(DEFAULT_ENV, "--env", "-e", help="Environment to resolve."),
    config: str | None = typer.Option(
        None, "--config", "-c", help="Path to tako.toml (its directory is the app directory)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    loaded = load_or_exit(config)
    try:
        resolved = resolve_loaded(loaded)
    except TakoError as exc:
        output.error(exc.message, exc.hint)
        raise typer.Exit(1) from exc
    try:
        names = sorted(secret_store.load_secrets(loaded.app_dir).get(env, {}))
        report = describe(loaded, env, names, resolved)
    except ConfigError as exc:
        print_config_error(exc)
        raise typer.Exit(1) from exc
    for warning in _inventory_warnings(env, list(report["servers"])):
        output.warn(warning)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for text in render_text(report):
            output.line(text)


def server_warnings(env: str, servers: list[str], known: list[str], where: str) -> list[str]:
    """What is wrong with the servers of ``env`` given the inventory names ``known`` (read
    from ``where``): none listed, or listed but not in the inventory."""
    if env == RESERVED_ENV:
        return []
    if not servers and env == DEFAULT_ENV and len(known) == 1:
        return [
            f"environment '{env}' lists no servers; deploy will use the only server "
            f"'{known[0]}' of {where} (add servers = [\"{known[0]}\"] to [envs.{env}] "
            "to make it explicit)"
        ]
    if not servers and not known:
        return [
            f"environment '{env}' has no servers: add one with `tako servers add HOST --name "
            f"NAME`, then set servers = [\"NAME\"] in [envs.{env}]"
        ]
    if not servers:
        return [
            f"environment '{env}' has no servers: set servers = [\"NAME\"] in [envs.{env}], "
            f"NAME one of {', '.join(known)} (from {where}) or a new one added with "
            "`tako servers add HOST --name NAME`"
        ]
    return [
        f"server '{name}' of environment '{env}' is not in {where}: add it with "
        f"`tako servers add HOST --name {name}`"
        for name in servers
        if name not in known
    ]


def _inventory_warnings(env: str, servers: list[str]) -> list[str]:
    """:func:`server_warnings` against the global inventory (a missing file is empty)."""
    path = tako_home() / "config.toml"
    known: list[str] = []
    if path.exists():
        try:
            known = [entry.name for entry in GlobalConfig.load(path.parent).servers]
        except ConfigError as exc:
            return [f"cannot check the servers of environment '{env}': {exc.message}"]
    return server_warnings(env, servers, known, str(path))


def resolve_loaded(loaded: LoadedConfig) -> ResolvedApp | None:
    """What deploy resolves for this app, or None when no runtime can be told (or the app
    is a container release, which has no native build)."""
    config = loaded.config
    if config.container is not None:
        return None
    if config.runtime is None and config.preset is None and detect(loaded.app_dir).runtime is None:
        return None
    return resolve_app(plan_of(config, loaded.app_dir), loaded.app_dir)


def _build_view(loaded: LoadedConfig, resolved: ResolvedApp | None) -> dict[str, Any]:
    config = loaded.config
    if resolved is None:
        return {
            "runtime": config.runtime,
            "package_manager": config.package_manager,
            "package_manager_source": "tako.toml" if config.package_manager else None,
            "preset": config.preset,
            "main": config.main,
            "app_root": config.app_root,
            "dev": config.dev,
            "start": config.start,
        }
    return {
        "runtime": config.runtime or resolved.runtime,
        "package_manager": resolved.package_manager,
        "package_manager_source": resolved.package_manager_source or None,
        "preset": resolved.preset.name,
        "main": resolved.main,
        "app_root": resolved.app_root,
        "dev": config.dev or resolved.dev_argv,
        "start": resolved.start_argv,
    }


def describe(
    loaded: LoadedConfig,
    env: str,
    secret_names: list[str],
    resolved: ResolvedApp | None = None,
) -> dict[str, Any]:
    """The resolved view of ``env`` as plain data (what ``--json`` prints)."""
    config = loaded.config
    found = resolve_env(loaded, env)
    servers = env_servers(loaded, env)
    return {
        "app": loaded.app_name,
        "env": env,
        "config": str(loaded.path),
        "app_dir": str(loaded.app_dir),
        "deployable": env != RESERVED_ENV,
        **_build_view(loaded, resolved),
        "container": config.container,
        # container releases: read-only root file system unless container_read_only = false
        "container_read_only": (
            config.container_read_only is not False if config.container is not None else None
        ),
        "assets": config.assets or [],
        "release": release_command(loaded, env),
        # the leader: the first server, where a deploy runs the release command
        "release_server": servers[0] if release_command(loaded, env) and servers else None,
        "routes": found.route_list,
        "wildcard_routes": wildcard_routes(loaded, env),
        "ssl": found.ssl,
        "source_ip": found.source_ip,
        "idle_timeout": found.idle_timeout,
        "servers": {
            name: {
                "instances": instances_for(loaded, env, name),
                "idle_timeout": idle_timeout_for(loaded, env, name),
            }
            for name in servers
        },
        "vars": merged_vars(loaded, env, {}),
        "secrets": secret_names,
        "build": [stage.model_dump(exclude_none=True) for stage in build_steps(loaded)],
        "include": config.build.include if config.build else None,
        "exclude": config.build.exclude if config.build else None,
        "storages": _storages(loaded, env),
        "backup": found.backup.storage if found.backup else None,
    }


def _storages(loaded: LoadedConfig, env: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for binding, resource in resolve_env(loaded, env).storages.items():
        declared = loaded.config.storages.get(resource)
        if declared is not None:
            out[binding] = {"resource": resource, **declared.model_dump(exclude_none=True)}
        else:
            out[binding] = {"resource": resource, "provider": LOCAL_STORAGE}
    return out


def render_text(report: dict[str, Any]) -> list[str]:
    """Human lines for the report: scalars first, then one block per collection."""
    lines = [f"{report['app']} ({report['env']})  {report['config']}"]
    if not report["deployable"]:
        lines.append("  (development is used by tako dev and is not deployable)")
    if report["package_manager"] is not None and report["package_manager_source"]:
        report = {
            **report,
            "package_manager": f"{report['package_manager']} "
            f"(from {report['package_manager_source']})",
        }
    for key in (
        "runtime",
        "package_manager",
        "preset",
        "main",
        "app_root",
        "container",
        "container_read_only",
        "release",
        "release_server",
        "ssl",
        "source_ip",
        "idle_timeout",
        "backup",
    ):
        value = report[key]
        if value is not None:
            text = str(value).lower() if isinstance(value, bool) else value
            lines.append(f"{key + ':':<17} {text}")
    for key in ("dev", "start"):
        if report[key]:
            lines.append(f"{key + ':':<18}{json.dumps(report[key])}")
    lines += _block("routes", report["routes"])
    if report["wildcard_routes"] and report["ssl"] == "letsencrypt":
        lines.append(
            f"  (wildcard routes need: tako credentials set ssl.cloudflare --env {report['env']})"
        )
    lines += _block(
        "servers",
        [
            f"{name}  instances={info['instances']} idle_timeout={info['idle_timeout']}"
            for name, info in report["servers"].items()
        ],
    )
    lines += _block("vars", [f"{name}={value}" for name, value in report["vars"].items()])
    lines += _block("secrets", report["secrets"])
    lines += _block("build", [_stage_line(stage) for stage in report["build"]])
    lines += _block("assets", report["assets"])
    lines += _block(
        "storages",
        [
            f"{binding} -> {info['resource']} ({info['provider']})"
            for binding, info in report["storages"].items()
        ],
    )
    return lines


def _block(title: str, items: list[str]) -> list[str]:
    if not items:
        return [f"{title + ':':<18}(none)"]
    return [f"{title}:", *(f"  {item}" for item in items)]


def _stage_line(stage: dict[str, Any]) -> str:
    parts = [stage.get("name") or "stage"]
    if "cwd" in stage:
        parts.append(f"cwd={stage['cwd']}")
    if "install" in stage:
        parts.append(f"install={stage['install']!r}")
    parts.append(f"run={stage['run']!r}")
    return "  ".join(parts)
