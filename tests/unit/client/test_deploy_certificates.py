"""`tako deploy` refuses certificates it cannot get before building or connecting."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tako_client.commands import deploy as deploy_cmd
from tako_common.errors import TakoError


def cli_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_table: str) -> typer.Typer:
    home = tmp_path / "tako-home"
    home.mkdir()
    (home / "config.toml").write_text('[[servers]]\nname = "nyc"\nhost = "10.0.0.1"\n')
    monkeypatch.setenv("TAKO_HOME", str(home))
    app_dir = tmp_path / "shop"
    app_dir.mkdir()
    (app_dir / "tako.toml").write_text(
        f'name = "shop"\nruntime = "python"\nmain = "app.py"\n'
        f'[envs.production]\nservers = ["nyc"]\n{env_table}\n'
    )
    monkeypatch.chdir(app_dir)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    deploy_cmd.register(app)
    return app


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('route = "*.shop.example.com"', "wildcard route *.shop.example.com"),
        ('route = "shop.example.com"\nssl = "cloudflare"', 'uses ssl = "cloudflare"'),
    ],
)
def test_refused_before_building_without_the_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, message: str
) -> None:
    app = cli_in(tmp_path, monkeypatch, table)
    result = CliRunner().invoke(app, ["deploy", "--yes"])
    assert isinstance(result.exception, TakoError), result.output
    assert message in str(result.exception)
    assert "tako credentials set ssl.cloudflare --env production" in (result.exception.hint or "")
    assert not (tmp_path / "shop" / ".tako" / "build").exists(), "nothing was built"
