"""Provider credentials in ``.tako/secrets.json`` (the reserved ``credentials`` section).

Layout, per environment, beside its app secrets (:mod:`tako_client.secrets`)::

    "production": {
      "API_TOKEN": "<b64>",
      "credentials": {"ssl.cloudflare": "<b64>", "postgres_url": "<b64>"}
    }

Rules:

- names are those of :mod:`tako_common.credentials`; values are checked by its rules
  before anything is written;
- every value is encrypted with the environment's key, as app secrets are, and with the
  key the environment's existing values were made with, never a second one
  (:func:`tako_client.secrets.env_key_for_writing`); names are in clear, so
  ``tako credentials ls`` needs no key;
- they are never app variables: ``tako deploy`` sends them in the request's
  ``credentials`` field, and tako-server keeps them sealed (``credential_store``);
- nothing here prints or logs a value.
"""

from __future__ import annotations

from pathlib import Path

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
from tako_common.credentials import validate_credential_name, validate_credential_value
from tako_common.names import validate_env_name

SECTION = "credentials"


def _stored(app_dir: Path, env: str) -> dict[str, str]:
    found = (load_document(app_dir).get(validate_env_name(env)) or {}).get(SECTION)
    if found is None:
        return {}
    if not isinstance(found, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in found.items()
    ):
        raise SecretsError(f".tako/secrets.json: {env}.{SECTION} must map names to values")
    return found


def _write(app_dir: Path, env: str, values: dict[str, str]) -> None:
    document = load_document(app_dir)
    section = document.setdefault(env, {})
    if values:
        section[SECTION] = dict(sorted(values.items()))
    else:
        section.pop(SECTION, None)  # an environment left empty is dropped on save
    save_document(app_dir, document)


def set_credential(
    app_dir: Path, env: str, name: str, value: str, *, home: Path | None = None
) -> EnvKey:
    """Store (or replace) credential ``name`` of ``env``, encrypted; the key used."""
    validate_credential_value(validate_credential_name(name), value)
    key = env_key_for_writing(app_dir, validate_env_name(env), home)
    stored = _stored(app_dir, env)
    stored[name] = encrypt_value(key.key, value)
    _write(app_dir, env, stored)
    return key


def remove_credential(app_dir: Path, env: str, name: str) -> bool:
    """Remove credential ``name`` of ``env``; False when it was not set."""
    validate_credential_name(name)
    stored = _stored(app_dir, env)
    if name not in stored:
        return False
    del stored[name]
    _write(app_dir, env, stored)
    return True


def credential_names(app_dir: Path, env: str) -> list[str]:
    """The credentials ``env`` has (no key needed)."""
    return sorted(_stored(app_dir, env))


def credential_table(app_dir: Path) -> dict[str, list[str]]:
    """environment -> the credentials it has (no key needed)."""
    table = {env: credential_names(app_dir, env) for env in sorted(load_document(app_dir))}
    return {env: names for env, names in table.items() if names}


def load_credentials(app_dir: Path, env: str, *, home: Path | None = None) -> dict[str, str]:
    """Every credential of ``env``, decrypted (an environment without any needs no key)."""
    stored = _stored(app_dir, env)
    if not stored:
        return {}
    key = require_key(env, home)
    values = {}
    for name, blob in stored.items():
        validate_credential_name(name)
        values[name] = decrypt_value(key, blob, label=f"{env}.{SECTION}.{name}")
    return values
