"""Storage credentials and backup keys in .tako/secrets.json: encrypted with the env key,
kept apart from app secrets (never sent as app variables), never started with a second key."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tako_client import secrets as store
from tako_client.storage_secrets import (
    credential_table,
    ensure_backup_key,
    load_backup_keys,
    load_credentials,
    set_credentials,
)
from tako_common.errors import ValidationError
from tako_common.storages import S3Credentials, key_id_of


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tako-home"
    monkeypatch.setenv("TAKO_HOME", str(path))
    for var in [v for v in os.environ if v.startswith("TAKO_KEY_")]:
        monkeypatch.delenv(var)
    return path


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    return path


PAIR = S3Credentials("AKIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG")


def test_credentials_are_encrypted_and_come_back(home: Path, app: Path) -> None:
    set_credentials(app, "production", "media", PAIR)
    text = (app / ".tako" / "secrets.json").read_text()
    assert "AKIAEXAMPLE" not in text and "wJalr" not in text
    assert '"storages"' in text and '"media"' in text
    assert load_credentials(app, "production") == {"media": PAIR}
    assert credential_table(app) == {"production": ["media"]}


def test_rotation_replaces_the_pair(home: Path, app: Path) -> None:
    set_credentials(app, "production", "media", PAIR)
    set_credentials(app, "production", "media", S3Credentials("AKIANEW", "new-secret"))
    creds = load_credentials(app, "production")["media"]
    assert (creds.access_key_id, creds.secret_access_key) == ("AKIANEW", "new-secret")


def test_app_secrets_and_storage_credentials_live_side_by_side(home: Path, app: Path) -> None:
    store.set_secret(app, "production", "API_TOKEN", "tok")
    set_credentials(app, "production", "media", PAIR)
    store.set_secret(app, "production", "OTHER", "x")  # keeps the storages section
    store.remove_secret(app, "OTHER", "production")
    assert store.decrypt_env(app, "production") == {"API_TOKEN": "tok"}  # not sent to the app
    assert store.list_secrets(app) == {"API_TOKEN": {"production"}}
    assert store.missing_for_env(app, "staging") == ["API_TOKEN"]
    assert load_credentials(app, "production")["media"].access_key_id == "AKIAEXAMPLE"


def test_an_env_with_only_credentials_is_never_given_a_second_key(home: Path, app: Path) -> None:
    set_credentials(app, "production", "media", PAIR)
    (home / "keys" / "production").unlink()  # e.g. a teammate's machine without the key
    with pytest.raises(store.SecretsError, match="no key for environment 'production'"):
        store.set_secret(app, "production", "API_TOKEN", "tok")
    with pytest.raises(store.SecretsError, match="no key for environment 'production'"):
        set_credentials(app, "production", "other", PAIR)


def test_reserved_names_are_not_secret_names() -> None:
    for name in ("storages", "backup_keys"):
        with pytest.raises(ValidationError, match="reserved"):
            store.validate_secret_name(name)


def test_a_malformed_storages_section_is_an_error(home: Path, app: Path) -> None:
    (app / ".tako").mkdir()
    (app / ".tako" / "secrets.json").write_text(json.dumps({"production": {"storages": ["x"]}}))
    with pytest.raises(store.SecretsError, match="production.storages must map resources"):
        load_credentials(app, "production")


def test_the_first_backup_key_is_made_once_and_kept(home: Path, app: Path) -> None:
    keys, made = ensure_backup_key(app, "production")
    assert made and len(keys) == 1
    raw = base64.b64decode(keys[0].key)
    assert len(raw) == 32 and keys[0].id == key_id_of(raw)
    again, made_again = ensure_backup_key(app, "production")
    assert not made_again and again == keys
    assert load_backup_keys(app, "production") == keys
    text = (app / ".tako" / "secrets.json").read_text()
    assert keys[0].key not in text and keys[0].id in text  # the id is clear, the key is not
    assert ensure_backup_key(app, "staging")[0] != keys  # one key per environment
