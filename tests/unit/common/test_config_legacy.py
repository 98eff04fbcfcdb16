"""Legacy tako.toml forms still load, each with a warning that shows the current form."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.config import (
    env_servers,
    idle_timeout_for,
    instances_for,
    load_config,
)
from tako_common.errors import ConfigError

PROD = '[envs.production]\nroute = "app.example.com"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tako.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_build_assets_moves_to_top_level_assets_with_a_warning(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, PROD + '[build]\nassets = ["static", "img"]\n'))
    assert loaded.config.assets == ["static", "img"]
    assert loaded.config.build is None
    assert loaded.warnings == [
        "tako.toml:4 build.assets: [build].assets is deprecated; move it to the top level "
        '(before any table):\n    assets = ["static", "img"]'
    ]


def test_build_stages_with_working_dir_become_build_stages_with_cwd(tmp_path: Path) -> None:
    text = PROD + (
        '[[build.stages]]\nname = "ui"\nworking_dir = "../ui"\nrun = "make"\n'
        '[[build.stages]]\nrun = "make web"\n'
    )
    loaded = load_config(write(tmp_path, text))
    stages = loaded.config.build_stages
    assert stages is not None
    assert [(s.name, s.cwd, s.run) for s in stages] == [
        ("ui", "../ui", "make"), (None, None, "make web"),
    ]
    assert loaded.warnings == [
        "tako.toml:3 build.stages: [[build.stages]] is deprecated; write [[build_stages]] "
        "with 'cwd' instead of 'working_dir':\n"
        '    [[build_stages]]\n    name = "ui"\n    cwd = "../ui"\n    run = "make"\n\n'
        '    [[build_stages]]\n    run = "make web"'
    ]


def test_server_env_mapping_becomes_environment_servers(tmp_path: Path) -> None:
    text = PROD + '[servers.la]\nenv = "production"\n[servers.nyc]\nenv = "production"\n'
    loaded = load_config(write(tmp_path, text))
    assert env_servers(loaded, "production") == ["la", "nyc"]
    assert loaded.warnings == [
        "tako.toml:4 servers.la.env: [servers.<name>] env = ... is deprecated; list the "
        'servers in the environment:\n    [envs.production]\n    servers = ["la", "nyc"]'
    ]


def test_legacy_servers_join_the_declared_servers_without_duplicates(tmp_path: Path) -> None:
    text = (
        '[envs.production]\nroute = "a.com"\nservers = ["la", "sf"]\n'
        '[servers.la]\nenv = "production"\n[servers.nyc]\nenv = "production"\n'
    )
    assert env_servers(load_config(write(tmp_path, text)), "production") == ["la", "sf", "nyc"]


def test_server_scaling_hints_are_kept_per_server(tmp_path: Path) -> None:
    text = PROD + (
        "[servers]\ninstances = 3\nidle_timeout = 120\n"
        '[servers.la]\nenv = "production"\ninstances = 0\nidle_timeout = 60\n'
        '[servers.nyc]\nenv = "production"\n'
    )
    loaded = load_config(write(tmp_path, text))
    assert instances_for(loaded, "production", "la") == 0
    assert instances_for(loaded, "production", "nyc") == 3
    assert idle_timeout_for(loaded, "production", "la") == 60
    assert idle_timeout_for(loaded, "production", "nyc") == 120
    assert any("tako scale 0 --env production" in w for w in loaded.warnings)
    assert any("servers.la.idle_timeout" in w and "idle_timeout = 60" in w
               for w in loaded.warnings)


def test_without_hints_instances_default_to_one_and_idle_timeout_to_the_env(
    tmp_path: Path,
) -> None:
    loaded = load_config(write(tmp_path, PROD + "idle_timeout = 45\n"))
    assert instances_for(loaded, "production", "any") == 1
    assert idle_timeout_for(loaded, "production", "any") == 45


def test_legacy_server_table_keeps_its_current_workflows_keys(tmp_path: Path) -> None:
    text = PROD + '[servers.la]\nenv = "production"\n[servers.la.workflows]\nworkers = 2\n'
    loaded = load_config(write(tmp_path, text))
    workflows = loaded.config.servers["la"].workflows
    assert workflows is not None and workflows.workers == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('assets = ["a"]\n' + PROD + '[build]\nassets = ["b"]\n',
         "tako.toml:5 build.assets: set assets once: remove [build].assets, keep top-level "
         "assets"),
        (PROD + '[[build_stages]]\nrun = "a"\n[[build.stages]]\nrun = "b"\n',
         "tako.toml:5 build.stages: use either [[build.stages]] (legacy) or [[build_stages]], "
         "not both"),
        (PROD + '[[build.stages]]\nworking_dir = "a"\ncwd = "b"\nrun = "x"\n',
         "tako.toml:4 build.stages[0].working_dir: set either 'working_dir' (legacy) or 'cwd'"),
        (PROD + '[[build.stages]]\nworking_dir = "/abs"\nrun = "x"\n',
         "tako.toml:4 build.stages[0].working_dir: must be relative to the app directory"),
        (PROD + "[[build.stages]]\nworking_dir = 'x'\n",
         "tako.toml:3 build.stages[0].run: missing required key"),
        (PROD + '[servers.la]\nenv = "staging"\n',
         "tako.toml:4 servers.la.env: environment 'staging' is not declared"),
        (PROD + "[servers.la]\nenv = 1\n", "tako.toml:4 servers.la.env: must be a string"),
        (PROD + "[servers.la]\ninstances = -1\n",
         "tako.toml:4 servers.la.instances: must be an integer >= 0 (got -1)"),
        (PROD + '[servers]\nidle_timeout = "5m"\n',
         "tako.toml:4 servers.idle_timeout: must be an integer >= 0 (got '5m')"),
        (PROD + "[servers.la]\nport = 22\n", "tako.toml:4 servers.la.port: unknown key 'port'"),
    ],
)
def test_bad_legacy_forms_are_reported_where_they_are_written(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert any(issue.startswith(expected) for issue in info.value.issues), info.value.issues
