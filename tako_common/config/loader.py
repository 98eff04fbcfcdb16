"""Load tako.toml: parse, rewrite legacy forms, validate, and report every problem at once.

Steps: ``tomllib`` parses (a syntax error is reported with its line and column) ->
:func:`upgrade_legacy` rewrites legacy forms -> ``[vars]`` is normalised -> the pydantic
model checks the shape -> :func:`check_rules` checks cross-key rules (only once the shape
is valid, since they read the model) -> options this version validates but does not
implement yet become warnings (:mod:`tako_common.config.unimplemented`). All issues are
rendered ``file:line key: rule`` and raised together as one :class:`ConfigError`;
warnings come back on the result.

Loading is pure apart from reading the one file it is given: it never writes anything.
The app directory is the config file's parent directory (``-c path/to/config``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pydantic

from tako_common.config import issues as issue_mod
from tako_common.config.issues import Issue
from tako_common.config.legacy import LegacyHints, upgrade_legacy
from tako_common.config.lines import KeyLines, KeyPath
from tako_common.config.model import TakoConfig
from tako_common.config.rules import check_rules
from tako_common.config.unimplemented import unimplemented_warnings
from tako_common.config.variables import normalize_vars
from tako_common.errors import ConfigError
from tako_common.names import sanitize_app_name

CONFIG_FILE = "tako.toml"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated tako.toml and where it came from."""

    config: TakoConfig
    path: Path
    warnings: list[str] = field(default_factory=list)
    legacy: LegacyHints = field(default_factory=LegacyHints)

    @property
    def app_dir(self) -> Path:
        return self.path.parent

    @property
    def app_name(self) -> str:
        """``name`` from the file, else derived from the app directory's name."""
        if self.config.name is not None:
            return self.config.name
        return sanitize_app_name(self.app_dir.name)

    def __repr__(self) -> str:
        return f"LoadedConfig(path={str(self.path)!r}, envs={sorted(self.config.envs)})"


def load_config(path: Path) -> LoadedConfig:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError([f"{path}: no such file"], hint="run tako init") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    return load_config_text(text, path)


def load_config_text(text: str, path: Path) -> LoadedConfig:
    """Validate ``text`` as if it were the content of ``path`` (nothing is read or written)."""
    path = path.absolute()
    label = path.name
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: invalid TOML: {exc}"]) from exc
    lines = KeyLines.build(text)
    legacy = upgrade_legacy(raw)
    problems = list(legacy.issues)
    warnings = list(legacy.warnings)
    data = legacy.data
    if "vars" in data:
        data["vars"], var_issues, var_warnings = normalize_vars(data["vars"])
        problems += var_issues
        warnings += var_warnings
    config: TakoConfig | None = None
    try:
        config = TakoConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        problems += issue_mod.from_pydantic(exc)
    if config is not None:
        rule_issues, rule_warnings = check_rules(config, legacy.hints)
        problems += rule_issues
        warnings += rule_warnings + unimplemented_warnings(config)
    ordered = _ordered(problems, lines, legacy.aliases)
    rendered = [issue_mod.render(i, label, lines, legacy.aliases) for i in ordered]
    if rendered or config is None:
        raise ConfigError(rendered, hint=f"fix {label} and run the command again")
    return LoadedConfig(
        config=config,
        path=path,
        warnings=[
            issue_mod.render(w, label, lines, legacy.aliases)
            for w in _ordered(warnings, lines, legacy.aliases)
        ],
        legacy=legacy.hints,
    )


def _ordered(
    found: list[Issue], lines: KeyLines, aliases: dict[KeyPath, KeyPath]
) -> list[Issue]:
    """Issues in file order (by line, unknown lines last), duplicates removed."""
    unique = list(dict.fromkeys(found))

    def line(issue: Issue) -> int:
        number = lines.line_of(issue_mod.apply_alias(issue.path, aliases))
        return number if number is not None else 1 << 30

    return sorted(unique, key=line)


def resolve_config_path(config: str | None, cwd: Path) -> Path:
    """The config file for ``-c`` (a file, or a directory holding tako.toml), else ./tako.toml."""
    if config is None:
        candidate = cwd / CONFIG_FILE
        if not candidate.is_file():
            raise ConfigError([f"no {CONFIG_FILE} in {cwd}"], hint="run tako init")
        return candidate
    given = Path(config).expanduser()
    candidate = given if given.is_absolute() else cwd / given
    if candidate.is_dir():
        if not (candidate / CONFIG_FILE).is_file():
            raise ConfigError([f"no {CONFIG_FILE} in {candidate}"], hint="run tako init")
        return candidate / CONFIG_FILE
    if not candidate.is_file():
        raise ConfigError(
            [f"config file {candidate} does not exist"],
            hint=f"check the -c path, or run tako init {candidate.parent}",
        )
    return candidate
