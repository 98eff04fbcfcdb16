"""Session frames of ``exec`` and ``run_release``: strict client input, typed server events,
bytes as base64 both ways."""

from __future__ import annotations

import json

import pytest

from tako_common.errors import ProtocolError
from tako_common.protocol import (
    EofInput,
    ResizeInput,
    SessionExit,
    SessionOutput,
    StdinInput,
    decode_bytes,
    encode_bytes,
    ok,
    output_event,
    parse_event,
    parse_input,
    parse_request,
)


@pytest.mark.parametrize("data", [b"", b"hello\n", bytes(range(256)), b"\x1b[31mred\x1b[0m"])
def test_bytes_survive_the_round_trip(data: bytes) -> None:
    assert decode_bytes(encode_bytes(data)) == data
    assert parse_input(StdinInput.of(data).model_dump_json()) == StdinInput.of(data)
    event = parse_event(ok(output_event("stderr", data))["data"])
    assert isinstance(event, SessionOutput) and event.raw == data and event.stream == "stderr"


@pytest.mark.parametrize(
    ("line", "frame"),
    [
        ('{"kind":"eof"}', EofInput()),
        ('{"kind":"resize","cols":132,"rows":50}', ResizeInput(cols=132, rows=50)),
        ('{"kind":"stdin","data":"aGk="}', StdinInput(data="aGk=")),
    ],
)
def test_client_frames_parse_to_their_models(
    line: str, frame: StdinInput | EofInput | ResizeInput
) -> None:
    assert parse_input(line) == frame


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        ('{"kind":"shout"}', "invalid_request", "kinds: stdin, eof, resize"),
        ('{"kind":"stdin","data":"not base64!"}', "bad_request", "not valid base64"),
        ('{"kind":"resize","cols":0,"rows":24}', "invalid_request", "cols"),
        ('{"kind":"resize","cols":80,"rows":true}', "invalid_request", "rows"),
        ('{"kind":"resize","cols":80,"rows":24,"extra":1}', "invalid_request", "extra"),
        ('{"kind":"eof","kind":"eof"}', "bad_request", "duplicate key 'kind'"),
        ("[1]", "bad_request", "must be a JSON object"),
        ("", "bad_request", "empty line"),
    ],
)
def test_bad_client_frames_are_refused_naming_the_rule(line: str, code: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_input(line)
    assert info.value.code == code and words in info.value.message


def test_the_exit_event_is_the_last_and_typed() -> None:
    event = parse_event({"kind": "exit", "exit_code": 143, "signal": "SIGTERM", "timed_out": True})
    assert event == SessionExit(exit_code=143, signal="SIGTERM", timed_out=True)
    with pytest.raises(ProtocolError, match="unexpected session event"):
        parse_event({"kind": "confetti"})


def _request(**fields: object) -> str:
    return json.dumps({"command": "exec", "app": "web", "env": "production", **fields})


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"argv": []}, "argv: argv must name a program"),
        ({"argv": ["", "x"]}, "the first argument may not be empty"),
        ({"argv": ["sh", "a\x00b"]}, "NUL"),
        ({"argv": ["sh"], "term": "xterm; rm -rf /"}, "term must be a terminal type"),
        ({"argv": ["sh"], "tty": 1}, "tty"),
        ({"argv": ["sh"], "rows": 10_001}, "rows"),
    ],
)
def test_exec_requests_are_strict(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(_request(**fields))
    assert info.value.code == "invalid_request" and words in info.value.message


@pytest.mark.parametrize(
    ("run", "words"),
    [
        ("", "the command is empty"),
        ("  \n", "the command is empty"),
        ("a\x00", "NUL"),
        ("x" * 8193, "longer than 8192"),
    ],
)
def test_release_commands_are_checked(run: str, words: str) -> None:
    line = json.dumps(
        {"command": "run_release", "app": "web", "env": "production", "version": "v1", "run": run}
    )
    with pytest.raises(ProtocolError, match=words):
        parse_request(line)


def test_prepare_carries_every_deploy_field() -> None:
    line = json.dumps(
        {
            "command": "prepare",
            "app": "web",
            "env": "production",
            "version": "v1",
            "artifact": f"{'ab' * 32}.tar.zst",
            "sha256": "ab" * 32,
            "routes": ["web.localhost"],
            "manifest": {"runtime": "python", "main": "app.py"},
            "secrets": {"API_KEY": "x"},
            "owner": "alice@laptop:1",
        }
    )
    request = parse_request(line)
    assert request.command == "prepare" and request.secrets == {"API_KEY": "x"}
    assert request.lock_owner == "alice@laptop:1"
