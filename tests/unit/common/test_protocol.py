"""Management protocol: request validation, envelopes and JSON-lines framing."""

import json
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tako_common.errors import ProtocolError
from tako_common.protocol import (
    COMMANDS,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    DeployRequest,
    FrameDecoder,
    HelloData,
    Request,
    check_hello,
    encode_frame,
    error,
    ok,
    parse_request,
    parse_response,
)

SHA = "ab" * 32


def deploy_payload(**overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "command": "deploy",
        "app": "demo",
        "env": "production",
        "version": "abc1234",
        "artifact": f"{SHA}.tar.zst",
        "sha256": SHA,
        "routes": ["demo.localhost"],
        "manifest": {"runtime": "python", "main": "app.py"},
    }
    payload.update(overrides)
    return payload


def test_a_valid_deploy_request_parses_with_defaults() -> None:
    req = parse_request(json.dumps(deploy_payload()))
    assert isinstance(req, DeployRequest)
    assert req.key == "demo/production"
    assert req.instances is None and req.idle_timeout == 300 and req.secrets == {}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"app": "My_App"}, "invalid app name"),
        ({"env": "../prod"}, "invalid environment name"),
        ({"version": "../x"}, "invalid release version"),
        ({"artifact": "../../etc/passwd.tar.zst"}, "artifact must be a file name"),
        ({"artifact": "x.tar.gz"}, "artifact must be a file name"),
        ({"sha256": "XYZ"}, "sha256 must be 64 lowercase hex"),
        ({"routes": []}, "routes"),
        ({"instances": -1}, "instances"),
        ({"instances": 1000}, "instances"),
        ({"secrets": {"BAD-NAME": "x"}}, "invalid variable name"),
        ({"vars": {"GOOD": "a\x00b"}}, "NUL byte"),
        ({"manifest": {"runtime": "cobol", "main": "x"}}, "manifest.runtime"),
        (
            {"manifest": {"runtime": "python", "main": "app.py", "app_subdir": "../up"}},
            "app_subdir",
        ),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_deploy_requests_are_refused_naming_the_field(
    overrides: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ProtocolError, match="invalid deploy request") as info:
        parse_request(json.dumps(deploy_payload(**overrides)))
    assert fragment in str(info.value)
    assert info.value.code == "invalid_request"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_request"),
        ('{"command": "reboot"}', "unknown_command"),
        ("{}", "unknown_command"),
        (b"\xff\xfe", "bad_json"),
    ],
)
def test_malformed_lines_get_a_protocol_error(line: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert info.value.code == code


def test_the_command_list_is_exactly_the_request_union_tags() -> None:
    # A command that loses its model (or a model missing from the list) fails here.
    members = typing.get_args(typing.get_args(Request)[0])
    tags = [member.model_fields["command"].default for member in members]
    assert len(tags) == len(set(tags))
    assert sorted(tags) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_model(command: str) -> None:
    # A request with only the command either parses or fails on missing fields, never as unknown.
    try:
        parse_request(json.dumps({"command": command}))
    except ProtocolError as exc:
        assert exc.code == "invalid_request"


def test_hello_version_mismatch_names_both_versions_and_who_upgrades() -> None:
    check_hello(PROTOCOL_VERSION, PROTOCOL_VERSION)
    with pytest.raises(ProtocolError, match="client=2 server=1") as info:
        check_hello(2, 1)
    assert info.value.hint is not None and "tako-server" in info.value.hint


def test_envelopes_round_trip() -> None:
    data = HelloData(protocol_version=1, server_version="0.1.0", capabilities=["deploy"])
    resp = parse_response(encode_frame(ok(data)))
    assert resp.status == "ok" and resp.data["capabilities"] == ["deploy"]
    resp = parse_response(encode_frame(error("nope", code="x", hint="h")))
    assert (resp.status, resp.message, resp.code, resp.hint) == ("error", "nope", "x", "h")


def test_encode_refuses_oversized_frames() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode_frame({"blob": "x" * MAX_FRAME_BYTES})


def test_decoder_reports_an_oversized_line_and_keeps_going() -> None:
    decoder = FrameDecoder(max_bytes=64)
    items = list(decoder.feed(b'{"a":1}\n' + b"x" * 200 + b'\n{"b":2}\n'))
    assert items[0] == b'{"a":1}'
    assert isinstance(items[1], ProtocolError) and items[1].code == "frame_too_large"
    assert items[2] == b'{"b":2}'
    assert decoder.pending == 0


def test_decoder_reports_an_oversized_line_split_over_many_chunks_once() -> None:
    decoder = FrameDecoder(max_bytes=16)
    items = []
    for _ in range(10):
        items += list(decoder.feed(b"y" * 10))
    items += list(decoder.feed(b'\n{"c":3}\n'))
    assert [type(i) for i in items] == [ProtocolError, bytes]
    assert items[1] == b'{"c":3}'


@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=30)), max_size=4
        ),
        max_size=6,
    ),
    st.integers(min_value=1, max_value=17),
)
def test_framing_round_trips_under_any_chunking(
    messages: list[dict[str, object]], chunk: int
) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    out: list[bytes | ProtocolError] = []
    for i in range(0, len(stream), chunk):
        out += list(decoder.feed(stream[i : i + chunk]))
    assert [json.loads(x) for x in out if isinstance(x, bytes)] == messages


def test_response_payloads_ignore_fields_a_newer_server_adds() -> None:
    from tako_common.protocol import DeployData

    data = DeployData.model_validate(
        {"app": "a", "env": "p", "version": "v", "new_app": True, "instances": 1, "future": 1}
    )
    assert data.instances == 1


def test_requests_leave_out_default_fields_so_older_servers_accept_them() -> None:
    full = deploy_payload(instances=3, credentials={"postgres_url": "postgresql://db/q"})
    for payload, absent in (
        (deploy_payload(), {"credentials", "storages", "backup", "instances", "vars", "owner"}),
        (full, {"storages", "backup", "vars", "owner"}),
    ):
        request = parse_request(json.dumps(payload))
        wire = json.loads(encode_frame(request))
        assert wire["command"] == "deploy" and not absent & set(wire), sorted(wire)
        assert "runtime_version" not in wire["manifest"]  # nested defaults too
        assert parse_request(encode_frame(request)) == request  # the server reads it the same
    assert json.loads(encode_frame(parse_request(json.dumps(full))))["instances"] == 3


def test_an_older_server_refusing_a_new_field_gets_an_upgrade_hint() -> None:
    from tako_client.remote import raise_for_error
    from tako_common.errors import RemoteError

    line = encode_frame(
        error(
            "invalid deploy request: credentials: Extra inputs are not permitted",
            code="invalid_request",
        )
    )
    with pytest.raises(RemoteError) as info:
        raise_for_error(parse_response(line))
    assert "tako servers upgrade" in (info.value.hint or "")
    with pytest.raises(RemoteError) as other:
        raise_for_error(parse_response(encode_frame(error("nope", code="invalid_request"))))
    assert other.value.hint is None
