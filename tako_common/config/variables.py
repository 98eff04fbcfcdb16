"""``[vars]`` and ``[vars.<env>]``: split, check and stringify app variables.

Rules:
- a key of ``[vars]`` whose value is a table is the per-environment form ``[vars.<env>]``
  (its key must be a valid environment name); every other key is a common variable;
- variable names follow process-environment rules (``[A-Za-z_][A-Za-z0-9_]*``);
- values may be strings, integers, floats, booleans or dates/times; they become strings
  (``true``/``false`` for booleans, ISO 8601 for dates/times); arrays and (nested) tables
  are invalid;
- ``ENV`` is reserved: it is dropped with a warning.

The result is the plain-dict form of :class:`~tako_common.config.model.VarsConfig`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tako_common.config.issues import Issue, toml_type
from tako_common.names import ENV_VAR_RULE, NAME_RULE, is_valid_env_var_name, is_valid_name

RESERVED_VARS = ("ENV",)


def stringify(value: object) -> str | None:
    """A TOML scalar as a process-environment string; ``None`` for arrays and tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return None


def normalize_vars(raw: object) -> tuple[dict[str, Any], list[Issue], list[Issue]]:
    """``[vars]`` -> (``{"common": ..., "per_env": ...}``, issues, warnings)."""
    issues: list[Issue] = []
    warnings: list[Issue] = []
    if not isinstance(raw, dict):
        issues.append(Issue(("vars",), f"must be a table (got {toml_type(raw)})"))
        return {"common": {}, "per_env": {}}, issues, warnings
    common: dict[str, str] = {}
    per_env: dict[str, dict[str, str]] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            if not is_valid_name(key):
                issues.append(Issue(
                    ("vars", key),
                    f"a table under [vars] holds per-environment variables, and {key!r} is not "
                    f"a valid environment name ({NAME_RULE})",
                ))
                continue
            per_env[key] = _table(("vars", key), value, issues, warnings)
        else:
            _put(common, ("vars", key), value, issues, warnings)
    return {"common": common, "per_env": per_env}, issues, warnings


def _table(
    base: tuple[str, ...], table: dict[str, Any], issues: list[Issue], warnings: list[Issue]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            issues.append(Issue(
                (*base, key), "tables are invalid variable values; use a string"
            ))
            continue
        _put(out, (*base, key), value, issues, warnings)
    return out


def _put(
    out: dict[str, str],
    path: tuple[str, ...],
    value: object,
    issues: list[Issue],
    warnings: list[Issue],
) -> None:
    name = path[-1]
    if not is_valid_env_var_name(name):
        issues.append(Issue(path, f"invalid variable name {name!r}: {ENV_VAR_RULE}"))
        return
    text = stringify(value)
    if text is None:
        issues.append(Issue(
            path, f"{toml_type(value)}s are invalid variable values; use a string"
        ))
        return
    if name in RESERVED_VARS:
        warnings.append(Issue(
            path, f"{name} is reserved and ignored; Tako sets TAKO_ENV to the environment name"
        ))
        return
    out[name] = text
