"""`tako config`: resolved view of one environment; errors and warnings on stderr; --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from tako_client.commands import config as config_cmd

CONFIG = '''\
name = "shop"
runtime = "node"
main = "server.js"
release = "npm run migrate"

[vars]
API_URL = "https://api.example.com"
DEBUG = false

[vars.staging]
API_URL = "https://staging-api.example.com"

[envs.production]
route = "shop.example.com"
servers = ["la", "nyc"]
storages = { uploads = "media" }
backup = { storage = "media" }

[envs.staging]
routes = ["staging.example.com", "*.pr.example.com"]
servers = ["stage"]
storages = { uploads = "local" }
release = ""

[build]
run = "npm run build"

[storages.media]
provider = "s3"
bucket = "shop-media"
endpoint = "https://s3.example.com"
region = "auto"
'''


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    config_cmd.register(app)
    return app


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty global inventory ($TAKO_HOME) of this test's own."""
    path = tmp_path / "tako-home"
    monkeypatch.setenv("TAKO_HOME", str(path))
    return path


def inventory(home: Path, *names: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("".join(
        f'[[servers]]\nname = "{name}"\nhost = "10.0.0.{i}"\n' for i, name in enumerate(names, 1)
    ))


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "shop"
    path.mkdir()
    (path / "tako.toml").write_text(CONFIG)
    monkeypatch.chdir(path)
    return path


def run(cli: typer.Typer, args: list[str]) -> Result:
    return CliRunner().invoke(cli, ["config", *args])


def report(cli: typer.Typer, args: list[str]) -> dict[str, object]:
    result = run(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_default_env_is_production(cli: typer.Typer, app_dir: Path) -> None:
    data = report(cli, [])
    assert data["app"] == "shop" and data["env"] == "production"
    assert data["routes"] == ["shop.example.com"]
    assert data["servers"] == {
        "la": {"instances": 1, "idle_timeout": 300},
        "nyc": {"instances": 1, "idle_timeout": 300},
    }
    assert data["vars"] == {"API_URL": "https://api.example.com", "DEBUG": "false"}
    assert data["release"] == "npm run migrate"
    assert data["build"] == [{"name": "build", "run": "npm run build"}]
    assert data["backup"] == "media"
    assert data["storages"] == {"uploads": {
        "resource": "media", "provider": "s3", "bucket": "shop-media",
        "endpoint": "https://s3.example.com", "region": "auto", "force_path_style": False,
    }}


def test_env_option_merges_env_vars_and_env_settings(cli: typer.Typer, app_dir: Path) -> None:
    data = report(cli, ["--env", "staging"])
    assert data["vars"] == {"API_URL": "https://staging-api.example.com", "DEBUG": "false"}
    assert data["wildcard_routes"] == ["*.pr.example.com"]
    assert data["release"] is None
    assert data["storages"] == {"uploads": {"resource": "local", "provider": "local"}}


def test_secret_names_are_shown_but_never_values(cli: typer.Typer, app_dir: Path) -> None:
    (app_dir / ".tako").mkdir()
    (app_dir / ".tako" / "secrets.json").write_text(json.dumps({
        "production": {"DB_URL": "c2VjcmV0LXZhbHVl", "API_KEY": "b3RoZXI="},
        "staging": {"ONLY_STAGING": "eA=="},
    }))
    assert report(cli, [])["secrets"] == ["API_KEY", "DB_URL"]
    result = run(cli, [])
    assert "DB_URL" in result.stdout and "c2VjcmV0LXZhbHVl" not in result.stdout


def test_text_output_lists_the_resolved_values(cli: typer.Typer, app_dir: Path) -> None:
    result = run(cli, ["--env", "staging"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "shop (staging)" in out
    for expected in ("staging.example.com", "stage  instances=1 idle_timeout=300",
                     "API_URL=https://staging-api.example.com",
                     "tako credentials set ssl.cloudflare --env staging",
                     "uploads -> local (local)", "build  run='npm run build'"):
        assert expected in out, out


def test_c_selects_another_config_file(
    cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "custom.toml").write_text('[envs.production]\nroute = "x.example.com"\n')
    monkeypatch.chdir(tmp_path)
    data = report(cli, ["-c", "elsewhere/custom.toml"])
    assert data["app"] == "elsewhere" and data["routes"] == ["x.example.com"]
    assert data["app_dir"] == str(other)


def test_invalid_config_prints_every_issue_to_stderr_and_exits_1(
    cli: typer.Typer, app_dir: Path
) -> None:
    (app_dir / "tako.toml").write_text(
        '[envs.production]\nroute = "a.com"\nroutes = ["b.com"]\n[envs.qa]\nroutes = []\n'
    )
    result = run(cli, ["--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "tako.toml:1 envs.production: set either 'route' or 'routes', not both" in (
        result.stderr
    )
    assert "tako.toml:5 envs.qa.routes: needs at least one route" in result.stderr


def test_warnings_go_to_stderr_and_keep_json_clean(cli: typer.Typer, app_dir: Path) -> None:
    (app_dir / "tako.toml").write_text(
        '[envs.production]\nroute = "a.com"\n[build]\nassets = ["static"]\n'
    )
    result = run(cli, ["--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["assets"] == ["static"]
    assert "[build].assets is deprecated" in result.stderr


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("keep", ["--env", "prod"], "environment 'prod' is not declared in tako.toml; "
         "declared: production, staging"),
        ("remove", [], "no tako.toml in"),
        ("keep", ["-c", "missing.toml"], "does not exist"),
    ],
)
def test_unusable_selection_exits_1_with_a_message(
    cli: typer.Typer, app_dir: Path, setup: str, args: list[str], message: str
) -> None:
    if setup == "remove":
        (app_dir / "tako.toml").unlink()
    result = run(cli, args)
    assert result.exit_code == 1
    assert message in result.stderr


def test_development_is_shown_but_marked_not_deployable(cli: typer.Typer, app_dir: Path) -> None:
    data = report(cli, ["--env", "development"])
    assert data["deployable"] is False and data["servers"] == {} and data["routes"] == []


def test_an_environment_without_servers_is_a_warning_naming_the_fix(
    cli: typer.Typer, app_dir: Path, home: Path
) -> None:
    (app_dir / "tako.toml").write_text('[envs.production]\nroute = "a.com"\n')
    inventory(home, "la", "nyc")
    result = run(cli, ["--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["servers"] == {}
    assert "environment 'production' has no servers" in result.stderr
    assert 'set servers = ["NAME"] in [envs.production], NAME one of la, nyc' in result.stderr
    assert "tako servers add HOST --name NAME" in result.stderr
    (home / "config.toml").unlink()
    assert (
        "environment 'production' has no servers: add one with `tako servers add HOST --name "
        'NAME`, then set servers = ["NAME"] in [envs.production]'
    ) in run(cli, []).stderr


def test_production_without_servers_names_the_only_inventory_server_deploy_uses(
    cli: typer.Typer, app_dir: Path, home: Path
) -> None:
    (app_dir / "tako.toml").write_text('[envs.production]\nroute = "a.com"\n')
    inventory(home, "solo")
    result = run(cli, [])
    assert "deploy will use the only server 'solo'" in result.stderr
    assert 'add servers = ["solo"] to [envs.production]' in result.stderr


def test_servers_missing_from_the_inventory_are_named_with_the_command_to_add_them(
    cli: typer.Typer, app_dir: Path, home: Path
) -> None:
    inventory(home, "la")
    result = run(cli, [])
    assert result.exit_code == 0
    assert (
        f"server 'nyc' of environment 'production' is not in {home / 'config.toml'}: "
        "add it with `tako servers add HOST --name nyc`"
    ) in result.stderr
    assert "'la'" not in result.stderr


def test_without_an_inventory_file_every_server_is_missing_and_none_is_created(
    cli: typer.Typer, app_dir: Path, home: Path
) -> None:
    result = run(cli, ["--env", "staging"])
    assert "server 'stage' of environment 'staging' is not in" in result.stderr
    assert not home.exists()


def test_servers_known_to_the_inventory_and_development_give_no_server_warning(
    cli: typer.Typer, app_dir: Path, home: Path
) -> None:
    inventory(home, "la", "nyc", "stage")
    for env in ("production", "staging", "development"):
        result = run(cli, ["--env", env])
        assert result.exit_code == 0
        assert "servers" not in result.stderr, result.stderr


def test_each_set_option_that_is_not_implemented_yet_is_a_warning(
    cli: typer.Typer, app_dir: Path
) -> None:
    result = run(cli, ["--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["release"] == "npm run migrate"
    for expected in (
        "tako.toml:4 release: 'release' is not implemented yet in this version and is ignored",
        "tako.toml:16 envs.production.storages: '[storages]' is not implemented yet",
        "tako.toml:17 envs.production.backup: 'backup' is not implemented yet",
    ):
        assert expected in result.stderr, result.stderr
    (app_dir / "tako.toml").write_text('[envs.production]\nroute = "a.com"\n')
    assert "not implemented" not in run(cli, []).stderr
