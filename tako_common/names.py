"""Name and version rules shared by the CLI, the server and the protocol.

- app and environment names: ``[a-z][a-z0-9-]{0,62}``, no trailing ``-`` (DNS label);
- secret / variable names: ``[A-Za-z_][A-Za-z0-9_]*`` (process environment names);
- release versions: 1-128 chars of ``[A-Za-z0-9._-]``, not ``.`` or ``..`` (so a version
  is always a single path component);
- version naming for deploys: clean git tree ``{commit}``, dirty ``{commit}_{hash8}``,
  no git ``nogit_{hash8}``.

Validators raise :class:`ValidationError` naming the rule; ``is_*`` predicates never raise.
"""

from __future__ import annotations

import re

from tako_common.errors import ValidationError

NAME_RULE = "use [a-z][a-z0-9-]{0,62}, no trailing '-'"
VERSION_RULE = "use 1-128 characters of [A-Za-z0-9._-], not '.' or '..'"
ENV_VAR_RULE = "use [A-Za-z_][A-Za-z0-9_]*"

_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_VERSION_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMIT_RE = re.compile(r"[0-9a-f]{4,40}")
_HASH8_RE = re.compile(r"[0-9a-f]{8}")

RESERVED_ENV = "development"


def is_valid_name(value: str) -> bool:
    return bool(_NAME_RE.fullmatch(value))


def validate_app_name(value: str) -> str:
    if not isinstance(value, str) or not is_valid_name(value):
        raise ValidationError(f"invalid app name {value!r}: {NAME_RULE}")
    return value


def validate_env_name(value: str) -> str:
    if not isinstance(value, str) or not is_valid_name(value):
        raise ValidationError(f"invalid environment name {value!r}: {NAME_RULE}")
    return value


def is_valid_version(value: str) -> bool:
    return bool(_VERSION_RE.fullmatch(value)) and value not in (".", "..")


def validate_version(value: str) -> str:
    if not isinstance(value, str) or not is_valid_version(value):
        raise ValidationError(f"invalid release version {value!r}: {VERSION_RULE}")
    return value


def is_valid_env_var_name(value: str) -> bool:
    return bool(_ENV_VAR_RE.fullmatch(value))


def validate_env_var_name(value: str) -> str:
    if not isinstance(value, str) or not is_valid_env_var_name(value):
        raise ValidationError(f"invalid variable name {value!r}: {ENV_VAR_RULE}")
    return value


def sanitize_app_name(raw: str) -> str:
    """Derive a valid app name from a directory name, or raise if nothing usable remains.

    Lowercase; every run of characters outside ``[a-z0-9]`` becomes one ``-``; leading
    digits and dashes and trailing dashes are dropped; at most 63 characters.
    """
    name = re.sub(r"[^a-z0-9]+", "-", raw.lower())
    name = re.sub(r"^[^a-z]+", "", name)
    name = name[:63].rstrip("-")
    if not is_valid_name(name):
        raise ValidationError(
            f"cannot derive an app name from directory {raw!r}: {NAME_RULE}",
            hint="set `name` in tako.toml",
        )
    return name


def release_version(commit: str | None, dirty: bool, source_hash: str) -> str:
    """Version of a deploy: ``{commit}`` clean, ``{commit}_{hash8}`` dirty, ``nogit_{hash8}``."""
    if len(source_hash) < 8 or not re.fullmatch(r"[0-9a-f]+", source_hash):
        raise ValidationError(
            f"invalid source hash {source_hash!r}: need >= 8 lowercase hex digits"
        )
    hash8 = source_hash[:8]
    if not commit:
        return f"nogit_{hash8}"
    if not _COMMIT_RE.fullmatch(commit):
        raise ValidationError(f"invalid git commit {commit!r}: need 4-40 lowercase hex digits")
    return f"{commit}_{hash8}" if dirty else commit


def parse_release_version(version: str) -> tuple[str | None, bool, str | None]:
    """Inverse of :func:`release_version`: ``(commit, dirty, hash8)``.

    Raises ``ValidationError`` when the version is not of one of the three forms.
    """
    validate_version(version)
    if version.startswith("nogit_"):
        hash8 = version[len("nogit_") :]
        if _HASH8_RE.fullmatch(hash8):
            return None, True, hash8
    elif "_" in version:
        commit, _, hash8 = version.partition("_")
        if _COMMIT_RE.fullmatch(commit) and _HASH8_RE.fullmatch(hash8):
            return commit, True, hash8
    elif _COMMIT_RE.fullmatch(version):
        return version, False, None
    raise ValidationError(
        f"release version {version!r} is not of the form "
        "{commit}, {commit}_{hash8} or nogit_{hash8}"
    )
