"""App secrets: ``.tako/secrets.json`` in the app directory, encrypted per environment.

Rules:

- file: pretty JSON ``{"<env>": {"<NAME>": "<b64>"}}``; names are in clear, values are
  standard base64 of a 12-byte random nonce || AES-256-GCM ciphertext || 16-byte tag
  (no associated data) of the UTF-8 value — byte-compatible with the original Tako;
- key per environment: 32 random bytes as base64 text, either in the environment variable
  ``TAKO_KEY_<ENV>`` (upper-cased, ``-`` -> ``_``; wins, for CI) or in the file
  ``$TAKO_HOME/keys/{env}`` (mode 0600, directory 0700), created on the first ``set``;
- secret names must be process environment names (those that are not UPPER_SNAKE_CASE
  are accepted; :func:`is_upper_snake_case` lets the CLI warn), environment names follow
  the app name rule; a value that does not decrypt is an error naming the key source;
- values are never logged or put in messages;
- each environment may also hold the reserved sections :data:`RESERVED` (storage
  credentials, backup keys, provider credentials; encrypted with the same key): app-secret
  functions leave them out and keep them on write; :mod:`tako_client.storage_secrets` and
  :mod:`tako_client.credentials` own them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets as _random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tako_client.global_config import tako_home
from tako_common.errors import TakoError, ValidationError
from tako_common.names import ENV_VAR_RULE, is_valid_env_var_name, validate_env_name

SECRETS_PATH = Path(".tako") / "secrets.json"
KEY_BYTES = 32
NONCE_BYTES = 12
Secrets = dict[str, dict[str, str]]
#: Per-environment keys that are not app secrets: ``storages`` (S3 credentials per
#: resource) and ``backup_keys`` (see :mod:`tako_client.storage_secrets`), and
#: ``credentials`` (provider credentials, see :mod:`tako_client.credentials`).
RESERVED = ("storages", "backup_keys", "credentials")


class SecretsError(TakoError):
    """The secrets file or a key is unusable."""

    code = "secrets"


@dataclass(frozen=True)
class EnvKey:
    """An environment's key and where it came from (for error messages)."""

    key: bytes
    source: str


_UPPER_SNAKE_RE = re.compile(r"[A-Z][A-Z0-9_]*")


def is_upper_snake_case(name: str) -> bool:
    """``DATABASE_URL`` yes; ``database_url``, ``DbUrl``, ``_X`` no (the usual env-var form)."""
    return bool(_UPPER_SNAKE_RE.fullmatch(name))


def validate_secret_name(name: str) -> str:
    if not isinstance(name, str) or not is_valid_env_var_name(name):
        raise ValidationError(f"invalid secret name {name!r}: {ENV_VAR_RULE}")
    if name in RESERVED:
        raise ValidationError(
            f"secret name {name!r} is reserved in .tako/secrets.json (storage credentials "
            "and backup keys live there); pick another name"
        )
    return name


def key_env_var(env: str) -> str:
    """``TAKO_KEY_<ENV>`` with the environment upper-cased and ``-`` as ``_``."""
    return "TAKO_KEY_" + env.upper().replace("-", "_")


def key_path(env: str, home: Path | None = None) -> Path:
    return (home if home is not None else tako_home()) / "keys" / validate_env_name(env)


def decode_key(text: str, source: str) -> bytes:
    """Decode a base64 key and check it is 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretsError(f"key from {source} is not valid base64") from exc
    if len(key) != KEY_BYTES:
        raise SecretsError(
            f"key from {source} is {len(key)} bytes: a key must be {KEY_BYTES} bytes"
        )
    return key


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def load_key(env: str, home: Path | None = None) -> EnvKey | None:
    """The key of ``env`` from ``TAKO_KEY_<ENV>`` or the key file, or None if neither."""
    var = key_env_var(validate_env_name(env))
    if os.environ.get(var):
        source = f"environment variable {var}"
        return EnvKey(decode_key(os.environ[var], source), source)
    path = key_path(env, home)
    if not path.exists():
        return None
    source = f"key file {path}"
    return EnvKey(decode_key(path.read_text(encoding="ascii", errors="replace"), source), source)


def require_key(env: str, home: Path | None = None) -> EnvKey:
    found = load_key(env, home)
    if found is None:
        raise SecretsError(
            f"no key for environment {env!r}: neither {key_env_var(env)} nor {key_path(env, home)}",
            hint=f"get the key from a teammate and run `tako secrets key import --env {env}`",
        )
    return found


def write_key(
    env: str, key: bytes, *, home: Path | None = None, force: bool = False
) -> Literal["created", "unchanged", "replaced"]:
    """Store ``key`` as the key file of ``env`` (0600); a different key needs ``force``."""
    decode_key(encode_key(key), "the given key")
    path = key_path(env, home)
    old: bytes | None = None
    if path.exists():
        old = decode_key(path.read_text(encoding="ascii", errors="replace"), f"key file {path}")
        if old == key:
            return "unchanged"
        if not force:
            raise SecretsError(
                f"a different key for {env!r} already exists at {path}: refusing to overwrite it",
                hint="pass --force to replace it (old values become unreadable)",
            )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(encode_key(key))
    os.replace(tmp, path)
    return "created" if old is None else "replaced"


def ensure_key(env: str, home: Path | None = None) -> EnvKey:
    """The existing key of ``env``, or a new random key written to the key file."""
    found = load_key(env, home)
    if found is not None:
        return found
    key = _random.token_bytes(KEY_BYTES)
    write_key(env, key, home=home)
    return EnvKey(key, f"key file {key_path(env, home)}")


def encrypt_value(key: bytes, plaintext: str) -> str:
    nonce = _random.token_bytes(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), None)
    return base64.b64encode(nonce + sealed).decode("ascii")


def decrypt_value(key: EnvKey, value: str, *, label: str) -> str:
    """Decrypt one stored value; ``label`` names it in errors (never the value)."""
    try:
        blob = base64.b64decode(value, validate=True)
        if len(blob) < NONCE_BYTES + 16:
            raise ValueError("too short")
        plain = AESGCM(key.key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], None)
        return plain.decode("utf-8")
    except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError) as exc:
        raise SecretsError(
            f"cannot decrypt {label} with the key from {key.source}: wrong key or corrupted value",
            hint="import the right key with `tako secrets key import` or set the secret again",
        ) from exc


def secrets_file(app_dir: Path) -> Path:
    return app_dir / SECRETS_PATH


def load_document(app_dir: Path) -> dict[str, dict[str, Any]]:
    """The whole file, checked: per environment its secrets (strings) and the reserved
    sections (:data:`RESERVED`, owned by :mod:`tako_client.storage_secrets`)."""
    path = secrets_file(app_dir)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SecretsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SecretsError(f"{path}: top level must be an object of environments")
    for env, values in data.items():
        try:
            validate_env_name(env)
        except ValidationError as exc:
            raise SecretsError(f"{path}: {exc.message}") from exc
        if not isinstance(values, dict) or not all(
            isinstance(v, str) for n, v in values.items() if n not in RESERVED
        ):
            raise SecretsError(f"{path}: {env!r} must map secret names to encrypted strings")
        for name in values:
            if name not in RESERVED and not is_valid_env_var_name(name):
                raise SecretsError(
                    f"{path}: invalid secret name {name!r} in {env!r}: {ENV_VAR_RULE}"
                )
    return data


def load_secrets(app_dir: Path) -> Secrets:
    """Parse and validate ``.tako/secrets.json``; a missing file is empty. Only the app
    secrets: the reserved sections (storage credentials, backup keys) are left out."""
    return {
        env: {name: value for name, value in values.items() if name not in RESERVED}
        for env, values in load_document(app_dir).items()
    }


def save_document(app_dir: Path, data: dict[str, dict[str, Any]]) -> None:
    """Write the file pretty and sorted (stable diffs), atomically; drop empty envs."""
    path = secrets_file(app_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {env: dict(sorted(v.items())) for env, v in sorted(data.items()) if v}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_secrets(app_dir: Path, data: Secrets) -> None:
    """Write the app secrets of ``data``, keeping the file's reserved sections as they are."""
    merged: dict[str, dict[str, Any]] = {env: dict(values) for env, values in data.items()}
    for env, values in load_document(app_dir).items():
        for name in RESERVED:
            if name in values:
                merged.setdefault(env, {})[name] = values[name]
    save_document(app_dir, merged)


def sample_value(app_dir: Path, env: str) -> tuple[str, str] | None:
    """One encrypted value of ``env`` (a secret or a reserved one), to check a key with."""
    values = load_document(app_dir).get(env) or {}
    for name, value in values.items():
        if name not in RESERVED:
            return name, value
    for name in RESERVED:
        found = _first_string(values.get(name))
        if found is not None:
            return name, found
    return None


def _first_string(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    for item in items:
        found = _first_string(item)
        if found is not None:
            return found
    return None


def set_secret(
    app_dir: Path, env: str, name: str, value: str, *, home: Path | None = None
) -> EnvKey:
    """Encrypt and store ``name`` for ``env`` (creating the env key on first use)."""
    validate_env_name(env)
    validate_secret_name(name)
    if value == "":
        raise ValidationError("secret value cannot be empty")
    key = env_key_for_writing(app_dir, env, home)
    data = load_secrets(app_dir)
    data.setdefault(env, {})[name] = encrypt_value(key.key, value)
    save_secrets(app_dir, data)
    return key


def env_key_for_writing(app_dir: Path, env: str, home: Path | None = None) -> EnvKey:
    """The key to encrypt a new value of ``env`` with: the one its existing values were
    made with (checked on one of them), or a new key when the environment has none.

    Never starts a second key for an env that already has values: they would become
    undecryptable together."""
    sample = sample_value(app_dir, env)
    if sample is None:
        return ensure_key(env, home)
    key = require_key(env, home)
    decrypt_value(key, sample[1], label=f"{env}/{sample[0]}")
    return key


def remove_secret(app_dir: Path, name: str, env: str | None = None) -> list[str]:
    """Remove ``name`` from ``env`` (or every env); the envs it was removed from."""
    validate_secret_name(name)
    if env is not None:
        validate_env_name(env)
    data = load_secrets(app_dir)
    removed = [
        e for e, values in sorted(data.items()) if (env is None or e == env) and name in values
    ]
    if not removed:
        where = f"environment {env!r}" if env else "any environment"
        raise SecretsError(
            f"secret {name!r} is not set in {where}", hint="list them with `tako secrets ls`"
        )
    for e in removed:
        del data[e][name]
    save_secrets(app_dir, data)
    return removed


def list_secrets(app_dir: Path) -> dict[str, set[str]]:
    """Presence table: secret name -> environments that define it."""
    table: dict[str, set[str]] = {}
    for env, values in load_secrets(app_dir).items():
        for name in values:
            table.setdefault(name, set()).add(env)
    return dict(sorted(table.items()))


def decrypt_env(app_dir: Path, env: str, *, home: Path | None = None) -> dict[str, str]:
    """Every secret of ``env`` in clear; empty dict when the env has none."""
    values = load_secrets(app_dir).get(validate_env_name(env), {})
    if not values:
        return {}
    key = require_key(env, home)
    return {n: decrypt_value(key, v, label=f"secret {n!r} ({env})") for n, v in values.items()}


def missing_for_env(app_dir: Path, env: str) -> list[str]:
    """Names defined in other environments but not in ``env`` (deploy fails on these)."""
    data = load_secrets(app_dir)
    others = {n for e, values in data.items() if e != env for n in values}
    return sorted(others - set(data.get(env, {})))


def extra_for_env(app_dir: Path, env: str) -> list[str]:
    """Names only ``env`` defines, when other environments have secrets (deploy warns)."""
    data = load_secrets(app_dir)
    other_envs = [values for e, values in data.items() if e != env]
    if not other_envs:
        return []
    others = {n for values in other_envs for n in values}
    return sorted(set(data.get(env, {})) - others)
