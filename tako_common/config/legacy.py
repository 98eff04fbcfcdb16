"""Read the legacy tako.toml forms by rewriting them into the current form, with warnings.

Legacy form                                   -> current form
``[build] assets = [...]``                    -> top-level ``assets = [...]``
``[[build.stages]]`` with ``working_dir``     -> ``[[build_stages]]`` with ``cwd``
``[servers.<name>] env = "production"``       -> ``[envs.production] servers = ["<name>"]``
``[servers.<name>] instances / idle_timeout`` -> kept as per-server scaling hints
``[servers] instances / idle_timeout``        -> kept as default scaling hints

Every rewrite adds a warning that shows the current form. Mixing a legacy form with its
current form (``[build].assets`` and ``assets``) is an issue, never a silent choice. The
pass works on the raw parsed dict and returns a new dict; it never mutates its input.
It also returns an alias map (current key path -> legacy key path) so issues point at
the lines the user actually wrote.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import tomlkit

from tako_common.config.issues import Issue, toml_type
from tako_common.config.lines import KeyPath

SCALING_KEYS = ("instances", "idle_timeout")


@dataclass(frozen=True)
class ServerHints:
    """Legacy ``[servers.<name>]`` keys: environment mapping and scaling hints."""

    env: str | None = None
    instances: int | None = None
    idle_timeout: int | None = None


@dataclass(frozen=True)
class LegacyHints:
    """Everything the legacy ``[servers]`` table said, kept for deploy."""

    servers: dict[str, ServerHints] = field(default_factory=dict)
    instances: int | None = None
    idle_timeout: int | None = None

    def servers_for(self, env: str) -> list[str]:
        return [name for name, hints in self.servers.items() if hints.env == env]


@dataclass
class LegacyResult:
    data: dict[str, Any]
    hints: LegacyHints
    warnings: list[Issue] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    aliases: dict[KeyPath, KeyPath] = field(default_factory=dict)


def _toml(data: dict[str, Any]) -> str:
    """Render a snippet of the current form, indented for a warning."""
    text = tomlkit.dumps(data).strip()
    return "\n".join("    " + line if line else "" for line in text.splitlines())


def upgrade_legacy(raw: dict[str, Any]) -> LegacyResult:
    """Rewrite legacy forms of ``raw`` (a parsed tako.toml) into the current form."""
    result = LegacyResult(data=copy.deepcopy(raw), hints=LegacyHints())
    build = result.data.get("build")
    if isinstance(build, dict):
        _move_assets(result, build)
        _move_stages(result, build)
        if not build:
            del result.data["build"]
    servers = result.data.get("servers")
    if isinstance(servers, dict):
        result.hints = _extract_server_hints(result, servers)
        if not servers:
            del result.data["servers"]
    return result


def _move_assets(result: LegacyResult, build: dict[str, Any]) -> None:
    if "assets" not in build:
        return
    assets = build.pop("assets")
    if "assets" in result.data:
        result.issues.append(Issue(
            ("build", "assets"), "set assets once: remove [build].assets, keep top-level assets"
        ))
        return
    result.data["assets"] = assets
    result.aliases[("assets",)] = ("build", "assets")
    result.warnings.append(Issue(
        ("build", "assets"),
        "[build].assets is deprecated; move it to the top level (before any table):\n"
        + _toml({"assets": assets}),
    ))


def _move_stages(result: LegacyResult, build: dict[str, Any]) -> None:
    if "stages" not in build:
        return
    stages = build.pop("stages")
    if "build_stages" in result.data:
        result.issues.append(Issue(
            ("build", "stages"),
            "use either [[build.stages]] (legacy) or [[build_stages]], not both",
        ))
        return
    result.aliases[("build_stages",)] = ("build", "stages")
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        result.issues.append(Issue(
            ("build", "stages"), f"must be an array of tables (got {toml_type(stages)})"
        ))
        return
    converted = [_convert_stage(result, index, stage) for index, stage in enumerate(stages)]
    result.data["build_stages"] = converted
    result.warnings.append(Issue(
        ("build", "stages"),
        "[[build.stages]] is deprecated; write [[build_stages]] with 'cwd' instead of "
        "'working_dir':\n" + _toml({"build_stages": converted}),
    ))


def _convert_stage(result: LegacyResult, index: int, stage: dict[str, Any]) -> dict[str, Any]:
    result.aliases[("build_stages", index)] = ("build", "stages", index)
    if "working_dir" not in stage:
        return dict(stage)
    if "cwd" in stage:
        result.issues.append(Issue(
            ("build", "stages", index, "working_dir"),
            "set either 'working_dir' (legacy) or 'cwd', not both",
        ))
        return {key: value for key, value in stage.items() if key != "working_dir"}
    result.aliases[("build_stages", index, "cwd")] = ("build", "stages", index, "working_dir")
    return {("cwd" if key == "working_dir" else key): value for key, value in stage.items()}


def _extract_server_hints(result: LegacyResult, servers: dict[str, Any]) -> LegacyHints:
    defaults = {
        key: _scaling(result, ("servers", key), servers.pop(key))
        for key in SCALING_KEYS
        if key in servers and not isinstance(servers[key], dict)
    }
    for key, value in defaults.items():
        if value is not None:
            result.warnings.append(Issue(("servers", key), _scaling_note(key, value, "*")))
    hints: dict[str, ServerHints] = {}
    for name, table in list(servers.items()):
        if not isinstance(table, dict):
            continue
        server = _server_hints(result, name, table)
        if server != ServerHints():
            hints[name] = server
        if not table:
            del servers[name]
    _warn_env_mappings(result, hints)
    return LegacyHints(hints, defaults.get("instances"), defaults.get("idle_timeout"))


def _server_hints(result: LegacyResult, name: str, table: dict[str, Any]) -> ServerHints:
    env = table.pop("env", None)
    if env is not None and not isinstance(env, str):
        result.issues.append(Issue(
            ("servers", name, "env"), f"must be a string (got {toml_type(env)})"
        ))
        env = None
    scaling: dict[str, int | None] = {}
    for key in SCALING_KEYS:
        if key in table:
            scaling[key] = _scaling(result, ("servers", name, key), table.pop(key))
            value = scaling[key]
            if value is not None:
                result.warnings.append(Issue(
                    ("servers", name, key), _scaling_note(key, value, env or "<env>")
                ))
    return ServerHints(env, scaling.get("instances"), scaling.get("idle_timeout"))


def _scaling(result: LegacyResult, path: KeyPath, value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        result.issues.append(Issue(path, f"must be an integer >= 0 (got {value!r})"))
        return None
    return value


def _scaling_note(key: str, value: int, env: str) -> str:
    if key == "instances":
        return (
            f"{key} under [servers] is a legacy scaling hint (used as the desired instance "
            f"count at deploy); the current way is: tako scale {value} --env {env}"
        )
    return (
        f"{key} under [servers] is a legacy scaling hint; the current form is:\n"
        + _toml({"envs": {env: {"idle_timeout": value}}})
    )


def _warn_env_mappings(result: LegacyResult, hints: dict[str, ServerHints]) -> None:
    by_env: dict[str, list[str]] = {}
    for name, server in hints.items():
        if server.env is not None:
            by_env.setdefault(server.env, []).append(name)
    for env, names in by_env.items():
        result.warnings.append(Issue(
            ("servers", names[0], "env"),
            "[servers.<name>] env = ... is deprecated; list the servers in the environment:\n"
            + _toml({"envs": {env: {"servers": names}}}),
        ))
