"""Pure edge policy: redirects, smuggling rules, hop-by-hop, forwarded headers, balancing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tako_server.edge.activity import Activity
from tako_server.edge.policy import (
    MAX_BODY,
    Rejected,
    choose_backend,
    client_response,
    inspect_request,
    redirect_location,
    redirect_response,
    should_redirect,
    simple_response,
    split_target,
    upstream_request,
)


@pytest.mark.parametrize(
    ("is_tls", "host", "path", "expected"),
    [
        (False, "example.com", "/", True),
        (False, "example.com:80", "/x", True),
        (True, "example.com", "/", False),
        (False, "example.com", "/.well-known/acme-challenge/abc", False),
        (False, "tako.internal", "/status", False),
        (False, "tako.internal", "/other", False),  # private host
        (False, "localhost", "/", False),
        (False, "app.localhost", "/", False),
        (False, "myapp", "/", False),
        (False, "shop.test", "/", False),
        (False, "printer.local", "/", False),
        (False, "127.0.0.1:8080", "/", False),
        (False, "10.0.0.5", "/", False),
        (False, "8.8.8.8", "/", True),
    ],
)
def test_should_redirect(is_tls: bool, host: str, path: str, expected: bool) -> None:
    assert should_redirect(is_tls, host, path) is expected


@pytest.mark.parametrize(
    ("host", "path", "query", "port", "expected"),
    [
        ("example.com", "/a", b"?q=1&r=2", 443, b"https://example.com/a?q=1&r=2"),
        ("Example.COM:80", "/", b"", 443, b"https://example.com/"),
        ("example.com:8080", "/p", b"?x", 8443, b"https://example.com:8443/p?x"),
        ("[2001:db8::1]:80", "/", b"", 443, b"https://[2001:db8::1]/"),
    ],
)
def test_redirect_location_keeps_path_and_query(
    host: str, path: str, query: bytes, port: int, expected: bytes
) -> None:
    assert redirect_location(host, path, query, port) == expected


def test_redirect_response_is_307_no_store() -> None:
    raw = redirect_response(b"https://example.com/?q=1")
    assert raw.startswith(b"HTTP/1.1 307 Temporary Redirect\r\n")
    assert b"\r\nLocation: https://example.com/?q=1\r\n" in raw
    assert b"\r\nCache-Control: no-store\r\n" in raw


def h(*pairs: str) -> list[tuple[bytes, bytes]]:
    return [(p.split(":", 1)[0].encode(), p.split(":", 1)[1].strip().encode()) for p in pairs]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (h("Host: a", "Content-Length: 3", "Transfer-Encoding: chunked"), 400),
        (h("Host: a", "Content-Length: 3", "Content-Length: 4"), 400),
        (h("Host: a", "Content-Length: 3", "Content-Length: 3"), 400),
        (h("Host: a", "Transfer-Encoding: gzip, chunked"), 400),
        (h("Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 400),
        (h("Host: a", "Content-Length: 1e3"), 400),
        (h("Host: a", f"Content-Length: {MAX_BODY + 1}"), 413),
        (h("Host: a", "Host: b"), 400),
        (h("Host: a b"), 400),
        (h("Host: a/b"), 400),
        (h("X: y"), 400),  # HTTP/1.1 needs Host
    ],
)
def test_smuggling_and_limit_rules(headers: list[tuple[bytes, bytes]], status: int) -> None:
    with pytest.raises(Rejected) as info:
        inspect_request(headers, http11=True)
    assert info.value.status == status


def test_valid_framing_is_accepted() -> None:
    head = inspect_request(h("Host: a", f"Content-Length: {MAX_BODY}"), http11=True)
    assert head.content_length == MAX_BODY and not head.chunked
    assert inspect_request(h("Host: a", "Transfer-Encoding: Chunked"), http11=True).chunked
    assert inspect_request([], http11=False).host == ""


def test_hop_by_hop_and_untrusted_headers_are_not_forwarded() -> None:
    head = inspect_request(
        h(
            "Host: app.example.com",
            "Connection: keep-alive, X-Secret",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X",
            "Upgrade: h2c",
            "X-Secret: 1",
            "X-Forwarded-For: 6.6.6.6",
            "X-Forwarded-Proto: http",
            "X-Forwarded-Host: evil",
            "Forwarded: for=6.6.6.6",
            "X-Real-IP: 6.6.6.6",
            "Accept: */*",
            "Cookie: a=b",
        ),
        http11=True,
    )
    assert head.forward == [b"Accept: */*\r\n", b"Cookie: a=b\r\n"]
    assert not head.websocket
    raw = upstream_request(b"GET", b"/p?q=1", head, b"203.0.113.9", b"https")
    assert raw.startswith(b"GET /p?q=1 HTTP/1.1\r\n")
    assert b"Host: app.example.com\r\n" in raw
    assert b"X-Forwarded-For: 203.0.113.9\r\n" in raw
    assert b"X-Forwarded-Proto: https\r\n" in raw
    assert b"X-Forwarded-Host: app.example.com\r\n" in raw
    assert raw.count(b"X-Forwarded-For") == 1
    for dropped in (b"Connection", b"Keep-Alive", b"Upgrade", b"X-Secret", b"6.6.6.6", b"TE:"):
        assert dropped not in raw
    assert raw.endswith(b"\r\n\r\n")


def test_websocket_upgrade_is_passed_through() -> None:
    head = inspect_request(
        h("Host: a", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Key: k"),
        http11=True,
    )
    assert head.websocket
    raw = upstream_request(b"GET", b"/ws", head, b"1.2.3.4", b"https")
    assert b"Connection: upgrade\r\nUpgrade: websocket\r\n" in raw
    assert b"Sec-WebSocket-Key: k\r\n" in raw


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (h("Host: a", "Content-Length: 5"), b"Content-Length: 5\r\n"),
        (h("Host: a", "Transfer-Encoding: chunked"), b"Transfer-Encoding: chunked\r\n"),
    ],
)
def test_upstream_request_uses_edge_framing(
    head: list[tuple[bytes, bytes]], expected: bytes
) -> None:
    raw = upstream_request(b"POST", b"/", inspect_request(head, http11=True), b"1.1.1.1", b"http")
    assert expected in raw


def test_client_response_strips_hop_by_hop_and_frames() -> None:
    framing = client_response(
        200,
        b"OK",
        h(
            "Content-Type: text/plain",
            "Connection: close, X-Internal",
            "X-Internal: 1",
            "Keep-Alive: 5",
            "Transfer-Encoding: chunked",
        ),
        head_request=False,
        client_http11=True,
        keep_alive=True,
    )
    assert framing.chunked and not framing.close and not framing.no_body
    assert framing.head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("status", "headers", "head_request", "http11", "chunked", "close", "no_body"),
    [
        (200, h("Content-Length: 3"), False, True, False, False, False),
        (200, [], False, False, False, True, False),  # HTTP/1.0 client: close-delimited
        (204, [], False, True, False, False, True),
        (304, [], False, True, False, False, True),
        (200, h("Content-Length: 3"), True, True, False, False, True),
    ],
)
def test_client_response_framing(
    status: int,
    headers: list[tuple[bytes, bytes]],
    head_request: bool,
    http11: bool,
    chunked: bool,
    close: bool,
    no_body: bool,
) -> None:
    framing = client_response(
        status, b"", headers, head_request=head_request, client_http11=http11, keep_alive=True
    )
    assert (framing.chunked, framing.close, framing.no_body) == (chunked, close, no_body)


def test_simple_response_has_length_and_optional_close() -> None:
    raw = simple_response(503, close=True, extra=(("Retry-After", "1"),))
    assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Retry-After: 1\r\n" in raw and b"Connection: close\r\n" in raw
    head, _, body = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in head


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/a/b?x=1", "/a/b", b"?x=1"),
        (b"/", "/", b""),
        (b"http://example.com/p?q", "/p", b"?q"),
        (b"http://example.com", "/", b""),
        (b"HTTP://Example.COM:80?/api/x", "/", b"?/api/x"),
        (b"/p#frag", "/p", b""),
    ],
)
def test_split_target(target: bytes, path: str, query: bytes) -> None:
    assert split_target(target, "example.com") == (path, query)


@pytest.mark.parametrize(
    ("target", "host"),
    [
        (b"http://evil.internal/admin", "app.localhost"),
        (b"http://app.localhost@evil/x", "app.localhost"),
        (b"http://app.localhost/x", ""),
    ],
)
def test_absolute_targets_must_name_the_host_header(target: bytes, host: str) -> None:
    with pytest.raises(Rejected, match="another host"):
        split_target(target, host)


def test_split_target_refuses_authority_form() -> None:
    with pytest.raises(Rejected):
        split_target(b"example.com:443")


@dataclass(frozen=True)
class B:
    instance_id: int


@pytest.mark.parametrize(
    ("loads", "turn", "expected"),
    [
        ({}, 0, 1),
        ({}, 1, 2),
        ({}, 2, 3),
        ({1: 2, 2: 1, 3: 5}, 0, 2),
        ({1: 1, 2: 1, 3: 0}, 0, 3),
        ({1: 1, 2: 1, 3: 1}, 1, 2),
    ],
)
def test_least_connections_with_rotating_ties(
    loads: dict[int, int], turn: int, expected: int
) -> None:
    backends = [B(1), B(2), B(3)]
    assert choose_backend(backends, loads, turn).instance_id == expected


def test_activity_counts_and_urgent_transitions() -> None:
    activity = Activity()
    activity.begin("a/prod", 1)
    assert activity.urgent
    assert activity.take_report(now=0.0) == {"a/prod": {1: 1}}
    activity.begin("a/prod", 2)
    assert not activity.urgent  # 1 -> 2 is batched
    activity.end("a/prod", 1)
    activity.end("a/prod", 2)
    assert not activity.urgent  # back to zero is batched
    assert activity.take_report(now=1.0) == {"a/prod": {}}
    assert activity.take_report(now=2.0) == {}
    activity.begin("a/prod", 1)
    assert activity.urgent  # busy again after an idle report


def test_activity_busy_app_flapping_is_not_urgent() -> None:
    activity = Activity()
    activity.begin("a/prod", 1)
    activity.take_report(now=0.0)
    activity.end("a/prod", 1)
    activity.begin("a/prod", 1)
    assert not activity.urgent  # the supervisor already knows it is busy


def test_activity_heartbeat_repeats_busy_apps() -> None:
    activity = Activity()
    activity.begin("a/prod", 1)
    activity.take_report(now=100.0)
    assert activity.take_report(now=101.0) == {}
    assert activity.take_report(now=106.0) == {"a/prod": {1: 1}}


def test_proxy_headers_are_kept_for_clientaddr_and_never_forwarded() -> None:
    head = inspect_request(
        h(
            "Host: app.example.com",
            "X-Forwarded-For: 1.1.1.1",
            "X-Forwarded-For: 2.2.2.2",
            "X-Forwarded-Proto: https",
            "CF-Connecting-IP: 3.3.3.3 ",
            "Accept: */*",
        ),
        http11=True,
    )
    assert (head.xff, head.xfp, head.cf_ip) == (b"1.1.1.1, 2.2.2.2", b"https", b"3.3.3.3")
    raw = upstream_request(b"GET", b"/", head, b"198.51.100.4", b"http")
    assert b"X-Forwarded-For: 198.51.100.4\r\nX-Real-IP: 198.51.100.4\r\n" in raw
    for dropped in (b"1.1.1.1", b"2.2.2.2", b"3.3.3.3", b"CF-Connecting-IP"):
        assert dropped not in raw
    plain = inspect_request(h("Host: app.example.com"), http11=True)
    assert (plain.xff, plain.xfp, plain.cf_ip) == (None, None, None)
