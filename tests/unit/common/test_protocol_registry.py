"""The command registry and the strict request parser of the management protocol."""

from __future__ import annotations

import json
import typing

import pytest

from tako_common.errors import ProtocolError
from tako_common.protocol import (
    COMMANDS,
    MAX_DEPTH,
    MUTATING_COMMANDS,
    REQUEST_MODELS,
    SLOW_COMMANDS,
    AppRef,
    Request,
    loads_strict,
    parse_request,
)

SHA = "ab" * 32
APP = {"app": "web", "env": "production"}

#: One valid request line per command (the dispatch tests reuse it).
SAMPLES: dict[str, dict[str, object]] = {
    "hello": {"protocol_version": 1},
    "server_info": {},
    "deploy": {
        **APP,
        "version": "v1",
        "artifact": f"{SHA}.tar.zst",
        "sha256": SHA,
        "routes": ["web.localhost"],
        "manifest": {"runtime": "python", "main": "app.py"},
    },
    "status": {},
    "list": {},
    "routes": {},
    "list_releases": {**APP},
    "rollback": {**APP, "version": "v0"},
    "stop": {**APP},
    "delete": {**APP},
    "scale": {**APP, "instances": 2},
    "update_secrets": {**APP, "secrets": {"TOKEN": "x"}},
    "logs": {**APP, "lines": 10},
    "enter_upgrading": {"owner": "up-1"},
    "exit_upgrading": {"owner": "up-1"},
    "lock": {**APP, "owner": "alice@laptop:1"},
    "unlock": {**APP, "owner": "alice@laptop:1"},
    "has_artifact": {"sha256": SHA},
    "maintenance": {**APP, "enabled": True, "message": "back at 5"},
    "backup_now": {**APP},
    "backup_list": {**APP},
    "backup_status": {**APP},
    "backup_fetch": {**APP, "backup_id": "20260102T030405Z-a1b2c3"},
    "backup_fetch_done": {**APP, "backup_id": "20260102T030405Z-a1b2c3"},
    "backup_restore": {**APP, "backup_id": "20260102T030405Z-a1b2c3"},
    "prepare": {
        **APP,
        "version": "v1",
        "artifact": f"{SHA}.tar.zst",
        "sha256": SHA,
        "routes": ["web.localhost"],
        "manifest": {"runtime": "python", "main": "app.py"},
    },
    "run_release": {**APP, "version": "v1", "run": "python migrate.py"},
    "discard": {**APP, "version": "v1"},
    "exec": {**APP, "argv": ["env"]},
    "workflows": {**APP},
    "workflow_runs": {**APP, "group": "email", "failed": True, "limit": 10},
    "workflow_retry": {**APP, "run_id": 3},
    "workflow_enqueue": {**APP, "group": "email", "payload": {"to": "a@b.c"}},
}

#: (command, mutates, slow): the documented table (docs/protocol.md).
TRAITS = [
    ("hello", False, False),
    ("server_info", False, False),
    ("deploy", True, True),
    ("status", False, False),
    ("list", False, False),
    ("routes", False, False),
    ("list_releases", False, False),
    ("rollback", True, True),
    ("stop", True, True),
    ("delete", True, True),
    ("scale", True, True),
    ("update_secrets", True, True),
    ("logs", False, False),
    ("enter_upgrading", False, False),
    ("exit_upgrading", False, False),
    ("lock", True, False),
    ("unlock", False, False),
    ("has_artifact", False, False),
    ("maintenance", True, False),
    ("backup_now", True, True),
    ("backup_list", False, False),
    ("backup_status", False, False),
    ("backup_fetch", False, True),
    ("backup_fetch_done", False, False),
    ("backup_restore", True, True),
    ("prepare", True, True),
    ("run_release", True, True),
    ("discard", True, False),
    ("exec", False, False),
    ("workflows", False, False),
    ("workflow_runs", False, False),
    ("workflow_retry", True, False),
    ("workflow_enqueue", True, False),
]


def sample_line(command: str, **changes: object) -> str:
    return json.dumps({"command": command, **SAMPLES[command], **changes})


def test_the_registry_is_the_request_union() -> None:
    members = typing.get_args(typing.get_args(Request)[0])
    assert list(REQUEST_MODELS.values()) == list(members)
    assert COMMANDS == tuple(REQUEST_MODELS)
    assert sorted(SAMPLES) == sorted(COMMANDS) == sorted(c for c, _, _ in TRAITS)


@pytest.mark.parametrize(("command", "mutates", "slow"), TRAITS)
def test_every_request_model_declares_mutates_and_slow_in_its_own_body(
    command: str, mutates: bool, slow: bool
) -> None:
    model = REQUEST_MODELS[command]
    assert "mutates" in vars(model) and "slow" in vars(model)
    assert (model.mutates, model.slow) == (mutates, slow)
    assert (command in MUTATING_COMMANDS, command in SLOW_COMMANDS) == (mutates, slow)


@pytest.mark.parametrize("command", COMMANDS)
def test_exclusive_requests_are_mutating_app_requests(command: str) -> None:
    model = REQUEST_MODELS[command]
    if model.exclusive:
        assert model.mutates and issubclass(model, AppRef)


def test_traits_are_class_attributes_not_wire_fields() -> None:
    for model in REQUEST_MODELS.values():
        assert not {"mutates", "slow", "exclusive"} & set(model.model_fields)
    with pytest.raises(ProtocolError, match="mutates"):
        parse_request(sample_line("status", mutates=False))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_sample_parses_to_its_model(command: str) -> None:
    assert isinstance(parse_request(sample_line(command)), REQUEST_MODELS[command])


# --------------------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    ("command", "field", "value"),
    [
        ("scale", "instances", True),
        ("scale", "instances", False),
        ("scale", "instances", "2"),
        ("scale", "instances", 2.0),
        ("deploy", "instances", True),
        ("deploy", "idle_timeout", True),
        ("logs", "lines", True),
        ("logs", "follow", 1),
        ("logs", "follow", "true"),
        ("hello", "protocol_version", True),
    ],
)
def test_numbers_and_booleans_are_strict(command: str, field: str, value: object) -> None:
    with pytest.raises(ProtocolError, match=f"invalid {command} request: {field}") as info:
        parse_request(sample_line(command, **{field: value}))
    assert info.value.code == "invalid_request"


def test_a_manifest_flag_is_strict_too() -> None:
    manifest = {"runtime": "python", "main": "app.py", "git_dirty": 1}
    with pytest.raises(ProtocolError, match="manifest.git_dirty"):
        parse_request(sample_line("deploy", manifest=manifest))


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('{"command":"status","command":"delete","app":"web","env":"production"}', "command"),
        (
            '{"command":"scale","app":"web","env":"production","instances":1,"instances":9}',
            "instances",
        ),
        (
            '{"command":"update_secrets","app":"web","env":"production",'
            '"secrets":{"A":"1","A":"2"}}',
            "A",
        ),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(line: str, key: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert info.value.code == "bad_request"
    assert info.value.message == f"duplicate key {key!r} in request: every key may appear once"


@pytest.mark.parametrize("line", [b"", b" ", b"\r", b"\t  ", ""])
def test_an_empty_line_is_an_error_not_silence(line: bytes | str) -> None:
    with pytest.raises(ProtocolError, match="empty line") as info:
        parse_request(line)
    assert info.value.code == "bad_request"


def _nested(levels: int) -> str:
    """A JSON value ``levels`` deep: an object holding lists."""
    return '{"a":' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert loads_strict(_nested(MAX_DEPTH))["a"] is not None
    deep_object = '{"a":' * (MAX_DEPTH - 1) + "{}" + "}" * (MAX_DEPTH - 1)
    assert isinstance(loads_strict(deep_object), dict)


@pytest.mark.parametrize(
    "line",
    [
        _nested(MAX_DEPTH + 1),
        '{"command":"status","app":' + "[" * 200 + "]" * 200 + "}",
        "[" * 100_000,  # past the interpreter's recursion limit: still an answer
        '{"a":' * 5_000 + "1" + "}" * 5_000,
    ],
)
def test_nesting_deeper_than_the_limit_is_refused(line: str) -> None:
    with pytest.raises(ProtocolError, match=f"deeper than {MAX_DEPTH} levels") as info:
        parse_request(line)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(constant: str) -> None:
    with pytest.raises(ProtocolError, match=f"{constant} is not a JSON number") as info:
        parse_request('{"command":"logs","app":"web","env":"production","lines":' + constant + "}")
    assert info.value.code == "bad_json"
