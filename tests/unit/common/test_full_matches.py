"""Every name, host, variable and version check matches the whole value: a trailing newline,
a control character or a unicode look-alike is refused everywhere (``re.match`` with
``^...$`` let ``"v2\\n"`` through, since ``$`` matches before a final newline)."""

from __future__ import annotations

import json

import pytest

from tako_common.errors import ProtocolError, ValidationError
from tako_common.hosts import acme_challenge_token, normalize_host
from tako_common.names import (
    is_valid_env_var_name,
    is_valid_name,
    is_valid_version,
    parse_release_version,
    release_version,
    validate_app_name,
    validate_version,
)
from tako_common.protocol import parse_request
from tako_common.routes import parse_route
from tako_server.tls.certinfo import validate_domain
from tests.unit.common.test_protocol import deploy_payload

# Suffixes that must never be accepted after an otherwise valid value.
TAILS = ["\n", "\r", "\r\n", "\x00", "\t", " ", "\u200b", "\u2028", "\x85"]
# Look-alikes: Cyrillic a, Kelvin sign (lowercases to k), fullwidth and Arabic digits,
# a dotless i, and the en dash for '-'.
LOOKALIKES = ["\u0430pp", "\u212aeep", "app\uff11", "v\u0662", "\u0131d", "my\u2013app"]


@pytest.mark.parametrize("tail", TAILS)
def test_app_env_names_refuse_trailing_control_and_space(tail: str) -> None:
    assert not is_valid_name("adv" + tail)
    with pytest.raises(ValidationError, match="invalid app name"):
        validate_app_name("adv" + tail)


@pytest.mark.parametrize("tail", TAILS)
def test_versions_refuse_a_trailing_newline_or_control_character(tail: str) -> None:
    assert not is_valid_version("v2" + tail)
    with pytest.raises(ValidationError, match="invalid release version"):
        validate_version("v2" + tail)


@pytest.mark.parametrize("tail", TAILS)
def test_variable_names_refuse_a_trailing_newline(tail: str) -> None:
    assert not is_valid_env_var_name("API_URL" + tail)


@pytest.mark.parametrize("value", LOOKALIKES)
def test_unicode_lookalikes_are_not_names_versions_or_variables(value: str) -> None:
    assert not is_valid_name(value)
    assert not is_valid_version(value)
    assert not is_valid_env_var_name(value)


@pytest.mark.parametrize("version", ["abc1234\n", "abc1234_deadbeef\n", "nogit_deadbeef\n"])
def test_parse_release_version_refuses_a_trailing_newline(version: str) -> None:
    with pytest.raises(ValidationError):
        parse_release_version(version)


def test_release_version_refuses_a_commit_or_hash_with_a_trailing_newline() -> None:
    with pytest.raises(ValidationError, match="git commit"):
        release_version("abc1234\n", False, "deadbeef00")
    with pytest.raises(ValidationError, match="source hash"):
        release_version(None, False, "deadbeef00\n")


@pytest.mark.parametrize(
    "overrides",
    [
        {"version": "v2\n"},
        {"app": "adv\n"},
        {"env": "production\n"},
        {"sha256": "a" * 64 + "\n"},
        {"secrets": {"TOKEN\n": "x"}},
        {"vars": {"A\n": "x"}},
        {"version": "v\u0662"},
        {"app": "\u0430pp"},
        {"owner": "ci\n"},
    ],
)
def test_deploy_requests_with_trailing_newlines_or_lookalikes_are_refused(
    overrides: dict[str, object],
) -> None:
    with pytest.raises(ProtocolError, match="invalid deploy request"):
        parse_request(json.dumps(deploy_payload(**overrides)))


@pytest.mark.parametrize(
    "route", ["example.com\n", "example.com/api\n", "ex\u0430mple.com", "example.com/a\u200b"]
)
def test_routes_refuse_trailing_newlines_and_lookalikes(route: str) -> None:
    with pytest.raises(ValidationError):
        parse_route(route)


@pytest.mark.parametrize(
    "host", ["ex\u0430mple.com", "*.ex\u0430mple.com", "a\x00.com", "a.b\u200b"]
)
def test_certificate_domains_refuse_lookalikes_and_control_characters(host: str) -> None:
    with pytest.raises(ValidationError):
        validate_domain(host)


def test_certificate_domains_are_normalised_never_passed_through_with_a_newline() -> None:
    # normalize_host strips surrounding whitespace first: the stored name has no newline.
    assert validate_domain("Example.com\n") == "example.com"


def test_host_ports_are_ascii_digits_only() -> None:
    assert normalize_host("example.com:443") == "example.com"
    # An Arabic-Indic "443" is not a port: the value is left as it was (lowercased).
    assert normalize_host("example.com:\u0664\u0664\u0663") == "example.com:\u0664\u0664\u0663"


@pytest.mark.parametrize("tail", ["\n", "\x00", "\u200b"])
def test_acme_tokens_refuse_a_trailing_newline(tail: str) -> None:
    assert acme_challenge_token("/.well-known/acme-challenge/abc_DEF-1") == "abc_DEF-1"
    assert acme_challenge_token("/.well-known/acme-challenge/abc" + tail) is None
