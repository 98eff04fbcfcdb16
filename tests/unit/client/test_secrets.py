"""Secrets store: AES-256-GCM values, per-env keys (file or TAKO_KEY_<ENV>), presence checks."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tako_client import secrets as store
from tako_common.errors import ValidationError


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


def test_value_format_is_base64_of_nonce_ciphertext_and_tag_without_aad() -> None:
    key = bytes(range(32))
    value = store.encrypt_value(key, "s3cret")
    blob = base64.b64decode(value)
    assert len(blob) == 12 + len("s3cret") + 16
    assert AESGCM(key).decrypt(blob[:12], blob[12:], None) == b"s3cret"


def test_values_sealed_by_another_implementation_decrypt() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    value = base64.b64encode(nonce + AESGCM(key).encrypt(nonce, "héllo".encode(), None)).decode()
    assert store.decrypt_value(store.EnvKey(key, "test"), value, label="X") == "héllo"


def test_first_set_creates_a_0600_key_file_in_a_0700_dir_and_pretty_json(
    home: Path, app: Path
) -> None:
    store.set_secret(app, "production", "DATABASE_URL", "postgres://u:p@h/db")
    key_file = home / "keys" / "production"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert len(base64.b64decode(key_file.read_text())) == 32
    text = (app / ".tako" / "secrets.json").read_text()
    assert text.startswith('{\n  "production": {\n    "DATABASE_URL": "')
    assert "postgres" not in text
    assert store.decrypt_env(app, "production") == {"DATABASE_URL": "postgres://u:p@h/db"}


def test_key_from_environment_variable_wins_over_the_key_file(
    home: Path, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.set_secret(app, "staging-eu", "TOKEN", "from-file-key")
    ci_key = os.urandom(32)
    monkeypatch.setenv("TAKO_KEY_STAGING_EU", base64.b64encode(ci_key).decode())
    found = store.load_key("staging-eu")
    assert found is not None
    assert found.key == ci_key and found.source == "environment variable TAKO_KEY_STAGING_EU"


def test_wrong_key_error_names_the_key_source_and_not_the_value(
    home: Path, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.set_secret(app, "production", "TOKEN", "tops3cret")
    monkeypatch.setenv("TAKO_KEY_PRODUCTION", base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(store.SecretsError) as info:
        store.decrypt_env(app, "production")
    assert "TAKO_KEY_PRODUCTION" in str(info.value) and "'TOKEN'" in str(info.value)
    assert "tops3cret" not in str(info.value)


def test_decrypt_without_any_key_explains_where_keys_come_from(home: Path, app: Path) -> None:
    store.set_secret(app, "production", "TOKEN", "x")
    (home / "keys" / "production").unlink()
    with pytest.raises(store.SecretsError, match="TAKO_KEY_PRODUCTION") as info:
        store.decrypt_env(app, "production")
    assert info.value.hint is not None and "key import" in info.value.hint


@pytest.mark.parametrize(
    ("text", "message"),
    [("not base64!", "not valid base64"), (base64.b64encode(b"short").decode(), "5 bytes")],
)
def test_malformed_keys_are_rejected(text: str, message: str) -> None:
    with pytest.raises(store.SecretsError, match=message):
        store.decode_key(text, "test")


@pytest.mark.parametrize(
    ("env", "name", "value"),
    [
        ("Production", "TOKEN", "x"),
        ("production", "1TOKEN", "x"),
        ("production", "MY-TOKEN", "x"),
        ("production", "TOKEN", ""),
    ],
)
def test_set_rejects_invalid_env_names_secret_names_and_empty_values(
    home: Path, app: Path, env: str, name: str, value: str
) -> None:
    with pytest.raises(ValidationError):
        store.set_secret(app, env, name, value)
    assert not (app / ".tako" / "secrets.json").exists()


def test_remove_from_one_env_or_from_all(home: Path, app: Path) -> None:
    for env in ("production", "staging"):
        store.set_secret(app, env, "A", "1")
        store.set_secret(app, env, "B", "2")
    assert store.remove_secret(app, "A", "staging") == ["staging"]
    assert store.list_secrets(app) == {"A": {"production"}, "B": {"production", "staging"}}
    assert store.remove_secret(app, "B") == ["production", "staging"]
    assert store.list_secrets(app) == {"A": {"production"}}
    with pytest.raises(store.SecretsError, match="not set"):
        store.remove_secret(app, "B")


def test_missing_and_extra_names_compare_with_other_environments(home: Path, app: Path) -> None:
    store.set_secret(app, "production", "SHARED", "1")
    store.set_secret(app, "production", "PROD_ONLY", "1")
    store.set_secret(app, "staging", "SHARED", "1")
    store.set_secret(app, "staging", "STAGING_ONLY", "1")
    assert store.missing_for_env(app, "production") == ["STAGING_ONLY"]
    assert store.extra_for_env(app, "production") == ["PROD_ONLY"]
    assert store.missing_for_env(app, "preview") == ["PROD_ONLY", "SHARED", "STAGING_ONLY"]


def test_single_environment_has_nothing_missing_or_extra(home: Path, app: Path) -> None:
    store.set_secret(app, "production", "A", "1")
    assert store.missing_for_env(app, "production") == []
    assert store.extra_for_env(app, "production") == []


def test_write_key_refuses_a_different_existing_key_unless_forced(home: Path) -> None:
    first, second = os.urandom(32), os.urandom(32)
    assert store.write_key("production", first) == "created"
    assert store.write_key("production", first) == "unchanged"
    with pytest.raises(store.SecretsError, match="refusing to overwrite"):
        store.write_key("production", second)
    assert store.write_key("production", second, force=True) == "replaced"


@pytest.mark.parametrize(
    "content",
    ["[1]", '{"production": {"bad-name": "x"}}', '{"Prod": {}}', '{"production": {"A": 1}}', "{"],
)
def test_invalid_secrets_file_is_reported_with_its_path(app: Path, content: str) -> None:
    (app / ".tako").mkdir()
    (app / ".tako" / "secrets.json").write_text(content)
    with pytest.raises(store.SecretsError, match="secrets.json"):
        store.list_secrets(app)


def test_file_is_sorted_and_empty_environments_are_dropped(home: Path, app: Path) -> None:
    store.set_secret(app, "staging", "B", "1")
    store.set_secret(app, "production", "Z", "1")
    store.set_secret(app, "production", "A", "1")
    store.remove_secret(app, "B", "staging")
    data = json.loads((app / ".tako" / "secrets.json").read_text())
    assert list(data) == ["production"] and list(data["production"]) == ["A", "Z"]


def test_setting_a_secret_never_starts_a_second_key_for_an_env_with_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, home = tmp_path / "app", tmp_path / "home"
    app.mkdir()
    monkeypatch.delenv("TAKO_KEY_PRODUCTION", raising=False)
    store.set_secret(app, "production", "A", "1", home=home)
    (home / "keys" / "production").unlink()  # a teammate without the key
    with pytest.raises(store.SecretsError, match="no key for environment"):
        store.set_secret(app, "production", "B", "2", home=home)
    assert not (home / "keys" / "production").exists()
    assert list(store.load_secrets(app)["production"]) == ["A"]
