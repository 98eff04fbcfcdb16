"""Cross-key rules of tako.toml: each broken rule is one issue naming line, key and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.config import load_config
from tako_common.errors import ConfigError

PROD = '[envs.production]\nroute = "app.example.com"\n'
S3 = 'provider = "s3"\nbucket = "b"\nendpoint = "https://s3.example.com"\nregion = "auto"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tako.toml"
    path.write_text(text, encoding="utf-8")
    return path


def issues_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.issues


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[envs.production]\nroute = "a.com"\nroutes = ["b.com"]\n',
         "tako.toml:1 envs.production: set either 'route' or 'routes', not both"),
        ("[envs.production]\nservers = ['a']\n",
         "tako.toml:1 envs.production: needs a route: set 'route' or 'routes'"),
        ("[envs.staging]\nroutes = []\n",
         "tako.toml:2 envs.staging.routes: needs at least one route (the list is empty)"),
        ('[envs.production]\nroutes = ["a.com", "A.com."]\n',
         "tako.toml:2 envs.production.routes[1]: route 'A.com.' repeats routes[0]"),
        ('[envs.production]\nroute = "a.com"\nservers = ["x", "x"]\n',
         "tako.toml:3 envs.production.servers[1]: server 'x' is listed twice"),
        ('[envs.Prod]\nroute = "a.com"\n',
         "tako.toml:1 envs.Prod: invalid environment name 'Prod'"),
        ('container = "Dockerfile"\nmain = "index.js"\n' + PROD,
         "tako.toml:2 main: 'main' is invalid with 'container'"),
        ('container = "Dockerfile"\nstart = ["./app"]\n' + PROD,
         "tako.toml:2 start: 'start' is invalid with 'container'"),
        ('container = "Dockerfile"\nassets = ["static"]\n' + PROD,
         "tako.toml:2 assets: 'assets' is invalid with 'container'"),
        ('container = "Dockerfile"\n' + PROD + '[build]\nrun = "make"\n',
         "tako.toml:4 build: 'build' is invalid with 'container'"),
        ('container = "Dockerfile"\n' + PROD + '[[build_stages]]\nrun = "make"\n',
         "tako.toml:4 build_stages: 'build_stages' is invalid with 'container'"),
        ('container = "Dockerfile"\n' + PROD + '[workflows.jobs]\nrun = ["./work"]\n',
         "tako.toml:4 workflows: workflow groups run natively on the server, so they are "
         "invalid with 'container'"),
        (PROD + '[build]\nrun = "make"\n[[build_stages]]\nrun = "make"\n',
         "tako.toml:3 build: use either [build] or [[build_stages]], not both"),
        (PROD + '[build]\ncwd = "/abs"\n',
         "tako.toml:4 build.cwd: must be relative to the app directory (got '/abs')"),
        (PROD + '[build]\ncwd = ".."\n', "tako.toml:4 build.cwd: must stay inside the project"),
        (PROD + '[build]\ncwd = "web/../../x"\n',
         "tako.toml:4 build.cwd: must stay inside the project"),
        (PROD + '[[build_stages]]\ncwd = "/abs"\nrun = "x"\n',
         "tako.toml:4 build_stages[0].cwd: must be relative to the app directory"),
        (PROD + '[[build_stages]]\nname = "a"\nrun = "x"\n[[build_stages]]\nname = "a"\n'
         'run = "y"\n',
         "tako.toml:7 build_stages[1].name: stage name 'a' repeats build_stages[0]"),
        (PROD + "[storages.local]\n" + S3,
         "tako.toml:3 storages.local: 'local' is a built-in storage; do not declare "
         "[storages.local]"),
        (PROD + 'storages = { up = "nope" }\n',
         "tako.toml:3 envs.production.storages.up: storage 'nope' is not declared"),
        ('[envs.production]\nroute = "a.com"\nservers = ["a", "b"]\n'
         'storages = { up = "local" }\n',
         "tako.toml:4 envs.production.storages.up: local storage deploys only to "
         "single-server environments (2 servers: a, b)"),
        (PROD + 'backup = { storage = "local" }\n',
         "tako.toml:3 envs.production.backup.storage: backups need private S3 storage; "
         "'local' is not allowed"),
        (PROD + 'backup = { storage = "nope" }\n',
         "tako.toml:3 envs.production.backup.storage: storage 'nope' is not declared"),
        (PROD + 'backup = { storage = "pub" }\n[storages.pub]\n' + S3
         + 'public_base_url = "https://cdn.example.com"\n',
         "tako.toml:3 envs.production.backup.storage: backup storage 'pub' must be private"),
    ],
)
def test_rule_violations_name_line_key_and_rule(tmp_path: Path, text: str, expected: str) -> None:
    issues = issues_of(tmp_path, text)
    assert any(issue.startswith(expected) for issue in issues), issues


@pytest.mark.parametrize(
    "text",
    [
        "[envs.development]\n",
        '[envs.development]\nstorages = { up = "undeclared" }\n',
        PROD + '[build]\ncwd = "web/../api"\n',
        PROD + '[[build_stages]]\ncwd = "../shared"\nrun = "make"\n',
        '[envs.production]\nroute = "a.com"\nservers = ["a"]\nstorages = { up = "local" }\n',
        PROD + 'storages = { up = "s" }\nbackup = { storage = "s" }\n[storages.s]\n' + S3,
        'container = "Dockerfile"\n' + PROD,
        "[envs.development]\n[envs.preview]\nroute = '*.preview.example.com'\n",
    ],
)
def test_rule_abiding_configs_load(tmp_path: Path, text: str) -> None:
    load_config(write(tmp_path, text))


def test_every_rule_violation_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        '[envs.production]\nroute = "a.com"\nroutes = ["b.com"]\n'
        "[envs.staging]\nroutes = []\n"
        '[envs.qa]\nroute = "qa.com"\nstorages = { up = "nope" }\n'
        "[storages.local]\n" + S3
    )
    issues = issues_of(tmp_path, text)
    assert [issue.split(":")[1].split(" ")[0] for issue in issues] == ["1", "5", "8", "9"]


def test_development_servers_are_ignored_with_a_warning(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, '[envs.development]\nservers = ["a"]\n'))
    assert loaded.warnings == [
        "tako.toml:1 envs.development: servers are ignored for 'development': "
        "it is reserved for tako dev"
    ]


def test_vars_for_an_undeclared_environment_warn(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, PROD + "[vars.stagin]\nA = 1\n"))
    assert loaded.warnings == [
        "tako.toml:3 vars.stagin: [vars.stagin] is for an environment that is not declared "
        "in [envs]"
    ]


def test_env_var_named_env_is_dropped_with_a_warning(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, PROD + '[vars]\nENV = "prod"\nOTHER = "x"\n'))
    assert loaded.config.vars.common == {"OTHER": "x"}
    assert loaded.warnings == [
        "tako.toml:4 vars.ENV: ENV is reserved and ignored; Tako sets TAKO_ENV to the "
        "environment name"
    ]
