"""Storage bindings as environment variables, resolving tako.toml + credentials into
bindings and backup settings, and the names of backup objects (tables, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tako_common.config import load_config_text
from tako_common.errors import ValidationError
from tako_common.protocol import BackupKey, S3Target, StorageBinding
from tako_common.storages import (
    MissingCredentials,
    S3Credentials,
    backup_object_key,
    backup_time,
    binding_environ,
    binding_var,
    new_backup_id,
    parse_object_key,
    resolve_backup,
    resolve_bindings,
    s3_resources,
)

TARGET = S3Target(
    bucket="app-uploads",
    endpoint="https://s3.example.com:9000",
    region="auto",
    access_key_id="AKIA1",
    secret_access_key="s3cret",
)
S3 = StorageBinding(name="uploads", provider="s3", s3=TARGET)
CDN = StorageBinding(
    name="user-files",
    provider="s3",
    s3=TARGET.model_copy(update={"force_path_style": True}),
    public_base_url="https://cdn.example.com/u",
)
LOCAL = StorageBinding(name="cache", provider="local")


@pytest.mark.parametrize(
    ("binding", "field", "name"),
    [
        ("uploads", "BUCKET", "TAKO_STORAGE_UPLOADS_BUCKET"),
        ("user-files", "PATH", "TAKO_STORAGE_USER_FILES_PATH"),
        ("My_Media2", "REGION", "TAKO_STORAGE_MY_MEDIA2_REGION"),
        ("3d", "ENDPOINT", "TAKO_STORAGE_3D_ENDPOINT"),
    ],
)
def test_binding_variable_names(binding: str, field: str, name: str) -> None:
    assert binding_var(binding, field) == name


@pytest.mark.parametrize(
    ("bindings", "expected"),
    [
        (
            [S3],
            {
                "TAKO_STORAGES": "uploads",
                "TAKO_STORAGE_UPLOADS_PROVIDER": "s3",
                "TAKO_STORAGE_UPLOADS_BUCKET": "app-uploads",
                "TAKO_STORAGE_UPLOADS_ENDPOINT": "https://s3.example.com:9000",
                "TAKO_STORAGE_UPLOADS_REGION": "auto",
                "TAKO_STORAGE_UPLOADS_ACCESS_KEY_ID": "AKIA1",
                "TAKO_STORAGE_UPLOADS_SECRET_ACCESS_KEY": "s3cret",
                "TAKO_STORAGE_UPLOADS_FORCE_PATH_STYLE": "false",
            },
        ),
        (
            [LOCAL],
            {
                "TAKO_STORAGES": "cache",
                "TAKO_STORAGE_CACHE_PROVIDER": "local",
                "TAKO_STORAGE_CACHE_PATH": "/data/storages/cache",
            },
        ),
        ([], {}),
    ],
)
def test_binding_environment(bindings: list[StorageBinding], expected: dict[str, str]) -> None:
    assert binding_environ(bindings, {"cache": "/data/storages/cache"}) == expected


def test_path_style_and_public_base_url_reach_the_app() -> None:
    env = binding_environ([CDN, LOCAL], {"cache": "/c"})
    assert env["TAKO_STORAGE_USER_FILES_FORCE_PATH_STYLE"] == "true"
    assert env["TAKO_STORAGE_USER_FILES_PUBLIC_BASE_URL"] == "https://cdn.example.com/u"
    assert env["TAKO_STORAGES"] == "user-files,cache"
    assert "TAKO_STORAGE_UPLOADS_PUBLIC_BASE_URL" not in binding_environ([S3], {})


def test_two_bindings_with_one_variable_name_are_refused() -> None:
    twins = [
        StorageBinding(name="a-b", provider="local"),
        StorageBinding(name="a_b", provider="local"),
    ]
    with pytest.raises(ValidationError, match="'a-b' and 'a_b' both map to TAKO_STORAGE_A_B_"):
        binding_environ(twins, {"a-b": "/x", "a_b": "/y"})


def test_a_local_binding_needs_its_directory() -> None:
    with pytest.raises(ValidationError, match="local storage binding 'cache' has no directory"):
        binding_environ([LOCAL], {})


def test_secrets_never_show_in_a_repr() -> None:
    assert "s3cret" not in repr(S3) and "AKIA1" not in repr(S3)
    assert "s3cret" not in repr(S3Credentials("AKIA1", "s3cret"))


# --------------------------------------------------------------------------- resolving

TOML = """
[envs.production]
route = "app.example.com"
servers = ["la"]
storages = { uploads = "media", cache = "local" }
backup = { storage = "vault", keep_daily = 3 }

[envs.staging]
route = "staging.example.com"

[storages.media]
provider = "s3"
bucket = "app-media"
endpoint = "https://r2.example.com"
region = "auto"
public_base_url = "https://cdn.example.com"

[storages.vault]
provider = "s3"
bucket = "app-vault"
endpoint = "https://r2.example.com"
region = "auto"
"""
CONFIG = load_config_text(TOML, Path("/app/tako.toml")).config
PAIR = S3Credentials("AKIA2", "pair-secret")
KEY = BackupKey(id="k1", key="A" * 43 + "=")


def test_the_resources_an_environment_needs_credentials_for() -> None:
    assert s3_resources(CONFIG, "production") == ["media", "vault"]
    assert s3_resources(CONFIG, "staging") == []


@pytest.mark.parametrize(
    ("given", "missing"),
    [({}, ["media", "vault"]), ({"media": PAIR}, ["vault"]), ({"vault": PAIR}, ["media"])],
)
def test_missing_credentials_are_all_named_before_anything_happens(
    given: dict[str, S3Credentials], missing: list[str]
) -> None:
    with pytest.raises(MissingCredentials) as info:
        resolve_bindings(CONFIG, "production", given)
    assert info.value.resources == missing
    assert f"tako storages credentials {missing[0]} --env production" in (info.value.hint or "")


def test_bindings_and_backup_settings_resolve_with_credentials() -> None:
    creds = {"media": PAIR, "vault": PAIR}
    bindings = resolve_bindings(CONFIG, "production", creds)
    assert [(b.name, b.provider) for b in bindings] == [("uploads", "s3"), ("cache", "local")]
    assert bindings[0].s3 is not None and bindings[0].s3.bucket == "app-media"
    assert bindings[0].public_base_url == "https://cdn.example.com"
    backup = resolve_backup(CONFIG, "production", creds, [KEY], "la")
    assert backup is not None
    assert (backup.storage, backup.target.bucket, backup.server) == ("vault", "app-vault", "la")
    assert (backup.keep_daily, backup.keep_weekly, backup.interval_hours) == (3, 4, 24)
    assert resolve_backup(CONFIG, "staging", creds, [KEY], "la") is None


# --------------------------------------------------------------------------- backup names


def test_backup_ids_carry_their_time_and_sort_by_it() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    backup_id = new_backup_id(when, "a1b2c3")
    assert backup_id == "20260102T030405Z-a1b2c3"
    assert backup_time(backup_id) == when
    assert new_backup_id(datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC), "000000") > backup_id


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        (
            "_tako/backups/web/production/la/20260102T030405Z-a1b2c3.tkb",
            ("web", "production", "la", "20260102T030405Z-a1b2c3"),
        ),
        ("_tako/backups/web/production/20260102T030405Z-a1b2c3.tkb", None),
        ("_tako/backups/web/production/la/notanid.tkb", None),
        ("uploads/20260102T030405Z-a1b2c3.tkb", None),
        ("_tako/backups/web/production/la/20260102T030405Z-a1b2c3.tar", None),
    ],
)
def test_object_keys_parse_back(key: str, parts: tuple[str, ...] | None) -> None:
    name = parse_object_key(key)
    assert (None if name is None else (name.app, name.env, name.server, name.id)) == parts


def test_object_key_round_trip() -> None:
    key = backup_object_key("web", "staging", "nyc", "20260102T030405Z-a1b2c3")
    assert key == "_tako/backups/web/staging/nyc/20260102T030405Z-a1b2c3.tkb"
    assert parse_object_key(key) is not None


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("https://s3.example.com", True),
        ("https://127.0.0.1:9443", True),
        ("http://s3.example.com", False),
        ("https://s3.example.com/bucket", False),
        ("https://user@s3.example.com", False),
        ("https://", False),
    ],
)
def test_endpoints_are_https_hosts_without_a_path(endpoint: str, ok: bool) -> None:
    data = {**TARGET.model_dump(), "endpoint": endpoint}
    if ok:
        assert S3Target.model_validate(data).endpoint == endpoint
    else:
        with pytest.raises(ValueError, match="must be https://host"):
            S3Target.model_validate(data)
