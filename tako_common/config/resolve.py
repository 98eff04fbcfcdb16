"""Answers about a loaded tako.toml for one environment (pure: values in, values out).

- :func:`resolve_env` finds an environment; ``development`` always exists (tako dev), any
  other name must be declared;
- :func:`deploy_check` is the deploy gate: not ``development``, declared, has routes;
- variables merge ``[vars]`` < ``[vars.<env>]`` < runtime values;
- servers are ``[envs.<env>].servers`` plus legacy ``[servers.<name>] env`` mappings;
- the release command is the environment's (``""`` clears it), else the top-level one;
- build steps are ``[[build_stages]]``, else ``[build]`` as one stage, else none (the
  runtime default applies);
- stage working directories may use ``..`` but never leave the source workspace.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tako_common.config.loader import LoadedConfig
from tako_common.config.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RETRIES,
    BuildStage,
    EnvConfig,
    WorkflowGroup,
)
from tako_common.config.rules import env_server_names
from tako_common.errors import ConfigError, ValidationError
from tako_common.names import RESERVED_ENV
from tako_common.routes import parse_route

DEFAULT_ENV = "production"
DEFAULT_INSTANCES = 1


def resolve_env(loaded: LoadedConfig, env: str) -> EnvConfig:
    """The ``[envs.<env>]`` table; ``development`` defaults to an empty one."""
    found = loaded.config.envs.get(env)
    if found is not None:
        return found
    if env == RESERVED_ENV:
        return EnvConfig()
    declared = ", ".join(sorted(loaded.config.envs)) or "none"
    raise ConfigError(
        [f"environment {env!r} is not declared in {loaded.path.name}; declared: {declared}"],
        hint=f"add [envs.{env}] with a route, or pick a declared environment with --env",
    )


def deploy_check(loaded: LoadedConfig, env: str) -> EnvConfig:
    """Refuse to deploy ``development``, undeclared environments and ones without routes."""
    if env == RESERVED_ENV:
        raise ValidationError(
            f"environment {RESERVED_ENV!r} is reserved for tako dev and cannot be deployed",
            hint="deploy another environment, e.g. --env production",
        )
    found = resolve_env(loaded, env)
    if not found.route_list:
        raise ConfigError(
            [f"environment {env!r} has no route; deploys need at least one"],
            hint=f"set route or routes in [envs.{env}]",
        )
    return found


def env_routes(loaded: LoadedConfig, env: str) -> list[str]:
    return resolve_env(loaded, env).route_list


def wildcard_routes(loaded: LoadedConfig, env: str) -> list[str]:
    """Routes with a ``*.`` host: with ssl=letsencrypt they need ssl.cloudflare credentials."""
    return [route for route in env_routes(loaded, env) if parse_route(route).wildcard]


def certificate_check(loaded: LoadedConfig, env: str, credentials: Collection[str]) -> None:
    """Refuse a deploy whose certificates cannot be issued (before any build or upload):
    ``ssl = "cloudflare"``, or a wildcard route on ``ssl = "letsencrypt"``, without the
    ``ssl.cloudflare`` credential (docs/tls.md)."""
    found = resolve_env(loaded, env)
    if "ssl.cloudflare" in credentials:
        return
    hint = f"set it with `tako credentials set ssl.cloudflare --env {env}`"
    if found.ssl == "cloudflare":
        raise ConfigError(
            [f'environment {env!r} uses ssl = "cloudflare" (Cloudflare Origin CA), which needs '
             "the ssl.cloudflare credential"],
            hint=hint,
        )  # fmt: skip
    wildcards = wildcard_routes(loaded, env)
    if wildcards:
        raise ConfigError(
            [f"wildcard route {', '.join(wildcards)} of environment {env!r} needs a DNS-01 "
             "certificate, which needs the ssl.cloudflare credential"],
            hint=hint,
        )  # fmt: skip


def env_servers(loaded: LoadedConfig, env: str) -> list[str]:
    """Target servers; always empty for ``development`` (servers are ignored there)."""
    found = resolve_env(loaded, env)
    if env == RESERVED_ENV:
        return []
    return env_server_names(env, found, loaded.legacy)


def merged_vars(
    loaded: LoadedConfig, env: str, runtime_values: dict[str, str]
) -> dict[str, str]:
    """``[vars]`` < ``[vars.<env>]`` < runtime values (later wins)."""
    variables = loaded.config.vars
    return {**variables.common, **variables.per_env.get(env, {}), **runtime_values}


def release_command(loaded: LoadedConfig, env: str) -> str | None:
    """The one-shot release command for ``env``; ``None`` when unset or cleared with ``""``."""
    override = resolve_env(loaded, env).release
    command = override if override is not None else loaded.config.release
    return command or None


def instances_for(loaded: LoadedConfig, env: str, server: str) -> int:
    """Desired instances on ``server``: legacy per-server hint, then legacy default, then 1."""
    resolve_env(loaded, env)
    hints = loaded.legacy
    server_hints = hints.servers.get(server)
    if server_hints is not None and server_hints.instances is not None:
        return server_hints.instances
    return hints.instances if hints.instances is not None else DEFAULT_INSTANCES


def idle_timeout_for(loaded: LoadedConfig, env: str, server: str) -> int:
    """Idle timeout on ``server``: legacy per-server hint, legacy default, then the env's."""
    found = resolve_env(loaded, env)
    hints = loaded.legacy
    server_hints = hints.servers.get(server)
    if server_hints is not None and server_hints.idle_timeout is not None:
        return server_hints.idle_timeout
    if hints.idle_timeout is not None and "idle_timeout" not in found.model_fields_set:
        return hints.idle_timeout
    return found.idle_timeout


def build_steps(loaded: LoadedConfig) -> list[BuildStage]:
    """``[[build_stages]]``, else ``[build]`` as one stage named 'build', else ``[]``."""
    config = loaded.config
    if config.build_stages is not None:
        return list(config.build_stages)
    build = config.build
    if build is not None and build.run is not None:
        return [BuildStage(
            name="build", cwd=build.cwd, install=build.install, run=build.run,
            exclude=build.exclude,
        )]
    return []


def resolve_stage_cwd(cwd: str | None, app_dir: Path, source_root: Path) -> Path:
    """Where a stage runs: ``app_dir / cwd``, normalised, and inside ``source_root``."""
    target = Path(os.path.normpath(app_dir / (cwd or ".")))
    root = Path(os.path.normpath(source_root))
    if target != root and root not in target.parents:
        raise ValidationError(
            f"build stage cwd {cwd!r} escapes the source workspace {root}",
            hint="keep stage directories inside the git repository (or app directory)",
        )
    return target


def build_cwd(loaded: LoadedConfig) -> Path:
    """Where ``[build]`` runs: inside the app directory (checked at load)."""
    cwd = loaded.config.build.cwd if loaded.config.build is not None else None
    return resolve_stage_cwd(cwd, loaded.app_dir, loaded.app_dir)


@dataclass(frozen=True)
class WorkflowSettings:
    """Effective settings of one workflow group on one server."""

    run: list[str] | None
    workers: int
    concurrency: int
    schedule: str | None = None
    retries: int = DEFAULT_RETRIES


def workflow_settings(
    loaded: LoadedConfig, group: str | None, server: str | None
) -> WorkflowSettings:
    """``[workflows]`` < ``[workflows.<group>]`` < ``[servers.<s>.workflows]`` < its group."""
    layers: list[WorkflowGroup] = []
    top = loaded.config.workflows
    if top is not None:
        layers.append(top)
        if group is not None and group in top.groups:
            layers.append(top.groups[group])
    server_config = loaded.config.servers.get(server) if server is not None else None
    if server_config is not None and server_config.workflows is not None:
        layers.append(server_config.workflows)
        if group is not None and group in server_config.workflows.groups:
            layers.append(server_config.workflows.groups[group])
    settings = WorkflowSettings(run=None, workers=0, concurrency=DEFAULT_CONCURRENCY)
    for layer in layers:
        settings = dataclasses.replace(
            settings,
            **{k: v for k, v in layer.model_dump(exclude={"groups"}).items() if v is not None},
        )
    return settings


def workflow_groups(loaded: LoadedConfig) -> list[str]:
    """The named groups of ``[workflows]`` (sorted)."""
    top = loaded.config.workflows
    return sorted(top.groups) if top is not None else []
