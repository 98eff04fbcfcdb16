"""The environment of an app under `tako dev`: precedence, development values only,
the app's tool directories first on PATH, and storages (local unless development binds a
declared S3 storage it has credentials for)."""

from __future__ import annotations

from pathlib import Path

from tako_client.dev.environ import DevPaths, dev_bindings, dev_environ, s3_without_credentials
from tako_client.dev.plan import dev_routes
from tako_common.config import load_config_text, merged_vars
from tako_common.storages import S3Credentials

S3 = (
    '[storages.media]\nprovider = "s3"\nbucket = "media-bucket"\n'
    'endpoint = "https://s3.example.com"\nregion = "auto"\n'
)
APP = Path("/home/me/shop")  # never touched: the functions under test only build strings
PATHS = DevPaths.under(APP / ".tako" / "dev")


def environ(**kwargs: object) -> dict[str, str]:
    args: dict[str, object] = {
        "base": {"PATH": "/usr/bin", "HOME": "/home/me", "TAKO_KEY_PRODUCTION": "k",
                 "PORT": "1", "NODE_ENV": "production"},
        "app": "web", "app_dir": APP, "runtime": "node", "variables": {}, "secrets": {},
        "bindings": [], "paths": PATHS, "port": 4100,
    }
    args.update(kwargs)
    return dev_environ(**args)  # type: ignore[arg-type]


def test_tako_values_win_over_everything_and_keys_do_not_leak() -> None:
    env = environ(variables={"PORT": "9", "TAKO_ENV": "x", "GREETING": "hi"},
                  secrets={"GREETING": "secret wins", "HOST": "0.0.0.0"})
    assert env["PORT"] == "4100" and env["HOST"] == "127.0.0.1"
    assert env["TAKO_ENV"] == "development" and env["TAKO_BUILD"] == "dev"
    assert env["TAKO_APP_NAME"] == "web"
    assert env["GREETING"] == "secret wins"
    assert "TAKO_KEY_PRODUCTION" not in env
    assert env["HOME"] == "/home/me"
    assert env["TAKO_DATA_DIR"] == str(APP / ".tako" / "dev" / "data")


def test_runtime_defaults_are_below_vars() -> None:
    assert environ()["NODE_ENV"] == "development"
    assert environ(variables={"NODE_ENV": "test"})["NODE_ENV"] == "test"
    assert environ(runtime="python")["NODE_ENV"] == "production"  # the developer's own
    assert environ(runtime="python")["PYTHONUNBUFFERED"] == "1"


def test_the_apps_tool_directories_come_first_on_path() -> None:
    env = environ(existing_dirs=frozenset({"node_modules/.bin", ".venv/bin"}))
    assert env["PATH"] == f"{APP}/node_modules/.bin:{APP}/.venv/bin:/usr/bin"
    assert environ()["PATH"] == "/usr/bin"


def test_merged_vars_are_development_only() -> None:
    loaded = load_config_text(
        'name = "web"\n[vars]\nA = "common"\nB = "common"\n[vars.development]\nB = "dev"\n'
        '[vars.production]\nC = "prod"\n',
        APP / "tako.toml",
    )
    assert merged_vars(loaded, "development", {}) == {"A": "common", "B": "dev"}


def test_undeclared_and_other_env_storages_are_local_in_development() -> None:
    config = load_config_text(
        'name = "web"\n' + S3
        + '[envs.production]\nroute = "web.example.com"\nstorages = { uploads = "media" }\n'
        + '[envs.development]\nstorages = { cache = "scratch", media = "media" }\n',
        APP / "tako.toml",
    ).config
    creds = {"media": S3Credentials("AKIA", "secret")}
    bindings = {b.name: b for b in dev_bindings(config, creds)}
    assert bindings["uploads"].provider == "local"  # production's binding: local here
    assert bindings["cache"].provider == "local"  # undeclared resource
    media = bindings["media"].s3
    assert media is not None and media.bucket == "media-bucket"
    assert s3_without_credentials(config, creds) == []
    assert {b.name: b.provider for b in dev_bindings(config, {})}["media"] == "local"
    assert s3_without_credentials(config, {}) == ["media"]
    env = environ(bindings=list(bindings.values()))
    assert env["TAKO_STORAGE_UPLOADS_PATH"] == str(PATHS.storage("uploads"))
    assert env["TAKO_STORAGE_MEDIA_BUCKET"] == "media-bucket"
    assert env["TAKO_STORAGES"] == "uploads,cache,media"


def test_routes_are_the_localhost_name_then_the_development_routes_once() -> None:
    assert dev_routes("web", []) == ("web.localhost",)
    assert dev_routes("web", ["web.test", "WEB.localhost", "api.test/v1/*"]) == (
        "web.localhost", "web.test", "api.test/v1/*",
    )
