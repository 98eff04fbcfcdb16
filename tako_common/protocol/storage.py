"""Storage bindings and backup settings as the ``deploy`` request carries them.

Rules:

- a :class:`StorageBinding` is what one ``[envs.<env>].storages`` entry resolves to:
  ``local`` (a directory the server owns) or ``s3`` (a bucket, its endpoint and the
  credentials the client decrypted from ``.tako/secrets.json``);
- :class:`BackupSettings` is ``[envs.<env>].backup`` resolved the same way, plus the
  backup keys (base64, 32 bytes; the last one encrypts new archives) and the server's
  name (the object prefix ``_tako/backups/{app}/{env}/{server}/``);
- secret fields never show in a ``repr`` (``Field(repr=False)``), so a logged request
  does not leak them; strict like every request model (no coercion, unknown keys refused).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tako_common.protocol.fields import Count, Flag

BINDING_RULE = "use 1-63 characters of [A-Za-z0-9_-], starting with a letter or digit"
SERVER_RULE = "use 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit"
KEY_ID_RULE = "use 1-32 characters of [a-z0-9-]"
BUCKET_RULE = "use 3-63 characters of [a-z0-9.-], starting and ending with a letter or digit"
BACKUP_ID_RULE = "use the id `tako backups ls` shows: YYYYMMDDTHHMMSSZ-xxxxxx"
KEY_BYTES = 32

_BINDING_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_SERVER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_KEY_ID_RE = re.compile(r"[a-z0-9-]{1,32}")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
BACKUP_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")


def _matching(pattern: re.Pattern[str], what: str, rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: {rule}")
        return value

    return AfterValidator(check)


def check_endpoint(value: str) -> str:
    """``https://host[:port]`` and nothing else (no path, query, user or fragment)."""
    rest = value.removeprefix("https://")
    if rest == value or not rest or any(c in rest for c in "/?#@ \\") or "\x00" in rest:
        raise ValueError(
            f"storage endpoint {value!r} must be https://host[:port] (no path, user or query)"
        )
    return value


def _https_url(value: str) -> str:
    rest = value.removeprefix("https://")
    if rest == value or not rest or rest.startswith("/"):
        raise ValueError(f"must be an https:// URL with a host (got {value!r})")
    return value


def _one_line(value: str) -> str:
    if not value or any(c in value for c in "\r\n\x00"):
        raise ValueError("must be one non-empty line")
    return value


def _backup_key(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("backup key must be base64") from exc
    if len(raw) != KEY_BYTES:
        raise ValueError(f"backup key must be {KEY_BYTES} bytes, got {len(raw)}")
    return value


BindingName = Annotated[str, _matching(_BINDING_RE, "storage binding name", BINDING_RULE)]
ServerName = Annotated[str, _matching(_SERVER_RE, "server name", SERVER_RULE)]
KeyId = Annotated[str, _matching(_KEY_ID_RE, "backup key id", KEY_ID_RULE)]
Bucket = Annotated[str, _matching(_BUCKET_RE, "bucket name", BUCKET_RULE)]
BackupId = Annotated[str, _matching(BACKUP_ID_RE, "backup id", BACKUP_ID_RULE)]
Endpoint = Annotated[str, AfterValidator(check_endpoint)]
HttpsUrl = Annotated[str, AfterValidator(_https_url)]
OneLine = Annotated[str, Field(max_length=1024), AfterValidator(_one_line)]
BackupKeyText = Annotated[str, AfterValidator(_backup_key)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class S3Target(_Strict):
    """One bucket on an S3-compatible endpoint and the key pair that opens it."""

    bucket: Bucket
    endpoint: Endpoint
    region: OneLine
    force_path_style: Flag = False
    access_key_id: OneLine = Field(repr=False)
    secret_access_key: OneLine = Field(repr=False)


class StorageBinding(_Strict):
    """One app binding: ``local`` (a server directory) or ``s3`` (with its target)."""

    name: BindingName
    provider: Literal["local", "s3"]
    s3: S3Target | None = None
    public_base_url: HttpsUrl | None = None

    @model_validator(mode="after")
    def _shape(self) -> StorageBinding:
        if (self.provider == "s3") != (self.s3 is not None):
            raise ValueError("an s3 binding needs its s3 target; a local binding has none")
        if self.provider == "local" and self.public_base_url is not None:
            raise ValueError("a local binding has no public_base_url")
        return self


class BackupKey(_Strict):
    """A backup encryption key (base64 of 32 random bytes) and its id."""

    id: KeyId
    key: BackupKeyText = Field(repr=False)


class BackupSettings(_Strict):
    """Where and how often the server backs the app's data up (``[envs.<env>].backup``)."""

    storage: BindingName
    target: S3Target
    keys: list[BackupKey] = Field(min_length=1, max_length=64)
    server: ServerName
    interval_hours: Count = Field(default=24, ge=1, le=24 * 7)
    keep_daily: Count = Field(default=7, ge=0, le=366)
    keep_weekly: Count = Field(default=4, ge=0, le=520)

    @property
    def active_key(self) -> BackupKey:
        """The key new archives are encrypted with (the last one)."""
        return self.keys[-1]
