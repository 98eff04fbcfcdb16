"""Host normalisation and private/local host classification."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tako_common.hosts import (
    acme_challenge_token,
    is_acme_challenge_path,
    is_internal_status_request,
    is_private_host,
    normalize_host,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com:8443", "example.com"),
        ("example.com:", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:443", "example.com"),
        ("  example.com  ", "example.com"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:443", "::1"),
        ("[::1]", "::1"),
        ("[FE80::1]:8080", "fe80::1"),
        ("::1", "::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("", ""),
    ],
)
def test_normalize_host_lowercases_strips_port_and_trailing_dot(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


@given(st.from_regex(r"[a-zA-Z0-9.-]{0,30}(:[0-9]{1,5})?", fullmatch=True))
def test_normalize_host_is_idempotent(raw: str) -> None:
    once = normalize_host(raw)
    assert normalize_host(once) == once


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:3000",
        "app.localhost",
        "a.b.localhost",
        "*.localhost",
        "myapp",
        "myapp:8080",
        "printer.local",
        "app.test",
        "x.invalid",
        "www.example",
        "nas.home.arpa",
        "tako.internal",
        "router.lan",
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.0.1",
        "[::1]:443",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
    ],
)
def test_is_private_host_true_for_local_names_and_private_ips(host: str) -> None:
    assert is_private_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "app.example.com",
        "*.example.com",
        "localhost.com",
        "mytest.io",
        "test.com",
        "local.example.org",
        "8.8.8.8",
        "1.1.1.1:443",
        "2606:4700:4700::1111",
        "",
        "*",
    ],
)
def test_is_private_host_false_for_public_names_and_ips(host: str) -> None:
    assert not is_private_host(host)


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("tako.internal", "/status", True),
        ("TAKO.internal:8080", "/status", True),
        ("tako.internal.", "/status", True),
        ("tako.internal", "/status/", False),
        ("tako.internal", "/", False),
        ("tako-internal", "/status", False),
        ("example.com", "/status", False),
        ("app.tako.internal", "/status", False),
    ],
)
def test_internal_status_request_needs_tako_internal_host_and_status_path(
    host: str, path: str, expected: bool
) -> None:
    assert is_internal_status_request(host, path) is expected


@pytest.mark.parametrize(
    ("path", "is_challenge", "token"),
    [
        ("/.well-known/acme-challenge/abc_DEF-123", True, "abc_DEF-123"),
        ("/.well-known/acme-challenge/", True, None),
        ("/.well-known/acme-challenge/a/b", True, None),
        ("/.well-known/acme-challenge/..", True, None),
        ("/.well-known/acme-challenge/a%2Fb", True, None),
        ("/.well-known/acme-challenge", False, None),
        ("/.well-known/other/abc", False, None),
        ("/acme-challenge/abc", False, None),
    ],
)
def test_acme_challenge_path_and_token(path: str, is_challenge: bool, token: str | None) -> None:
    assert is_acme_challenge_path(path) is is_challenge
    assert acme_challenge_token(path) == token
