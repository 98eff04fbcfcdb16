"""Loading: config path resolution, purity (never writes), legacy aliases in messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tako_common.config import load_config, load_config_text, resolve_config_path
from tako_common.errors import ConfigError

VALID = '[envs.production]\nroute = "a.com"\n'


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
    }


def test_default_config_is_tako_toml_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "tako.toml").write_text(VALID)
    assert resolve_config_path(None, tmp_path) == tmp_path / "tako.toml"


def test_missing_default_config_says_run_tako_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config_path(None, tmp_path)
    assert info.value.issues == [f"no tako.toml in {tmp_path}"]
    assert info.value.hint == "run tako init"


@pytest.mark.parametrize("given", ["deploy/staging.toml", "{abs}/deploy/staging.toml"])
def test_c_selects_a_file_whose_parent_is_the_app_directory(tmp_path: Path, given: str) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "staging.toml").write_text(VALID)
    path = resolve_config_path(given.format(abs=tmp_path), tmp_path)
    assert path == tmp_path / "deploy" / "staging.toml"
    assert load_config(path).app_dir == tmp_path / "deploy"


def test_c_with_a_directory_uses_its_tako_toml(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "tako.toml").write_text(VALID)
    assert resolve_config_path("app", tmp_path) == tmp_path / "app" / "tako.toml"


def test_c_with_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file .*nope.toml does not exist"):
        resolve_config_path("nope.toml", tmp_path)


def test_relative_path_is_made_absolute_so_app_dir_has_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "shop"
    app.mkdir()
    (app / "tako.toml").write_text(VALID)
    monkeypatch.chdir(app)
    loaded = load_config(Path("tako.toml"))
    assert loaded.path == app / "tako.toml"
    assert loaded.app_name == "shop"


@pytest.mark.parametrize(
    "text",
    [VALID, VALID + "[build]\nassets = ['x']\n", 'name = "Bad"\n', "not toml ["],
)
def test_loading_never_writes_anything(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tako.toml"
    path.write_text(text)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(tmp_path)
    try:
        load_config(path)
    except ConfigError:
        pass
    assert snapshot(tmp_path) == before


def test_load_config_text_validates_without_a_file(tmp_path: Path) -> None:
    loaded = load_config_text(VALID, tmp_path / "missing" / "tako.toml")
    assert loaded.config.envs["production"].route == "a.com"
    assert not (tmp_path / "missing").exists()


def test_errors_use_the_config_file_name(tmp_path: Path) -> None:
    path = tmp_path / "staging.toml"
    path.write_text('[envs.production]\nroute = "a.com"\nroutes = ["b.com"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.issues == [
        "staging.toml:1 envs.production: set either 'route' or 'routes', not both"
    ]


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_problems_are_listed_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "tako.toml"
    path.write_text(
        "[workflows]\nconcurrency = 0\n[storages.s]\nprovider = 's3'\nbucket = 'b'\n"
        "endpoint = 'http://e'\nregion = 'r'\n[envs.b]\nroute = '/x'\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = [int(issue.split(" ")[0].split(":")[1]) for issue in info.value.issues]
    assert lines == [2, 6, 9]
