"""Provider credentials in .tako/secrets.json and `tako credentials`: encrypted with the env
key, apart from app secrets, values only from stdin/prompt, never in output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from tako_client import secrets as store
from tako_client.build.artifacts import BuiltArtifact
from tako_client.commands.credentials import register
from tako_client.credentials import (
    credential_names,
    credential_table,
    load_credentials,
    remove_credential,
    set_credential,
)
from tako_client.deploy import DeployTarget, build_request
from tako_client.storage_secrets import set_credentials as set_s3_credentials
from tako_common.errors import ValidationError
from tako_common.storages import S3Credentials

TOKEN = "cf-token-5f1d2e3c4b5a69788796a5b4"
PG = "postgresql://tako:pg-pass-77@10.213.9.1:5432/queue"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tako-home"
    monkeypatch.setenv("TAKO_HOME", str(path))
    for var in [v for v in os.environ if v.startswith("TAKO_KEY_")]:
        monkeypatch.delenv(var)
    return path


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    (path / "tako.toml").write_text(
        'name = "shop"\n[envs.production]\nroute = "a.com"\n[envs.staging]\nroute = "s.a.com"\n'
    )
    monkeypatch.chdir(path)
    return path


def test_values_are_encrypted_and_come_back(home: Path, app_dir: Path) -> None:
    set_credential(app_dir, "production", "ssl.cloudflare", TOKEN)
    set_credential(app_dir, "production", "postgres_url", PG)
    text = (app_dir / ".tako" / "secrets.json").read_text()
    assert TOKEN not in text and "pg-pass-77" not in text and '"credentials"' in text
    assert load_credentials(app_dir, "production") == {"ssl.cloudflare": TOKEN, "postgres_url": PG}
    assert credential_names(app_dir, "production") == ["postgres_url", "ssl.cloudflare"]
    assert load_credentials(app_dir, "staging") == {}


def test_they_are_not_app_secrets_and_share_the_env_key(home: Path, app_dir: Path) -> None:
    key = store.set_secret(app_dir, "production", "API_KEY", "v")
    used = set_credential(app_dir, "production", "ssl.cloudflare", TOKEN)
    set_s3_credentials(app_dir, "production", "media", S3Credentials("AKIA1", "s3cret"))
    assert used.key == key.key
    assert store.load_secrets(app_dir) == {
        "production": {"API_KEY": store.load_secrets(app_dir)["production"]["API_KEY"]}
    }
    assert store.decrypt_env(app_dir, "production") == {"API_KEY": "v"}
    store.remove_secret(app_dir, "API_KEY")  # app secrets change, credentials stay
    assert load_credentials(app_dir, "production") == {"ssl.cloudflare": TOKEN}


def test_remove_and_table(home: Path, app_dir: Path) -> None:
    set_credential(app_dir, "staging", "postgres_url", PG)
    set_credential(app_dir, "production", "ssl.cloudflare", TOKEN)
    assert credential_table(app_dir) == {
        "production": ["ssl.cloudflare"],
        "staging": ["postgres_url"],
    }
    assert remove_credential(app_dir, "staging", "postgres_url") is True
    assert remove_credential(app_dir, "staging", "postgres_url") is False
    assert credential_table(app_dir) == {"production": ["ssl.cloudflare"]}
    assert "staging" not in (app_dir / ".tako" / "secrets.json").read_text()


def test_bad_input_changes_nothing(home: Path, app_dir: Path) -> None:
    set_credential(app_dir, "production", "ssl.cloudflare", TOKEN)
    before = (app_dir / ".tako" / "secrets.json").read_bytes()
    for name, value in (("API_KEY", "x"), ("postgres_url", "mysql://h/x"), ("ssl.cloudflare", "")):
        with pytest.raises(ValidationError):
            set_credential(app_dir, "production", name, value)
    assert (app_dir / ".tako" / "secrets.json").read_bytes() == before


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


def _run(cli: typer.Typer, args: list[str], stdin: str = "") -> Result:
    return CliRunner().invoke(cli, args, input=stdin)


def test_cli_set_ls_rm(cli: typer.Typer, home: Path, app_dir: Path) -> None:
    result = _run(cli, ["credentials", "set", "ssl.cloudflare", "--env", "staging"], TOKEN + "\n")
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output and "next `tako deploy`" in result.output
    assert load_credentials(app_dir, "staging") == {"ssl.cloudflare": TOKEN}
    listing = _run(cli, ["credentials", "ls"])
    assert listing.exit_code == 0 and TOKEN not in listing.output
    row = next(line for line in listing.output.splitlines() if line.startswith("ssl.cloudflare"))
    assert "✓" in row and "Cloudflare API token" in row
    refused = _run(cli, ["credentials", "rm", "ssl.cloudflare", "--env", "staging"])
    assert refused.exit_code != 0 and "--yes" in str(getattr(refused.exception, "hint", ""))
    assert (
        _run(cli, ["credentials", "rm", "ssl.cloudflare", "-e", "staging", "--yes"]).exit_code == 0
    )
    assert credential_table(app_dir) == {}


@pytest.mark.parametrize(
    ("args", "stdin", "rule"),
    [
        (["set", "API_KEY", "--env", "staging"], "x\n", "unknown credential"),
        (["set", "postgres_url", "--env", "staging"], "mysql://h/x\n", "postgresql://"),
        (["set", "postgres_url", "--env", "staging"], "\n", "cannot be empty"),
        (["set", "ssl.cloudflare", "--env", "qa"], "t\n", "not declared"),
        (["set", "ssl.cloudflare", "--env", "development"], "t\n", "never deployed"),
        (["rm", "ssl.cloudflare", "--env", "staging", "--yes"], "", "has no credential"),
    ],
)
def test_cli_bad_input_names_the_rule(
    cli: typer.Typer, home: Path, app_dir: Path, args: list[str], stdin: str, rule: str
) -> None:
    result = _run(cli, ["credentials", *args], stdin)
    assert result.exit_code != 0
    exc = result.exception
    text = result.output + (getattr(exc, "message", "") or "") + (getattr(exc, "hint", "") or "")
    assert rule in text, text
    assert not (app_dir / ".tako" / "secrets.json").exists()


def test_deploy_sends_the_environment_credentials(home: Path, app_dir: Path) -> None:
    set_credential(app_dir, "production", "postgres_url", PG)
    target = DeployTarget(
        app="shop",
        env="production",
        routes=["a.com"],
        vars={},
        secrets={},
        instances=None,
        idle_timeout=300,
        credentials=load_credentials(app_dir, "production"),
    )
    assert PG not in repr(target)
    artifact = BuiltArtifact(
        path=Path("/x.tar.zst"),
        sha256="ab" * 32,
        size=1,
        version="v1",
        cache_hit=False,
        manifest={"runtime": "python", "main": "app.py"},
    )
    wire = build_request(target, artifact, "me@host:1").model_dump(mode="json")
    assert wire["credentials"] == {"postgres_url": PG}
    assert "postgres_url" not in wire["vars"] and not wire["secrets"]
