"""`tako storages add | credentials | ls` through a local typer app: tako.toml is edited
and validated before it is written, key pairs come from stdin (never argv or output)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from tako_client.commands.storages import register
from tako_client.storage_secrets import load_credentials
from tako_common.config import load_config
from tako_common.errors import TakoError


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tako-home"
    monkeypatch.setenv("TAKO_HOME", str(path))
    for var in [v for v in os.environ if v.startswith("TAKO_KEY_")]:
        monkeypatch.delenv(var)
    return path


TAKO_TOML = (
    '# my app\nname = "shop"\n\n[envs.production]\nroute = "a.com"\nservers = ["la"]\n\n'
    '[envs.staging]\nroute = "s.a.com"\nservers = ["la", "nyc"]\n'
)
S3_FLAGS = ["--bucket", "shop-media", "--endpoint", "https://r2.example.com", "--region", "auto"]


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    (path / "tako.toml").write_text(TAKO_TOML)
    monkeypatch.chdir(path)
    return path


def run(cli: typer.Typer, args: list[str], stdin: str = "") -> Result:
    return CliRunner().invoke(cli, args, input=stdin)


def test_add_declares_the_resource_binds_it_and_stores_the_pair(
    cli: typer.Typer, app_dir: Path
) -> None:
    result = run(cli, ["storages", "add", "media", *S3_FLAGS], "AKIA1\nsuper-secret\n")
    assert result.exit_code == 0, result.output
    assert "super-secret" not in result.output and "AKIA1" not in result.output
    config = load_config(app_dir / "tako.toml").config
    assert config.envs["production"].storages == {"media": "media"}
    assert config.storages["media"].bucket == "shop-media"
    assert (app_dir / "tako.toml").read_text().startswith("# my app\n")  # comments kept
    creds = load_credentials(app_dir, "production")["media"]
    assert (creds.access_key_id, creds.secret_access_key) == ("AKIA1", "super-secret")
    listing = run(cli, ["storages", "ls"])
    assert "production  media" in listing.output and "set" in listing.output


def test_a_reused_resource_keeps_its_pair_and_refuses_contradicting_flags(
    cli: typer.Typer, app_dir: Path
) -> None:
    assert run(cli, ["storages", "add", "media", *S3_FLAGS], "A\nB\n").exit_code == 0
    again = run(cli, ["storages", "add", "pics", "--resource", "media"])
    assert again.exit_code == 0, again.output
    assert load_config(app_dir / "tako.toml").config.envs["production"].storages == {
        "media": "media",
        "pics": "media",
    }
    before = (app_dir / "tako.toml").read_text()
    clash = run(cli, ["storages", "add", "x", "--resource", "media", "--bucket", "other"])
    assert isinstance(clash.exception, TakoError)
    assert "already declared with bucket = 'shop-media', not 'other'" in clash.exception.message
    assert (app_dir / "tako.toml").read_text() == before


def test_a_new_resource_without_a_terminal_needs_its_flags(cli: typer.Typer, app_dir: Path) -> None:
    result = run(cli, ["storages", "add", "media", "--bucket", "b-1"], "A\nB\n")
    assert isinstance(result.exception, TakoError)
    assert "needs endpoint, region" in result.exception.message
    assert (app_dir / "tako.toml").read_text() == TAKO_TOML


def test_local_storage_in_a_two_server_environment_is_refused_and_nothing_is_written(
    cli: typer.Typer, app_dir: Path
) -> None:
    result = run(cli, ["storages", "add", "files", "--env", "staging", "--provider", "local"])
    assert isinstance(result.exception, TakoError)
    assert "local storage deploys only to single-server environments" in result.exception.message
    assert (app_dir / "tako.toml").read_text() == TAKO_TOML
    ok = run(cli, ["storages", "add", "files", "--provider", "local"])
    assert ok.exit_code == 0, ok.output
    assert load_config(app_dir / "tako.toml").config.envs["production"].storages == {
        "files": "local"
    }


def test_credentials_rotate_a_declared_resource_only(cli: typer.Typer, app_dir: Path) -> None:
    missing = run(cli, ["storages", "credentials", "vault"], "A\nB\n")
    assert isinstance(missing.exception, TakoError)
    assert "storage 'vault' is not declared" in missing.exception.message
    assert run(cli, ["storages", "add", "media", *S3_FLAGS], "A\nB\n").exit_code == 0
    rotated = run(cli, ["storages", "credentials", "media", "--access-key-id", "A2"], "B2\n")
    assert rotated.exit_code == 0 and "rotated" in rotated.output
    creds = load_credentials(app_dir, "production")["media"]
    assert (creds.access_key_id, creds.secret_access_key) == ("A2", "B2")
    empty = run(cli, ["storages", "credentials", "media"], "A3\n\n")
    assert isinstance(empty.exception, TakoError) and "secret access key" in empty.exception.message
