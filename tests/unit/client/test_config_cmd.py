"""`tako config`: resolved view of one environment; errors and warnings on stderr; --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from tako_client.commands import config as config_cmd
from tako_common.config import NOT_IMPLEMENTED

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
    assert data["release_server"] == "la"  # the leader: the first of the env's servers
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
    assert data["release"] is None and data["release_server"] is None  # "" cleared it
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
    cli: typer.Typer, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(cli, ["--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["release"] == "npm run migrate"
    assert "'release' is not implemented" not in result.stderr  # release commands run
    (app_dir / "tako.toml").write_text(CONFIG.replace('runtime = "node"', 'runtime = "node@22"'))
    assert "not implemented" not in run(cli, []).stderr  # pinned runtimes are provisioned
    # the mechanism, for an option a later reference adds before it is implemented
    monkeypatch.setitem(NOT_IMPLEMENTED, "runtime_version", 'runtime = "name@version"')
    warned = run(cli, [])
    assert "'runtime = \"name@version\"' is not implemented yet in this version" in warned.stderr
    monkeypatch.delitem(NOT_IMPLEMENTED, "runtime_version")
    (app_dir / "tako.toml").write_text(CONFIG)
    assert "'[storages]' is not implemented" not in result.stderr  # implemented: no warning
    assert "'backup' is not implemented" not in result.stderr
    (app_dir / "tako.toml").write_text('[envs.production]\nroute = "a.com"\n')
    assert "not implemented" not in run(cli, []).stderr


def write_app(app_dir: Path, top: str, files: dict[str, str] | None = None) -> None:
    (app_dir / "tako.toml").write_text(
        f'name = "shop"\n{top}\n[envs.production]\nroute = "shop.example.com"\n'
    )
    for name, text in (files or {}).items():
        (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (app_dir / name).write_text(text)


@pytest.mark.parametrize(
    ("top", "files", "expected"),
    [
        ('runtime = "node"\npreset = "vite"', {"pnpm-lock.yaml": ""},
         {"runtime": "node", "preset": "vite", "package_manager": "pnpm",
          "package_manager_source": "pnpm-lock.yaml", "main": "tako-static-server.mjs",
          "start": None, "dev": ["vite", "dev"], "app_root": "src"}),
        ('preset = "remix"', {"package.json": "{}"},
         {"runtime": "node", "preset": "remix", "package_manager": "npm",
          "package_manager_source": "node default", "main": "build/server/index.js",
          "start": ["remix-serve", "build/server/index.js"], "dev": ["remix", "vite:dev"],
          "app_root": "src"}),
        ('runtime = "bun"\npackage_manager = "yarn"\napp_root = "."', {},
         {"runtime": "bun", "preset": "bun", "package_manager": "yarn",
          "package_manager_source": "tako.toml", "main": "index.ts", "start": None,
          "dev": ["bun", "--watch", "index.ts"], "app_root": "."}),
        ('preset = "django"', {"requirements.txt": "django\ngunicorn\n", "site1/wsgi.py": ""},
         {"runtime": "python", "preset": "django", "package_manager": None,
          "package_manager_source": None, "main": "site1.wsgi:application",
          "start": ["/bin/sh", "-c", 'exec gunicorn --bind "$HOST:$PORT" --access-logfile - '
                    '"$1"', "gunicorn", "site1.wsgi:application"],
          "dev": ["python", "manage.py", "runserver"], "app_root": None}),
    ],
)
def test_build_facts_are_shown_as_deploy_resolves_them(
    cli: typer.Typer, app_dir: Path, top: str, files: dict[str, str], expected: dict[str, object]
) -> None:
    write_app(app_dir, top, files)
    data = report(cli, [])
    assert {key: data[key] for key in expected} == expected


def test_text_output_names_where_the_package_manager_came_from(
    cli: typer.Typer, app_dir: Path
) -> None:
    write_app(app_dir, 'runtime = "node"', {"yarn.lock": ""})
    result = run(cli, [])
    assert result.exit_code == 0, result.output
    assert "package_manager:  yarn (from yarn.lock)" in result.stdout
    assert "app_root:         src" in result.stdout


@pytest.mark.parametrize(
    ("top", "files", "message"),
    [
        ('runtime = "bun"\npreset = "tanstack"', {}, "unknown preset 'tanstack'"),
        ('runtime = "bun"\npreset = "js/tanstack-start"', {}, "namespaced aliases"),
        ('runtime = "bun"\npreset = "github:me/preset"', {}, "github: references"),
        ('runtime = "node"\npreset = "django"', {}, "preset 'django' is for runtime 'python'"),
        ('runtime = "python"\npackage_manager = "pnpm"', {}, "applies to JS runtimes"),
        ('runtime = "python"\nmain = "main:app"', {"requirements.txt": "fastapi\n"},
         "list uvicorn \\(ASGI\\) or gunicorn \\(WSGI\\)"),
    ],
)
def test_what_deploy_refuses_is_an_error_here_with_the_same_message(
    cli: typer.Typer, app_dir: Path, top: str, files: dict[str, str], message: str
) -> None:
    import re

    from tako_client.appctx import plan_of
    from tako_client.build.plan import BuildError
    from tako_client.build.resolve import resolve_app
    from tako_common.config import load_config

    write_app(app_dir, top, files)
    result = run(cli, [])
    assert result.exit_code == 1 and re.search(message, result.stderr), result.output
    with pytest.raises(BuildError) as info:  # what deploy's build raises
        resolve_app(plan_of(load_config(app_dir / "tako.toml").config, app_dir), app_dir)
    assert info.value.message in result.stderr


def test_the_unknown_preset_error_lists_the_known_ones(cli: typer.Typer, app_dir: Path) -> None:
    write_app(app_dir, 'runtime = "node"\npreset = "sveltekit"')
    result = run(cli, [])
    assert result.exit_code == 1
    for name in ("vite", "nextjs", "tanstack-start", "astro", "remix", "react-router",
                 "django", "fastapi", "flask"):
        assert name in result.stderr
