"""`tako secrets` commands through a local typer app (values via stdin, never in argv/output)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from tako_client import secrets as store
from tako_client.commands.secrets import register
from tako_common.errors import TakoError


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tako-home"
    monkeypatch.setenv("TAKO_HOME", str(path))
    for var in [v for v in os.environ if v.startswith("TAKO_KEY_")]:
        monkeypatch.delenv(var)
    return path


TAKO_TOML = '[envs.production]\nroute = "a.com"\n[envs.staging]\nroute = "s.a.com"\n'


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    (path / "tako.toml").write_text(TAKO_TOML)
    monkeypatch.chdir(path)
    return path


def run(cli: typer.Typer, args: list[str], stdin: str = "") -> Result:
    return CliRunner().invoke(cli, args, input=stdin)


def test_set_reads_one_line_from_stdin_and_never_prints_the_value(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    result = run(
        cli, ["secrets", "set", "API_TOKEN", "--env", "staging"], "s3cr3t-value\r\nignored\n"
    )
    assert result.exit_code == 0, result.output
    assert "s3cr3t-value" not in result.output
    assert store.decrypt_env(app_dir, "staging") == {"API_TOKEN": "s3cr3t-value"}


def test_set_defaults_to_production_and_honours_config_parent_as_app_dir(
    cli: typer.Typer, home: Path, tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "tako.toml").write_text('name = "x"\n[envs.production]\nroute = "x.com"\n')
    result = run(cli, ["secrets", "set", "A", "-c", str(other / "tako.toml")], "v\n")
    assert result.exit_code == 0, result.output
    result = run(cli, ["secrets", "set", "B", "-c", str(other)], "w\n")  # -c DIR works too
    assert result.exit_code == 0, result.output
    assert store.decrypt_env(other, "production") == {"A": "v", "B": "w"}


def test_a_mistyped_config_path_is_an_error_and_writes_nothing(
    cli: typer.Typer, home: Path, tmp_path: Path
) -> None:
    result = run(cli, ["secrets", "set", "A", "-c", str(tmp_path / "typo")], "v\n")
    assert result.exit_code != 0
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["secrets", "set", "A"], "\n", "secret value cannot be empty"),
        (["secrets", "set", "A"], "", "secret value cannot be empty"),
        (["secrets", "set", "bad-name"], "v\n", "invalid secret name"),
        (["secrets", "rm", "A"], "", "needs confirmation"),
        (["secrets", "key", "export"], "", "no key for environment 'production'"),
        (["secrets", "key", "import"], "abc\n", "not valid base64"),
    ],
)
def test_bad_input_fails_with_a_tako_error_naming_the_rule(
    cli: typer.Typer, home: Path, app_dir: Path, args: list[str], stdin: str, message: str
) -> None:
    result = run(cli, args, stdin)
    assert isinstance(result.exception, TakoError)
    assert message in str(result.exception)


def test_set_warns_about_a_name_that_is_not_upper_snake_case_and_stores_it(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    result = run(cli, ["secrets", "set", "database_url"], "v\n")
    assert result.exit_code == 0, result.output
    assert "secret name 'database_url' is not UPPER_SNAKE_CASE (e.g. 'DATABASE_URL')" in (
        result.stderr
    )
    assert store.decrypt_env(app_dir, "production") == {"database_url": "v"}
    quiet = run(cli, ["secrets", "set", "DATABASE_URL_2"], "v\n")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_set_refuses_an_environment_tako_toml_does_not_declare(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    result = run(cli, ["secrets", "set", "A", "--env", "prod"], "v\n")
    assert isinstance(result.exception, TakoError)
    assert result.exception.message == (
        "environment 'prod' is not declared in tako.toml (declared: production, staging)"
    )
    assert "--force" in (result.exception.hint or "")
    assert not (app_dir / ".tako").exists()


def test_set_with_force_stores_an_undeclared_environment(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    result = run(cli, ["secrets", "set", "A", "--env", "preview", "--force"], "v\n")
    assert result.exit_code == 0, result.output
    assert store.decrypt_env(app_dir, "preview") == {"A": "v"}


def test_set_accepts_development_and_an_env_declared_in_the_c_file(
    cli: typer.Typer, home: Path, app_dir: Path, tmp_path: Path
) -> None:
    assert run(cli, ["secrets", "set", "A", "--env", "development"], "v\n").exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "custom.toml").write_text('[envs.qa]\nroute = "qa.com"\n')
    result = run(cli, ["secrets", "set", "A", "--env", "qa", "-c", str(other / "custom.toml")],
                 "v\n")
    assert result.exit_code == 0, result.output
    refused = run(cli, ["secrets", "set", "A", "-c", str(other / "custom.toml")], "v\n")
    assert "'production' is not declared in custom.toml (declared: qa)" in str(
        refused.exception
    )


def test_set_without_a_tako_toml_needs_force(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    (app_dir / "tako.toml").unlink()
    result = run(cli, ["secrets", "set", "A"], "v\n")
    assert isinstance(result.exception, TakoError)
    assert "no tako.toml in" in result.exception.message
    assert run(cli, ["secrets", "set", "A", "--force"], "v\n").exit_code == 0


def test_rm_with_yes_removes_from_all_envs_by_default(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    store.set_secret(app_dir, "production", "A", "1")
    store.set_secret(app_dir, "staging", "A", "1")
    result = run(cli, ["secrets", "rm", "A", "--yes"])
    assert result.exit_code == 0, result.output
    assert "production, staging" in result.output
    assert store.list_secrets(app_dir) == {}


def test_rm_aliases_and_env_option(cli: typer.Typer, home: Path, app_dir: Path) -> None:
    store.set_secret(app_dir, "production", "A", "1")
    store.set_secret(app_dir, "staging", "A", "1")
    result = run(cli, ["secrets", "delete", "A", "--env", "staging", "-y"])
    assert result.exit_code == 0, result.output
    assert store.list_secrets(app_dir) == {"A": {"production"}}


def test_ls_shows_presence_per_environment_without_values(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    store.set_secret(app_dir, "production", "DATABASE_URL", "postgres://secret")
    store.set_secret(app_dir, "staging", "API_KEY", "k-secret")
    result = run(cli, ["secrets", "ls"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "production", "staging"]
    assert lines[1].split() == ["API_KEY", "-", "✓"]
    assert lines[2].split() == ["DATABASE_URL", "✓", "-"]
    assert "secret" not in result.output


def test_key_export_prints_the_key_and_warns_on_stderr(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    store.set_secret(app_dir, "production", "A", "1")
    result = run(cli, ["secrets", "key", "export"])
    assert result.exit_code == 0
    key_text = (home / "keys" / "production").read_text()
    assert result.stdout.strip() == key_text
    assert "keep it secret" in result.stderr


def test_key_import_writes_the_key_and_refuses_a_different_one_without_force(
    cli: typer.Typer, home: Path, app_dir: Path
) -> None:
    first = base64.b64encode(os.urandom(32)).decode()
    second = base64.b64encode(os.urandom(32)).decode()
    assert run(cli, ["secrets", "key", "import", "--env", "staging"], first + "\n").exit_code == 0
    assert (home / "keys" / "staging").read_text() == first
    refused = run(cli, ["secrets", "key", "import", "--env", "staging"], second + "\n")
    assert "refusing to overwrite" in str(refused.exception)
    forced = run(cli, ["secrets", "key", "import", "--env", "staging", "--force"], second + "\n")
    assert forced.exit_code == 0
    assert (home / "keys" / "staging").read_text() == second


def test_imported_key_decrypts_secrets_set_elsewhere(
    cli: typer.Typer, home: Path, app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.set_secret(app_dir, "production", "A", "shared-value")
    exported = run(cli, ["secrets", "key", "export"]).stdout.strip()
    monkeypatch.setenv("TAKO_HOME", str(tmp_path / "teammate-home"))
    assert run(cli, ["secrets", "key", "import"], exported + "\n").exit_code == 0
    assert store.decrypt_env(app_dir, "production") == {"A": "shared-value"}
