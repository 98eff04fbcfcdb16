"""Field types of the management protocol: every checked string a request may carry.

Rules: each type is an ``Annotated`` alias whose validator raises ``ValueError`` with a
message that names the rule it broke (pydantic shows it as the field's error); the name
rules themselves live in :mod:`tako_common.names` and are reused, never copied. Integer
and boolean fields of requests are strict (:data:`Count`, :data:`Flag`): ``true`` is not
``1`` and ``"5"`` is not ``5``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, Strict

from tako_common.errors import TakoError
from tako_common.names import (
    is_valid_env_var_name,
    validate_app_name,
    validate_env_name,
    validate_version,
)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_OWNER_RE = re.compile(r"[A-Za-z0-9._@:-]{1,128}")


def _check_sha256(value: str) -> str:
    if not _SHA256_RE.fullmatch(value):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return value


def _check_env_map(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        if not is_valid_env_var_name(key):
            raise ValueError(f"invalid variable name {key!r}: use [A-Za-z_][A-Za-z0-9_]*")
        if "\x00" in item:
            raise ValueError(f"value of {key} contains a NUL byte (not allowed in environments)")
    return value


def _check_owner(value: str) -> str:
    if not _OWNER_RE.fullmatch(value):
        raise ValueError("owner must be 1-128 characters of [A-Za-z0-9._@:-]")
    return value


def _check_artifact_name(value: str) -> str:
    if "/" in value or "\\" in value or value in (".", "..") or not value.endswith(".tar.zst"):
        raise ValueError(
            "artifact must be a file name inside the server's incoming directory, "
            "ending in .tar.zst"
        )
    return value


def _check_subdir(value: str) -> str:
    parts = value.split("/")
    if value.startswith("/") or ".." in parts or "\\" in value or "\x00" in value:
        raise ValueError("app_subdir must be a relative path inside the release ('.' for the root)")
    return value


def _as_value_error(check: Callable[[str], str]) -> Callable[[str], str]:
    """Wrap a names.py validator so pydantic reports its message as a field error."""

    def run(value: str) -> str:
        try:
            return check(value)
        except TakoError as exc:
            raise ValueError(exc.message) from exc

    return run


AppName = Annotated[str, AfterValidator(_as_value_error(validate_app_name))]
EnvName = Annotated[str, AfterValidator(_as_value_error(validate_env_name))]
Version = Annotated[str, AfterValidator(_as_value_error(validate_version))]
Sha256 = Annotated[str, AfterValidator(_check_sha256)]
EnvMap = Annotated[dict[str, str], AfterValidator(_check_env_map)]
Owner = Annotated[str, AfterValidator(_check_owner)]
ArtifactName = Annotated[str, AfterValidator(_check_artifact_name)]
SubDir = Annotated[str, AfterValidator(_check_subdir)]
#: A JSON integer and nothing else (no ``true``, no ``"5"``, no ``5.0``).
Count = Annotated[int, Strict()]
#: A JSON boolean and nothing else (no ``1``, no ``"true"``).
Flag = Annotated[bool, Strict()]


# --------------------------------------------------------------------------- one-off commands

_TERM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MAX_SHELL_COMMAND = 8192


def _check_argv(value: list[str]) -> list[str]:
    if not value or not value[0]:
        raise ValueError("argv must name a program: the first argument may not be empty")
    if any("\x00" in arg for arg in value):
        raise ValueError("argv may not contain NUL bytes")
    return value


def _check_shell_command(value: str) -> str:
    if not value.strip():
        raise ValueError("the command is empty")
    if "\x00" in value:
        raise ValueError("the command may not contain NUL bytes")
    if len(value) > MAX_SHELL_COMMAND:
        raise ValueError(f"the command is longer than {MAX_SHELL_COMMAND} characters")
    return value


def _check_term(value: str) -> str:
    if not _TERM_RE.fullmatch(value):
        raise ValueError("term must be a terminal type such as xterm-256color")
    return value


#: A program and its arguments (``argv[0]`` non-empty, no NUL bytes).
Argv = Annotated[list[str], AfterValidator(_check_argv)]
#: A command line for ``/bin/sh -c`` (not blank, no NUL bytes, at most 8192 characters).
ShellCommand = Annotated[str, AfterValidator(_check_shell_command)]
#: A ``TERM`` value for a pseudo-terminal.
TermName = Annotated[str, AfterValidator(_check_term)]


# --------------------------------------------------------------------------- maintenance

MAX_MAINTENANCE_MESSAGE = 1000


def _check_maintenance_message(value: str) -> str:
    if len(value) > MAX_MAINTENANCE_MESSAGE:
        raise ValueError(
            f"the maintenance message is longer than {MAX_MAINTENANCE_MESSAGE} characters"
        )
    if any(ord(c) < 32 and c not in "\n\t" or ord(c) == 127 for c in value):
        raise ValueError("the maintenance message may not contain control characters")
    return value


#: The text of a maintenance page: at most 1000 characters, no control characters but
#: newlines and tabs.
MaintenanceMessage = Annotated[str, AfterValidator(_check_maintenance_message)]
