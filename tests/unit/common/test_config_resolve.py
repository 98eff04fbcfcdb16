"""Per-environment answers: env lookup, deploy gate, vars, routes, servers, build, workflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.config import (
    build_steps,
    certificate_check,
    deploy_check,
    env_routes,
    env_servers,
    load_config,
    merged_vars,
    release_command,
    resolve_env,
    resolve_stage_cwd,
    wildcard_routes,
    workflow_settings,
)
from tako_common.config.loader import LoadedConfig
from tako_common.errors import ConfigError, ValidationError

BASE = '''\
release = "migrate"
[vars]
A = "common"
B = "common"
[vars.staging]
B = "staging"
C = 3
[envs.production]
route = "app.example.com"
servers = ["la"]
[envs.staging]
routes = ["staging.example.com", "*.preview.example.com/api/*"]
release = ""
[envs.qa]
route = "qa.example.com"
release = "seed"
[envs.development]
servers = ["ignored"]
'''


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    path = tmp_path / "my_App.dir" / "tako.toml"
    path.parent.mkdir()
    path.write_text(BASE, encoding="utf-8")
    return load_config(path)


def test_undeclared_environment_is_a_clear_error(loaded: LoadedConfig) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_env(loaded, "prod")
    assert info.value.issues == [
        "environment 'prod' is not declared in tako.toml; declared: development, production, "
        "qa, staging"
    ]


def test_development_resolves_even_when_not_declared(tmp_path: Path) -> None:
    path = tmp_path / "tako.toml"
    path.write_text('[envs.production]\nroute = "a.com"\n', encoding="utf-8")
    assert resolve_env(load_config(path), "development").route_list == []


@pytest.mark.parametrize(
    ("env", "error", "message"),
    [
        ("development", ValidationError, "environment 'development' is reserved for tako dev"),
        ("nope", ConfigError, "environment 'nope' is not declared"),
    ],
)
def test_deploy_check_refuses_development_and_undeclared_envs(
    loaded: LoadedConfig, env: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        deploy_check(loaded, env)


def test_deploy_check_passes_a_declared_env_with_routes(loaded: LoadedConfig) -> None:
    assert deploy_check(loaded, "production").route == "app.example.com"


@pytest.mark.parametrize(
    ("env", "runtime", "expected"),
    [
        ("production", {}, {"A": "common", "B": "common"}),
        ("staging", {}, {"A": "common", "B": "staging", "C": "3"}),
        ("staging", {"B": "runtime", "TAKO_ENV": "staging"},
         {"A": "common", "B": "runtime", "C": "3", "TAKO_ENV": "staging"}),
    ],
)
def test_vars_merge_common_then_env_then_runtime(
    loaded: LoadedConfig, env: str, runtime: dict[str, str], expected: dict[str, str]
) -> None:
    assert merged_vars(loaded, env, runtime) == expected


@pytest.mark.parametrize(
    ("env", "routes", "wildcards"),
    [
        ("production", ["app.example.com"], []),
        ("staging", ["staging.example.com", "*.preview.example.com/api/*"],
         ["*.preview.example.com/api/*"]),
        ("development", [], []),
    ],
)
def test_env_routes_and_wildcards(
    loaded: LoadedConfig, env: str, routes: list[str], wildcards: list[str]
) -> None:
    assert env_routes(loaded, env) == routes
    assert wildcard_routes(loaded, env) == wildcards


@pytest.mark.parametrize(
    ("env", "servers"), [("production", ["la"]), ("staging", []), ("development", [])]
)
def test_env_servers_ignore_development(
    loaded: LoadedConfig, env: str, servers: list[str]
) -> None:
    assert env_servers(loaded, env) == servers


@pytest.mark.parametrize(
    ("env", "command"), [("production", "migrate"), ("staging", None), ("qa", "seed")]
)
def test_env_release_overrides_and_empty_string_clears(
    loaded: LoadedConfig, env: str, command: str | None
) -> None:
    assert release_command(loaded, env) == command


def test_app_name_falls_back_to_the_sanitized_directory_name(loaded: LoadedConfig) -> None:
    assert loaded.app_name == "my-app-dir"
    assert loaded.app_dir.name == "my_App.dir"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", []),
        ('[build]\ninstall = "i"\nrun = "r"\ncwd = "web"\n', [("build", "web", "i", "r")]),
        ('[[build_stages]]\nname = "ui"\ncwd = "../ui"\nrun = "a"\n[[build_stages]]\nrun = "b"\n',
         [("ui", "../ui", None, "a"), (None, None, None, "b")]),
    ],
)
def test_build_steps_prefer_stages_then_build(
    tmp_path: Path, extra: str, expected: list[tuple[str | None, ...]]
) -> None:
    path = tmp_path / "tako.toml"
    path.write_text('[envs.production]\nroute = "a.com"\n' + extra, encoding="utf-8")
    steps = build_steps(load_config(path))
    assert [(s.name, s.cwd, s.install, s.run) for s in steps] == expected


@pytest.mark.parametrize(
    ("cwd", "expected"),
    [(None, "/repo/apps/web"), ("../ui", "/repo/apps/ui"), ("../..", "/repo"),
     ("./src/../lib", "/repo/apps/web/lib")],
)
def test_stage_cwd_may_use_dotdot_inside_the_workspace(cwd: str | None, expected: str) -> None:
    assert resolve_stage_cwd(cwd, Path("/repo/apps/web"), Path("/repo")) == Path(expected)


@pytest.mark.parametrize("cwd", ["../../..", "../../../elsewhere", "/etc"])
def test_stage_cwd_cannot_escape_the_workspace(cwd: str) -> None:
    with pytest.raises(ValidationError, match="escapes the source workspace /repo"):
        resolve_stage_cwd(cwd, Path("/repo/apps/web"), Path("/repo"))


@pytest.mark.parametrize(
    ("group", "server", "expected"),
    [
        (None, None, (None, 0, 10)),
        ("email", None, (["./worker", "email"], 1, 10)),
        ("email", "la", (["./worker", "email"], 4, 5)),
        ("other", "la", (None, 2, 5)),
        ("email", "nyc", (["./worker", "email"], 1, 10)),
    ],
)
def test_workflow_settings_layer_top_group_server_server_group(
    tmp_path: Path, group: str | None, server: str | None, expected: tuple[object, ...]
) -> None:
    path = tmp_path / "tako.toml"
    path.write_text(
        '[envs.production]\nroute = "a.com"\n'
        '[workflows.email]\nrun = ["./worker", "email"]\nworkers = 1\n'
        "[servers.la.workflows]\nworkers = 2\nconcurrency = 5\n"
        "[servers.la.workflows.email]\nworkers = 4\n",
        encoding="utf-8",
    )
    settings = workflow_settings(load_config(path), group, server)
    assert (settings.run, settings.workers, settings.concurrency) == expected


CERT_CASES = [
    # (name, env table, credentials, error fragment or None)
    ("exact host, HTTP-01", 'route = "a.example.com"', [], None),
    ("wildcard without credential", 'route = "*.example.com"', [],
     "wildcard route *.example.com of environment 'production' needs"),
    ("wildcard with credential", 'route = "*.example.com"', ["ssl.cloudflare"], None),
    ("origin CA without credential", 'route = "a.example.com"\nssl = "cloudflare"', [],
     'uses ssl = "cloudflare"'),
    ("origin CA with credential", 'route = "a.example.com"\nssl = "cloudflare"',
     ["ssl.cloudflare"], None),
    ("another credential is not it", 'route = "*.example.com"', ["postgres_url"], "needs"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("table", "credentials", "error"), [c[1:] for c in CERT_CASES], ids=[c[0] for c in CERT_CASES]
)
def test_certificate_check(
    tmp_path: Path, table: str, credentials: list[str], error: str | None
) -> None:
    path = tmp_path / "tako.toml"
    path.write_text(f'name = "shop"\n[envs.production]\n{table}\n')
    loaded = load_config(path)
    if error is None:
        certificate_check(loaded, "production", credentials)
        return
    with pytest.raises(ConfigError) as info:
        certificate_check(loaded, "production", credentials)
    assert error in str(info.value)
    assert "tako credentials set ssl.cloudflare --env production" in (info.value.hint or "")
@pytest.mark.parametrize(
    ("server", "expected"),
    [("la", ("*/5 * * * *", 7, 3)), ("nyc", ("*/5 * * * *", 2, 0))],
)
def test_workflow_schedule_and_retries_layer_like_the_rest(
    tmp_path: Path, server: str, expected: tuple[object, ...]
) -> None:
    path = tmp_path / "tako.toml"
    path.write_text(
        '[envs.production]\nroute = "a.com"\n'
        '[workflows]\nretries = 7\nworkers = 3\n'
        '[workflows.report]\nrun = ["./report"]\nschedule = "*/5 * * * *"\n'
        '[servers.nyc.workflows.report]\nretries = 2\nworkers = 0\n',
        encoding="utf-8",
    )
    settings = workflow_settings(load_config(path), "report", server)
    assert (settings.schedule, settings.retries, settings.workers) == expected


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ('[workflows.report]\nschedule = "*/0 * * * *"\n', "a step is a whole number"),
        ('[workflows.report]\nschedule = "* * *"\n', "a cron expression has 5 fields"),
        ("[workflows.report]\nretries = -1\n", "retries"),
        ("[workflows.Report]\nworkers = 1\n", "invalid workflow group name 'Report'"),
    ],
)
def test_bad_workflow_settings_are_refused_with_the_rule(
    tmp_path: Path, table: str, fragment: str
) -> None:
    path = tmp_path / "tako.toml"
    path.write_text('[envs.production]\nroute = "a.com"\n' + table, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert fragment in str(info.value.issues) or fragment in info.value.message
