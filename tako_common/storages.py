"""Storage bindings and backup names: the pure rules both programs share.

Rules:

- every binding reaches the app as environment variables named after it: binding
  ``uploads`` gives ``TAKO_STORAGE_UPLOADS_PROVIDER`` and, for ``s3``, ``_BUCKET``,
  ``_ENDPOINT``, ``_REGION``, ``_ACCESS_KEY_ID``, ``_SECRET_ACCESS_KEY``,
  ``_FORCE_PATH_STYLE`` (``true``/``false``) and ``_PUBLIC_BASE_URL`` (when set), for
  ``local`` a ``_PATH``; ``TAKO_STORAGES`` lists the binding names (comma separated).
  The name is upper-cased with ``-`` as ``_``; two bindings that map to one name are
  refused (:func:`binding_environ`);
- :func:`resolve_bindings` / :func:`resolve_backup` turn ``[envs.<env>].storages`` /
  ``.backup`` plus ``[storages.*]`` plus the decrypted credentials into protocol models;
  every S3 resource without credentials is named at once (:class:`MissingCredentials`),
  so ``tako deploy`` refuses before it builds or uploads anything;
- backups live at ``_tako/backups/{app}/{env}/{server}/{id}.tkb``; an id is the UTC
  creation time plus 6 random hex digits (``20260102T030405Z-a1b2c3``), so ids sort by
  time and never collide across servers.

Pure: values in, values out; nothing here reads files or the environment.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tako_common.config.model import TakoConfig
from tako_common.config.rules import LOCAL_STORAGE
from tako_common.errors import TakoError, ValidationError
from tako_common.protocol.storage import (
    BACKUP_ID_RE,
    BackupKey,
    BackupSettings,
    S3Target,
    StorageBinding,
)

VAR_PREFIX = "TAKO_STORAGE_"
STORAGES_VAR = "TAKO_STORAGES"
DATA_DIR_VAR = "TAKO_DATA_DIR"
BACKUP_ROOT = "_tako/backups"
BACKUP_SUFFIX = ".tkb"
_ID_TIME = "%Y%m%dT%H%M%SZ"
_TOKEN_RE = re.compile(r"[0-9a-f]{6}")


class MissingCredentials(TakoError):
    """S3 resources the environment uses have no credentials in ``.tako/secrets.json``."""

    code = "storage_credentials"

    def __init__(self, env: str, resources: list[str]) -> None:
        self.env = env
        self.resources = resources
        first = resources[0]
        super().__init__(
            f"storage credentials missing for environment {env!r}: {', '.join(resources)} "
            "(every S3 storage the environment binds or backs up to needs them)",
            hint=f"set them with `tako storages credentials {first} --env {env}`",
        )


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair (never printed: see ``__repr__``)."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:
        return "S3Credentials(<hidden>)"


# --------------------------------------------------------------------------- variables


def binding_var(binding: str, field: str) -> str:
    """``binding_var("user-files", "BUCKET")`` -> ``TAKO_STORAGE_USER_FILES_BUCKET``."""
    return f"{VAR_PREFIX}{binding.upper().replace('-', '_')}_{field}"


def binding_environ(
    bindings: Iterable[StorageBinding], local_paths: Mapping[str, str]
) -> dict[str, str]:
    """The variables of every binding; ``local_paths`` maps each local binding to its dir."""
    environ: dict[str, str] = {}
    owners: dict[str, str] = {}
    names = []
    for binding in bindings:
        stem = binding_var(binding.name, "")
        if stem in owners:
            raise ValidationError(
                f"storage bindings {owners[stem]!r} and {binding.name!r} both map to "
                f"{stem}*: rename one of them"
            )
        owners[stem] = binding.name
        names.append(binding.name)
        environ.update(_one_binding(binding, local_paths))
    if names:
        environ[STORAGES_VAR] = ",".join(names)
    return environ


def _one_binding(binding: StorageBinding, local_paths: Mapping[str, str]) -> dict[str, str]:
    def var(field: str) -> str:
        return binding_var(binding.name, field)

    values: dict[str, str] = {var("PROVIDER"): binding.provider}
    if binding.s3 is None:
        if binding.name not in local_paths:
            raise ValidationError(f"local storage binding {binding.name!r} has no directory")
        values[var("PATH")] = local_paths[binding.name]
        return values
    s3 = binding.s3
    values.update(
        {
            var("BUCKET"): s3.bucket,
            var("ENDPOINT"): s3.endpoint,
            var("REGION"): s3.region,
            var("ACCESS_KEY_ID"): s3.access_key_id,
            var("SECRET_ACCESS_KEY"): s3.secret_access_key,
            var("FORCE_PATH_STYLE"): "true" if s3.force_path_style else "false",
        }
    )
    if binding.public_base_url is not None:
        values[var("PUBLIC_BASE_URL")] = binding.public_base_url
    return values


# --------------------------------------------------------------------------- resolving


def s3_resources(config: TakoConfig, env: str) -> list[str]:
    """The declared S3 resources ``env`` binds or backs up to (each once, in order)."""
    found = config.envs.get(env)
    if found is None:
        return []
    names = [r for r in found.storages.values() if r != LOCAL_STORAGE]
    if found.backup is not None:
        names.append(found.backup.storage)
    return [n for n in dict.fromkeys(names) if n in config.storages]


def check_credentials(
    config: TakoConfig, env: str, credentials: Mapping[str, S3Credentials]
) -> None:
    """Raise :class:`MissingCredentials` naming every S3 resource without a key pair."""
    missing = [name for name in s3_resources(config, env) if name not in credentials]
    if missing:
        raise MissingCredentials(env, missing)


def _target(config: TakoConfig, resource: str, creds: S3Credentials) -> S3Target:
    declared = config.storages[resource]
    return S3Target(
        bucket=declared.bucket,
        endpoint=declared.endpoint,
        region=declared.region,
        force_path_style=declared.force_path_style,
        access_key_id=creds.access_key_id,
        secret_access_key=creds.secret_access_key,
    )


def resolve_bindings(
    config: TakoConfig, env: str, credentials: Mapping[str, S3Credentials]
) -> list[StorageBinding]:
    """``[envs.<env>].storages`` as protocol bindings (raises when credentials are missing)."""
    check_credentials(config, env, credentials)
    found = config.envs.get(env)
    bindings = []
    for name, resource in (found.storages if found is not None else {}).items():
        if resource == LOCAL_STORAGE:
            bindings.append(StorageBinding(name=name, provider="local"))
            continue
        declared = config.storages[resource]
        bindings.append(
            StorageBinding(
                name=name,
                provider="s3",
                s3=_target(config, resource, credentials[resource]),
                public_base_url=declared.public_base_url,
            )
        )
    binding_environ(bindings, {b.name: "/" for b in bindings})  # name collisions, early
    return bindings


def resolve_backup(
    config: TakoConfig,
    env: str,
    credentials: Mapping[str, S3Credentials],
    keys: list[BackupKey],
    server: str,
) -> BackupSettings | None:
    """``[envs.<env>].backup`` as protocol settings for ``server`` (None when unset)."""
    found = config.envs.get(env)
    if found is None or found.backup is None:
        return None
    check_credentials(config, env, credentials)
    backup = found.backup
    return BackupSettings(
        storage=backup.storage,
        target=_target(config, backup.storage, credentials[backup.storage]),
        keys=keys,
        server=server,
        interval_hours=backup.interval_hours,
        keep_daily=backup.keep_daily,
        keep_weekly=backup.keep_weekly,
    )


def local_bindings(config: TakoConfig, env: str) -> list[str]:
    """The bindings of ``env`` that use the built-in ``local`` storage."""
    found = config.envs.get(env)
    storages = found.storages if found is not None else {}
    return [name for name, resource in storages.items() if resource == LOCAL_STORAGE]


# --------------------------------------------------------------------------- backup names


def key_id_of(key: bytes) -> str:
    """A stable id of a backup key (a hash prefix; reveals nothing about the key)."""
    return "k" + hashlib.sha256(b"tako backup key id\x00" + key).hexdigest()[:15]


def new_backup_id(now: datetime, token: str) -> str:
    """``20260102T030405Z-a1b2c3`` from the UTC time and 6 random hex digits."""
    if not _TOKEN_RE.fullmatch(token):
        raise ValueError("token must be 6 lowercase hex digits")
    return f"{now.astimezone(UTC).strftime(_ID_TIME)}-{token}"


def backup_time(backup_id: str) -> datetime:
    """When the backup ``backup_id`` was taken (UTC)."""
    if not BACKUP_ID_RE.fullmatch(backup_id):
        raise ValidationError(f"invalid backup id {backup_id!r}")
    return datetime.strptime(backup_id[:16], _ID_TIME).replace(tzinfo=UTC)


def backup_prefix(app: str, env: str) -> str:
    """The prefix of every backup of ``{app}/{env}`` (all servers)."""
    return f"{BACKUP_ROOT}/{app}/{env}/"


def backup_object_key(app: str, env: str, server: str, backup_id: str) -> str:
    return f"{backup_prefix(app, env)}{server}/{backup_id}{BACKUP_SUFFIX}"


@dataclass(frozen=True)
class BackupObjectName:
    """The parts of a backup object key."""

    app: str
    env: str
    server: str
    id: str


def parse_object_key(key: str) -> BackupObjectName | None:
    """The parts of ``_tako/backups/{app}/{env}/{server}/{id}.tkb``; None for other keys."""
    if not key.startswith(BACKUP_ROOT + "/") or not key.endswith(BACKUP_SUFFIX):
        return None
    parts = key[len(BACKUP_ROOT) + 1 : -len(BACKUP_SUFFIX)].split("/")
    if len(parts) != 4 or not BACKUP_ID_RE.fullmatch(parts[3]) or not all(parts):
        return None
    return BackupObjectName(app=parts[0], env=parts[1], server=parts[2], id=parts[3])
