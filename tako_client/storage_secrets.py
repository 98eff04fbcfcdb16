"""Storage credentials and backup keys in ``.tako/secrets.json`` (the reserved sections).

Layout, per environment, beside its app secrets (:mod:`tako_client.secrets`)::

    "production": {
      "API_TOKEN": "<b64>",
      "storages": {"prod_uploads": {"access_key_id": "<b64>", "secret_access_key": "<b64>"}},
      "backup_keys": [{"id": "k1a2b...", "key": "<b64>"}]
    }

Rules:

- every value is encrypted with the environment's key, as app secrets are (AES-256-GCM,
  ``TAKO_KEY_<ENV>`` or ``$TAKO_HOME/keys/{env}``); the resource names and key ids are
  in clear, so ``tako storages ls`` needs no key;
- a new value is encrypted with the key the environment's existing values were made with
  (:func:`tako_client.secrets.env_key_for_writing`), never a second one;
- backup keys are 32 random bytes made on the client (:func:`ensure_backup_key`) the first
  time an environment with ``backup`` is deployed or backed up; the last one encrypts new
  archives; they never go into the bucket, and whoever holds this file and the
  environment key can decrypt every backup (a restore on a fresh server works);
- nothing here prints or logs a value.
"""

from __future__ import annotations

import base64
import secrets as _random
from pathlib import Path
from typing import Any

from tako_client.secrets import (
    EnvKey,
    SecretsError,
    decrypt_value,
    encrypt_value,
    env_key_for_writing,
    load_document,
    require_key,
    save_document,
)
from tako_common.names import validate_env_name
from tako_common.protocol.storage import KEY_BYTES, BackupKey
from tako_common.storages import S3Credentials, key_id_of

STORAGES = "storages"
BACKUP_KEYS = "backup_keys"
_PAIR = ("access_key_id", "secret_access_key")


def _section(app_dir: Path, env: str, name: str) -> Any:
    return (load_document(app_dir).get(validate_env_name(env)) or {}).get(name)


def _storages(app_dir: Path, env: str) -> dict[str, dict[str, str]]:
    found = _section(app_dir, env, STORAGES)
    if found is None:
        return {}
    if not isinstance(found, dict) or not all(
        isinstance(v, dict)
        and sorted(v) == sorted(_PAIR)
        and all(isinstance(x, str) for x in v.values())
        for v in found.values()
    ):
        raise SecretsError(
            f".tako/secrets.json: {env}.storages must map resources to "
            "{access_key_id, secret_access_key}"
        )
    return found


def _keys(app_dir: Path, env: str) -> list[dict[str, str]]:
    found = _section(app_dir, env, BACKUP_KEYS)
    if found is None:
        return []
    if not isinstance(found, list) or not all(
        isinstance(k, dict)
        and sorted(k) == ["id", "key"]
        and all(isinstance(x, str) for x in k.values())
        for k in found
    ):
        raise SecretsError(f".tako/secrets.json: {env}.backup_keys must be a list of {{id, key}}")
    return found


def _write(app_dir: Path, env: str, name: str, value: Any) -> None:
    document = load_document(app_dir)
    document.setdefault(env, {})[name] = value
    save_document(app_dir, document)


def set_credentials(
    app_dir: Path, env: str, resource: str, creds: S3Credentials, *, home: Path | None = None
) -> EnvKey:
    """Store (or rotate) the key pair of ``resource`` for ``env``, encrypted."""
    key = env_key_for_writing(app_dir, validate_env_name(env), home)
    storages = _storages(app_dir, env)
    storages[resource] = {
        "access_key_id": encrypt_value(key.key, creds.access_key_id),
        "secret_access_key": encrypt_value(key.key, creds.secret_access_key),
    }
    _write(app_dir, env, STORAGES, dict(sorted(storages.items())))
    return key


def credential_table(app_dir: Path) -> dict[str, list[str]]:
    """environment -> the resources it has credentials for (no key needed)."""
    return {
        env: sorted(_storages(app_dir, env))
        for env in sorted(load_document(app_dir))
        if _storages(app_dir, env)
    }


def load_credentials(
    app_dir: Path, env: str, *, home: Path | None = None
) -> dict[str, S3Credentials]:
    """Every key pair of ``env``, decrypted (an empty dict needs no key)."""
    storages = _storages(app_dir, env)
    if not storages:
        return {}
    key = require_key(env, home)
    return {
        resource: S3Credentials(
            *(decrypt_value(key, pair[f], label=f"{env}.storages.{resource}.{f}") for f in _PAIR)
        )
        for resource, pair in storages.items()
    }


def load_backup_keys(app_dir: Path, env: str, *, home: Path | None = None) -> list[BackupKey]:
    """The backup keys of ``env`` (oldest first; the last is the active one), decrypted."""
    stored = _keys(app_dir, env)
    if not stored:
        return []
    key = require_key(env, home)
    return [
        BackupKey(
            id=item["id"], key=decrypt_value(key, item["key"], label=f"backup key {item['id']}")
        )
        for item in stored
    ]


def ensure_backup_key(
    app_dir: Path, env: str, *, home: Path | None = None
) -> tuple[list[BackupKey], bool]:
    """The backup keys of ``env``, making the first one when there is none: ``(keys, made)``."""
    keys = load_backup_keys(app_dir, env, home=home)
    if keys:
        return keys, False
    raw = _random.token_bytes(KEY_BYTES)
    text = base64.b64encode(raw).decode("ascii")
    env_key = env_key_for_writing(app_dir, validate_env_name(env), home)
    entry = {"id": key_id_of(raw), "key": encrypt_value(env_key.key, text)}
    _write(app_dir, env, BACKUP_KEYS, [*_keys(app_dir, env), entry])
    return [BackupKey(id=entry["id"], key=text)], True
