"""`tako exec`: argument rules (pure plan), the exit code over servers, and bad input
refused before any connection is made."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tako_client.commands import exec as exec_cmd
from tako_client.commands.exec import ExecPlan, exit_code_of, plan_exec
from tako_common.errors import TakoError, ValidationError

SERVERS = ["nyc", "la"]


@pytest.mark.parametrize(
    ("server", "every", "interactive", "expected"),
    [
        (None, False, False, ExecPlan(["env"], ["nyc"], False)),  # the leader by default
        ("la", False, True, ExecPlan(["env"], ["la"], True)),
        (None, True, False, ExecPlan(["env"], ["nyc", "la"], False, prefixed=True)),
    ],
)
def test_the_plan_picks_the_leader_one_server_or_all(
    server: str | None, every: bool, interactive: bool, expected: ExecPlan
) -> None:
    assert plan_exec(["env"], SERVERS, server, every, interactive) == expected


@pytest.mark.parametrize(
    ("argv", "server", "every", "interactive", "message"),
    [
        ([], None, False, False, "tako exec needs a command"),
        ([""], None, False, False, "tako exec needs a command"),
        (["env"], "la", True, False, "--server and --all exclude each other"),
        (["sh"], None, True, True, "--interactive attaches one terminal to one server"),
        (["env"], "tokyo", False, False, "server 'tokyo' is not a server of this environment"),
    ],
)
def test_bad_arguments_are_refused_naming_the_rule(
    argv: list[str], server: str | None, every: bool, interactive: bool, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        plan_exec(argv, SERVERS, server, every, interactive)


def test_an_unknown_server_error_lists_the_environments_servers() -> None:
    with pytest.raises(ValidationError) as info:
        plan_exec(["env"], SERVERS, "tokyo", False, False)
    assert info.value.message.endswith("its servers: nyc, la")


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([0], 0),
        ([7], 7),
        ([0, 0], 0),
        ([0, 3, 5], 3),  # the first failure, in server order
        ([0, None], 1),  # a server that could not run it
        ([130, None], 130),
    ],
)
def test_the_exit_code_is_the_commands(codes: list[int | None], expected: int) -> None:
    assert exit_code_of(codes) == expected


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    home = tmp_path / "tako-home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[[servers]]\nname = "nyc"\nhost = "10.0.0.1"\n'
        '[[servers]]\nname = "la"\nhost = "10.0.0.2"\n'
    )
    monkeypatch.setenv("TAKO_HOME", str(home))
    app_dir = tmp_path / "shop"
    app_dir.mkdir()
    (app_dir / "tako.toml").write_text(
        '[envs.production]\nroute = "shop.example.com"\nservers = ["nyc", "la"]\n'
    )
    monkeypatch.chdir(app_dir)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    exec_cmd.register(app)
    return app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exec"], "tako exec needs a command"),
        (["exec", "--"], "tako exec needs a command"),
        (["exec", "--server", "tokyo", "--", "env"], "server 'tokyo' is not a server"),
        (["exec", "--all", "--server", "la", "--", "env"], "exclude each other"),
        (["exec", "--env", "staging", "--", "env"], "environment 'staging' is not declared"),
    ],
)
def test_the_command_refuses_bad_input_before_connecting(
    cli: typer.Typer, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, TakoError), result.output
    assert message in result.exception.message
