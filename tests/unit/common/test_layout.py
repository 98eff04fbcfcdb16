"""Remote path layout: names become path components only after validation."""

from pathlib import Path

import pytest

from tako_common.errors import ValidationError
from tako_common.layout import ServerLayout


def test_paths_follow_the_documented_layout(tmp_path: Path) -> None:
    layout = ServerLayout(tmp_path)
    assert layout.release_dir("demo", "production", "abc1234") == (
        tmp_path / "apps/demo/production/releases/abc1234"
    )
    assert layout.current_link("demo", "staging") == tmp_path / "apps/demo/staging/current"
    assert layout.deploy_lock("demo", "production").name == ".deploy_lock"
    assert layout.logs_dir("demo", "production") == tmp_path / "apps/demo/production/shared/logs"
    assert layout.artifact("ab" * 32) == tmp_path / "incoming" / f"{'ab' * 32}.tar.zst"
    assert layout.state_db.name == "runtime-state.sqlite3"


@pytest.mark.parametrize(
    ("app", "env", "version"), [("../x", "p", "v"), ("a", "..", "v"), ("a", "p", "..")]
)
def test_unsafe_components_are_refused(tmp_path: Path, app: str, env: str, version: str) -> None:
    with pytest.raises(ValidationError):
        ServerLayout(tmp_path).release_dir(app, env, version)


def test_contains_follows_links(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "link").symlink_to(tmp_path)
    layout = ServerLayout(data)
    assert layout.contains(data / "incoming" / "x")
    assert not layout.contains(data / "link" / "elsewhere")
    assert not layout.contains(tmp_path)
