"""`--help` works for every command and subcommand of the real `tako` app (walks the click
tree, so a new command is covered without touching this file): help texts are rendered
with Rich markup, where e.g. ``[/path]`` is a closing tag and crashes the renderer."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tako_client.cli import app


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """``prefix`` and the path of every command below it, hidden aliases included (a group
    is anything with ``commands``: typer ships its own copy of click's classes)."""
    paths = [prefix]
    children: dict[str, Any] = getattr(command, "commands", {})
    for name in sorted(children):
        paths += command_paths(children[name], (*prefix, name))
    return paths


PATHS = command_paths(typer.main.get_command(app))


def test_the_walk_finds_nested_commands() -> None:
    for expected in [("init",), ("config",), ("deploy",), ("secrets", "set"),
                     ("secrets", "key", "export"), ("servers", "add")]:
        assert expected in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "tako")
def test_help_exits_0_for_every_command(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exception is None, repr(result.exception)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
