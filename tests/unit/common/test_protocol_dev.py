"""The dev edge protocol: strict requests whose refusals name the broken rule."""

from __future__ import annotations

import json

import pytest

from tako_common.errors import ProtocolError
from tako_common.protocol.dev import (
    DevRegister,
    DevState,
    DevStop,
    parse_dev_request,
)

REGISTER = {
    "command": "register", "client_version": "0.1.0", "app": "web",
    "routes": ["web.localhost"], "app_dir": "/src/web", "pid": 12,
}


def line(**changes: object) -> str:
    return json.dumps({**REGISTER, **changes})


def test_a_valid_register_parses_with_normalised_routes() -> None:
    request = parse_dev_request(line(routes=["WEB.localhost", "api.test/v1/*"]))
    assert isinstance(request, DevRegister)
    assert request.routes == ["web.localhost", "api.test/v1/*"]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (line(app="Web_1"), "invalid app name"),
        (line(routes=[]), "routes"),
        (line(routes=["/api"]), "path-only routes are invalid"),
        (line(app_dir="relative/dir"), "absolute path"),
        (line(pid=True), "pid"),
        (line(pid=0), "pid"),
        (line(extra=1), "extra"),
        (line(certificates=[{"domain": "a/b", "cert_pem": "x", "key_pem": "y"}]),
         "certificate domain"),
        (line(certificates=[{"domain": "web.localhost", "cert_pem": "nope",
                             "key_pem": "-----BEGIN KEY"}]), "PEM"),
        ('{"command": "state", "state": "up"}', "needs the port"),
        ('{"command": "state", "state": "up", "port": 70000}', "port"),
        ('{"command": "state", "state": "sleeping"}', "state"),
        ('{"command": "stop"}', "name one app or set all"),
        ('{"command": "stop", "app": "web", "all": true}', "name one app or set all"),
        ('{"command": "stop", "all": 1}', "all"),
        ('{"command": "launch"}', "unknown dev edge command"),
        ("[]", "JSON object"),
        ('{"command": "list", "command": "list"}', "duplicate key"),
        ("", "empty line"),
    ],
)
def test_bad_requests_are_refused_naming_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_dev_request(text)
    assert rule in caught.value.message


def test_the_session_messages() -> None:
    assert parse_dev_request('{"command": "state", "state": "up", "port": 4100}') == DevState(
        state="up", port=4100
    )
    assert parse_dev_request('{"command": "stop", "all": true}') == DevStop(all=True)
