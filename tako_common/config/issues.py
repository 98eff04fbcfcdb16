"""Config problems as data, and their one-line rendering ``file:line key.path: rule``.

An :class:`Issue` is a key path plus the rule it broke. Loading collects every issue
(pydantic shape errors, variable errors, legacy-form errors, cross-key rules) and renders
them all at once, e.g. ``tako.toml:7 envs.production: set either 'route' or 'routes', not
both``. Paths of keys that were rewritten from a legacy form are shown as written in the
file (``build.stages[0].working_dir``), through the alias map the legacy pass returns.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

import pydantic

from tako_common.config.lines import KeyLines, KeyPath
from tako_common.config.model import RULE_TYPE, TakoConfig

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "a boolean (true or false)",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


@dataclass(frozen=True)
class Issue:
    """One broken rule at a key path (``()`` = the whole file)."""

    path: KeyPath
    message: str


def dotted(path: KeyPath) -> str:
    """``("envs", "production", "routes", 1)`` -> ``envs.production.routes[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += f".{key}" if out else key
    return out


def apply_alias(path: KeyPath, aliases: dict[KeyPath, KeyPath]) -> KeyPath:
    """Rewrite the longest aliased prefix of ``path`` to where the file really has it."""
    for end in range(len(path), 0, -1):
        target = aliases.get(path[:end])
        if target is not None:
            return (*target, *path[end:])
    return path


def render(
    issue: Issue, file_label: str, lines: KeyLines, aliases: dict[KeyPath, KeyPath]
) -> str:
    """``tako.toml:7 envs.production: rule`` (no line when the key cannot be found)."""
    path = apply_alias(issue.path, aliases)
    line = lines.line_of(path)
    where = f"{file_label}:{line}" if line is not None else file_label
    return f"{where} {dotted(path)}: {issue.message}" if path else f"{where}: {issue.message}"


def toml_type(value: object) -> str:
    """The TOML word for a parsed value, for 'must be X (got Y)' messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def from_pydantic(exc: pydantic.ValidationError) -> list[Issue]:
    """Translate every pydantic error into an :class:`Issue` with a plain message."""
    return [
        Issue(_display_loc(tuple(error["loc"])), _message(error))
        for error in exc.errors(include_url=False)
    ]


def _display_loc(loc: tuple[int | str, ...]) -> KeyPath:
    """Drop the internal ``groups`` level that workflow sub-tables are stored under."""
    out: list[int | str] = []
    for index, part in enumerate(loc):
        if part == "groups" and index > 0 and loc[index - 1] == "workflows":
            continue
        out.append(part)
    return tuple(out)


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == RULE_TYPE:
        return str(error["msg"])
    if kind == "extra_forbidden":
        return _unknown_key(tuple(error["loc"]))
    if kind == "missing":
        return "missing required key"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]} (got {toml_type(error['input'])})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {error['input']!r})"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')} (got {error['input']!r})"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')} (got {error['input']!r})"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')} (got {error['input']!r})"
    if kind == "too_short":
        return "must not be empty"
    return str(error["msg"]).replace("Input should be", "must be")


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    key = str(loc[-1])
    known = _known_keys(loc[:-1])
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{key}'{hint}"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model found by walking ``loc`` down from :class:`TakoConfig`."""
    annotation: Any = TakoConfig
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [name for name in annotation.model_fields if name != "groups"]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = args[0]
        else:
            return annotation
