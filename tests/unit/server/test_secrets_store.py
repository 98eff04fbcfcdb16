"""Secrets at rest: key file creation and checks, AES-GCM blobs bound to their app."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tako_server.secrets_store import SecretBox, SecretsError, SecretsStore, load_or_create_key
from tako_server.state import StateStore


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [(b"x" * 32, 0o644, "readable by other users"), (b"short", 0o600, "has 5 bytes")],
)
def test_bad_key_file_is_refused(tmp_path: Path, content: bytes, mode: int, message: str) -> None:
    path = tmp_path / "secrets.key"
    path.write_bytes(content)
    os.chmod(path, mode)
    with pytest.raises(SecretsError, match=message):
        load_or_create_key(path)


def test_blob_round_trips_and_holds_no_plaintext() -> None:
    box = SecretBox(os.urandom(32))
    blob = box.seal("web/production", {"API_KEY": "hunter2-very-secret"})
    assert b"hunter2" not in blob and b"API_KEY" not in blob
    assert box.open("web/production", blob) == {"API_KEY": "hunter2-very-secret"}


@pytest.mark.parametrize(
    ("open_as", "key_changed"),
    [("web/staging", False), ("web/production", True)],
)
def test_blob_cannot_be_opened_by_another_app_or_key(open_as: str, key_changed: bool) -> None:
    box = SecretBox(os.urandom(32))
    blob = box.seal("web/production", {"A": "1"})
    reader = SecretBox(os.urandom(32)) if key_changed else box
    with pytest.raises(SecretsError, match="cannot be decrypted"):
        reader.open(open_as, blob)


def test_store_persists_encrypted_blobs_in_the_state_database(tmp_path: Path) -> None:
    state = StateStore.open(tmp_path / "state.sqlite3")
    store = SecretsStore.open(tmp_path / "secrets.key", state)
    assert store.get("web", "production") == {}
    store.put("web", "production", {"TOKEN": "plaintext-marker"})
    state.close()
    assert b"plaintext-marker" not in (tmp_path / "state.sqlite3").read_bytes()
    for extra in tmp_path.glob("state.sqlite3-*"):
        assert b"plaintext-marker" not in extra.read_bytes()
    state = StateStore.open(tmp_path / "state.sqlite3")
    assert SecretsStore.open(tmp_path / "secrets.key", state).get("web", "production") == {
        "TOKEN": "plaintext-marker"
    }
    state.close()
