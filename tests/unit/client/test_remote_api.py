"""RemoteServer is the CLI's only server API: typed methods, used, timeouts from the registry."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tako_client import remote
from tako_client.remote import DEPLOY_TIMEOUT, REQUEST_TIMEOUT, RemoteServer, default_timeout
from tako_common.protocol import COMMANDS, REQUEST_MODELS

CLIENT = Path(remote.__file__).resolve().parent
TRANSPORT = {"request", "call", "stream", "close"}


def called_attributes(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }


def client_sources() -> list[Path]:
    return [p for p in CLIENT.rglob("*.py") if p.name != "remote.py"]


def typed_methods() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(RemoteServer)
        if not name.startswith("_") and callable(member) and name not in TRANSPORT
    }


@pytest.mark.parametrize("command", COMMANDS)
def test_the_timeout_of_every_command_comes_from_its_model(command: str) -> None:
    expected = DEPLOY_TIMEOUT if REQUEST_MODELS[command].slow else REQUEST_TIMEOUT
    assert default_timeout({"command": command}) == expected


def test_every_typed_method_is_used_by_the_cli() -> None:
    used: set[str] = set()
    for path in client_sources():
        used |= called_attributes(path)
    assert typed_methods() - used == set()


def test_no_cli_module_sends_raw_requests() -> None:
    for path in client_sources():
        raw = called_attributes(path) & {"request", "call", "stream"}
        assert not raw, f"{path.relative_to(CLIENT)} calls {sorted(raw)}: use RemoteServer methods"


def test_every_typed_method_names_a_protocol_command() -> None:
    aliases = {"follow_logs": "logs"}
    for name in typed_methods():
        assert aliases.get(name, name) in COMMANDS, name
