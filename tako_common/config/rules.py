"""Rules that relate several keys of a shape-valid tako.toml.

Each ``_check_*`` function looks at one concern and returns the issues it found, so a
file with many problems reports all of them:

- environment names are DNS-friendly; ``route`` xor ``routes``; every non-development
  environment has at least one route; no route twice in one environment;
- ``development`` is reserved for ``tako dev``: routes optional, servers ignored;
- ``container`` excludes ``main``, ``start``, ``assets``, ``[build]``, ``[[build_stages]]``
  and workflow groups (they run natively; not in containers in this version);
  ``[build]`` excludes ``[[build_stages]]``;
- ``[build].cwd`` stays inside the project (relative, no escaping ``..``); stage ``cwd`` is
  relative (whether its ``..`` stays in the source workspace is checked at build time by
  :func:`tako_common.config.resolve.resolve_stage_cwd`);
- ``local`` is a built-in storage and is never declared; env bindings name declared
  storages or ``local``; ``local`` only in single-server environments; backups go to a
  declared, private S3 storage (no ``public_base_url``);
- legacy ``[servers.<name>] env`` names a declared environment;
- ``release`` (top level or an environment's) is a command line: ``""`` clears it; a
  blank one, a NUL byte or more than :data:`RELEASE_MAX` characters is refused.
"""

from __future__ import annotations

import posixpath
import re

from tako_common.config.issues import Issue
from tako_common.config.legacy import LegacyHints
from tako_common.config.model import EnvConfig, TakoConfig
from tako_common.names import NAME_RULE, RESERVED_ENV, is_valid_name
from tako_common.routes import parse_route

LOCAL_STORAGE = "local"
_RESOURCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_RESOURCE_RULE = "use letters, digits, '_' and '-', starting with a letter or digit"
#: Longest release command (what the server accepts for ``/bin/sh -c``).
RELEASE_MAX = 8192


def check_rules(config: TakoConfig, hints: LegacyHints) -> tuple[list[Issue], list[Issue]]:
    """All cross-key rules: ``(issues, warnings)``."""
    issues: list[Issue] = []
    for name, env in config.envs.items():
        issues += _check_env(name, env)
        issues += _check_bindings(config, hints, name, env)
    issues += _check_container(config)
    issues += _check_build(config)
    issues += _check_storages(config)
    issues += _check_legacy_envs(config, hints)
    issues += _check_release(config)
    return issues, _warnings(config, hints)


def _check_release(config: TakoConfig) -> list[Issue]:
    places: list[tuple[tuple[str, ...], str | None]] = [(("release",), config.release)]
    places += [(("envs", name, "release"), env.release) for name, env in config.envs.items()]
    issues: list[Issue] = []
    for path, command in places:
        if not command:
            continue
        if not command.strip():
            issues.append(Issue(path, 'is blank: write the command, or "" to clear it'))
        elif "\x00" in command:
            issues.append(Issue(path, "must not contain NUL bytes"))
        elif len(command) > RELEASE_MAX:
            issues.append(Issue(
                path, f"is longer than {RELEASE_MAX} characters: put the steps in a script"
            ))
    return issues


def env_server_names(env_name: str, env: EnvConfig | None, hints: LegacyHints) -> list[str]:
    """``[envs.<env>].servers`` then legacy ``[servers.<name>] env`` mappings, deduplicated."""
    names = list(env.servers) if env is not None else []
    for name in hints.servers_for(env_name):
        if name not in names:
            names.append(name)
    return names


def _check_env(name: str, env: EnvConfig) -> list[Issue]:
    path = ("envs", name)
    issues: list[Issue] = []
    if not is_valid_name(name):
        issues.append(Issue(path, f"invalid environment name {name!r}: {NAME_RULE}"))
    if env.route is not None and env.routes is not None:
        issues.append(Issue(path, "set either 'route' or 'routes', not both"))
    elif name != RESERVED_ENV and env.routes == []:
        issues.append(Issue((*path, "routes"), "needs at least one route (the list is empty)"))
    elif name != RESERVED_ENV and env.route is None and env.routes is None:
        issues.append(Issue(path, "needs a route: set 'route' or 'routes'"))
    seen: dict[object, int] = {}
    for index, text in enumerate(env.routes or []):
        key = parse_route(text).key
        if key in seen:
            issues.append(Issue(
                (*path, "routes", index), f"route {text!r} repeats routes[{seen[key]}]"
            ))
        seen.setdefault(key, index)
    for index, server in enumerate(env.servers):
        if server in env.servers[:index]:
            issues.append(Issue((*path, "servers", index), f"server {server!r} is listed twice"))
    return issues


def _check_bindings(
    config: TakoConfig, hints: LegacyHints, name: str, env: EnvConfig
) -> list[Issue]:
    path = ("envs", name)
    issues: list[Issue] = []
    is_dev = name == RESERVED_ENV
    servers = env_server_names(name, env, hints)
    for binding, resource in env.storages.items():
        where = (*path, "storages", binding)
        if not _RESOURCE_RE.fullmatch(binding):
            issues.append(Issue(
                where, f"invalid storage binding name {binding!r}: {_RESOURCE_RULE}"
            ))
        if resource == LOCAL_STORAGE:
            if not is_dev and len(servers) > 1:
                issues.append(Issue(
                    where,
                    f"local storage deploys only to single-server environments "
                    f"({len(servers)} servers: {', '.join(servers)}); use an S3 storage",
                ))
        elif resource not in config.storages and not is_dev:
            issues.append(Issue(where, _undeclared_storage(resource, config)))
    if env.backup is not None:
        issues += _check_backup(config, (*path, "backup", "storage"), env.backup.storage)
    return issues


def _undeclared_storage(resource: str, config: TakoConfig) -> str:
    declared = ", ".join(sorted(config.storages)) or "none"
    return (
        f"storage {resource!r} is not declared: add [storages.{resource}] or bind to 'local' "
        f"(declared: {declared})"
    )


def _check_backup(config: TakoConfig, path: tuple[str, ...], storage: str) -> list[Issue]:
    if storage == LOCAL_STORAGE:
        return [Issue(path, "backups need private S3 storage; 'local' is not allowed")]
    resource = config.storages.get(storage)
    if resource is None:
        return [Issue(path, _undeclared_storage(storage, config))]
    if resource.public_base_url is not None:
        return [Issue(
            path,
            f"backup storage {storage!r} must be private: remove public_base_url from "
            f"[storages.{storage}] or use another storage",
        )]
    return []


def _check_container(config: TakoConfig) -> list[Issue]:
    if config.container is None:
        if config.container_read_only is not None:
            return [Issue(("container_read_only",),
                          "'container_read_only' needs 'container' (a container release)")]
        return []
    present = [
        key for key in ("main", "start", "assets", "build", "build_stages")
        if getattr(config, key) is not None
    ]
    issues = [
        Issue((key,), f"'{key}' is invalid with 'container' (container releases build from "
              f"{config.container!r})")
        for key in present
    ]
    if config.workflows is not None and config.workflows.groups:
        issues.append(Issue(("workflows",), "workflow groups run natively on the server, so "
                            "they are invalid with 'container' in this version (run the worker "
                            "in a native app, or as a process inside the image's own command)"))
    return issues


def _check_build(config: TakoConfig) -> list[Issue]:
    issues: list[Issue] = []
    if config.build is not None and config.build_stages is not None:
        issues.append(Issue(("build",), "use either [build] or [[build_stages]], not both"))
    if config.build is not None and config.build.cwd is not None:
        problem = _inside_project(config.build.cwd)
        if problem:
            issues.append(Issue(("build", "cwd"), problem))
    names: dict[str, int] = {}
    for index, stage in enumerate(config.build_stages or []):
        if stage.cwd is not None and stage.cwd.startswith("/"):
            issues.append(Issue(
                ("build_stages", index, "cwd"),
                f"must be relative to the app directory (got {stage.cwd!r})",
            ))
        if stage.name is not None:
            if stage.name in names:
                issues.append(Issue(
                    ("build_stages", index, "name"),
                    f"stage name {stage.name!r} repeats build_stages[{names[stage.name]}]",
                ))
            names.setdefault(stage.name, index)
    return issues


def _inside_project(cwd: str) -> str | None:
    if cwd.startswith("/"):
        return f"must be relative to the app directory (got {cwd!r})"
    normal = posixpath.normpath(cwd)
    if normal == ".." or normal.startswith("../"):
        return (
            f"must stay inside the project (got {cwd!r}); "
            "use [[build_stages]] to build from a monorepo parent"
        )
    return None


def _check_storages(config: TakoConfig) -> list[Issue]:
    issues: list[Issue] = []
    for name in config.storages:
        if name == LOCAL_STORAGE:
            issues.append(Issue(
                ("storages", name),
                "'local' is a built-in storage; do not declare [storages.local], "
                "bind to it with storages = { <binding> = \"local\" }",
            ))
        elif not _RESOURCE_RE.fullmatch(name):
            issues.append(Issue(
                ("storages", name), f"invalid storage name {name!r}: {_RESOURCE_RULE}"
            ))
    return issues


def _check_legacy_envs(config: TakoConfig, hints: LegacyHints) -> list[Issue]:
    declared = ", ".join(sorted(config.envs)) or "none"
    return [
        Issue(
            ("servers", name, "env"),
            f"environment {server.env!r} is not declared: add [envs.{server.env}] with a route "
            f"(declared: {declared})",
        )
        for name, server in hints.servers.items()
        if server.env is not None and server.env not in config.envs
        and server.env != RESERVED_ENV
    ]


def _warnings(config: TakoConfig, hints: LegacyHints) -> list[Issue]:
    warnings = [
        Issue(("vars", env), f"[vars.{env}] is for an environment that is not declared in [envs]")
        for env in config.vars.per_env
        if env not in config.envs and env != RESERVED_ENV
    ]
    dev = config.envs.get(RESERVED_ENV)
    if dev is not None and env_server_names(RESERVED_ENV, dev, hints):
        warnings.append(Issue(
            ("envs", RESERVED_ENV),
            "servers are ignored for 'development': it is reserved for tako dev",
        ))
    return warnings
