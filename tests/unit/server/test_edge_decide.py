"""The edge's routing decision: a table of request heads x routing states -> route.

``decide`` is pure: no sockets, no files (a static route is only a candidate; the shell
checks the file system), no clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from tako_server.edge.decide import Route, app_route, decide
from tako_server.edge.policy import RequestHead
from tako_server.edge.snapshot import Backend, EdgeApp, EdgeSnapshot, EdgeState, ImageRules

B1 = Backend(1, "127.0.0.1", 9001)
RULES = ImageRules(("/**",), (), (320,), (75,), ("webp",), "/srv/cache")


def _state() -> EdgeState:
    apps = {
        "shop": EdgeApp("shop", (B1,), "/srv/shop/public", cold_start=False),
        "wild": EdgeApp("wild", (), None, cold_start=True),
        "api": EdgeApp("api", (), None, cold_start=False),
        "docs": EdgeApp("docs", (B1,), "/srv/docs/public", cold_start=False),
        "pics": EdgeApp("pics", (B1,), "/srv/pics/public", False, images=RULES),
        "blog": EdgeApp("blog", (B1,), "/srv/blog/public", False, images=RULES),
        "down": EdgeApp("down", (B1,), "/srv/down/public", False, "back soon", RULES),
    }
    routes = (
        ("shop.example.com", "shop"),
        ("*.example.com", "wild"),
        ("api.example.com/v1/*", "api"),
        ("example.com/docs/*", "docs"),
        ("ghost.example.com", "missing-app"),
        ("shop.localhost", "shop"),
        ("pics.example.com", "pics"),
        ("example.com/blog/*", "blog"),
        ("down.example.com", "down"),
    )
    return EdgeState.compile(EdgeSnapshot(routes=routes, apps=apps))


LIVE = _state()
EMPTY = EdgeState.empty()

# (name, method, host, path, query, is_tls, state, expected route, expected detail)
# detail: an app key for routed decisions, else the detail itself.
TABLE: list[tuple[str, bytes, str, str, bytes, bool, EdgeState, Route, Any]] = [
    ("acme challenge on http", b"GET", "shop.example.com",
     "/.well-known/acme-challenge/tok_EN-1", b"", False, LIVE, Route.CHALLENGE, "tok_EN-1"),
    ("acme challenge on https too", b"GET", "x.org",
     "/.well-known/acme-challenge/abc", b"", True, EMPTY, Route.CHALLENGE, "abc"),
    ("malformed challenge token", b"GET", "shop.example.com",
     "/.well-known/acme-challenge/a%2Fb", b"", False, LIVE, Route.CHALLENGE, None),
    ("plain http redirects, query kept", b"GET", "shop.example.com", "/cart", b"?id=3",
     False, LIVE, Route.REDIRECT, b"https://shop.example.com/cart?id=3"),
    ("redirect drops the Host port", b"POST", "shop.example.com:80", "/", b"",
     False, LIVE, Route.REDIRECT, b"https://shop.example.com/"),
    ("redirect without a route", b"GET", "unknown.org", "/x", b"",
     False, EMPTY, Route.REDIRECT, b"https://unknown.org/x"),
    ("private host is already https", b"GET", "shop.localhost", "/", b"",
     False, LIVE, Route.PROXY, "shop"),
    ("internal status on http", b"GET", "tako.internal", "/status", b"",
     False, EMPTY, Route.STATUS, None),
    ("internal status on https", b"GET", "tako.internal", "/status", b"",
     True, LIVE, Route.STATUS, None),
    ("internal host, other path", b"GET", "tako.internal", "/other", b"",
     True, LIVE, Route.NOT_FOUND, None),
    ("no route", b"GET", "unknown.org", "/", b"", True, LIVE, Route.NOT_FOUND, None),
    ("empty state", b"GET", "shop.example.com", "/", b"", True, EMPTY, Route.NOT_FOUND, None),
    ("route to an unknown app", b"GET", "ghost.example.com", "/", b"",
     True, LIVE, Route.NOT_FOUND, None),
    ("exact host with backends", b"GET", "shop.example.com", "/cart", b"",
     True, LIVE, Route.PROXY, "shop"),
    ("static candidate: GET with extension", b"GET", "shop.example.com", "/app.js", b"",
     True, LIVE, Route.STATIC, "shop"),
    ("static candidate: HEAD", b"HEAD", "shop.example.com", "/img/logo.png", b"",
     True, LIVE, Route.STATIC, "shop"),
    ("POST never static", b"POST", "shop.example.com", "/app.js", b"",
     True, LIVE, Route.PROXY, "shop"),
    ("no extension: the app", b"GET", "shop.example.com", "/dir.d/", b"",
     True, LIVE, Route.PROXY, "shop"),
    ("trailing dot is no extension", b"GET", "shop.example.com", "/file.", b"",
     True, LIVE, Route.PROXY, "shop"),
    ("app without public/: no static", b"GET", "other.example.com", "/app.js", b"",
     True, LIVE, Route.COLD_START, "wild"),
    ("wildcard app scaled to zero", b"GET", "other.example.com", "/", b"",
     True, LIVE, Route.COLD_START, "wild"),
    ("path route beats wildcard, no instance", b"GET", "api.example.com", "/v1/users", b"",
     True, LIVE, Route.UNAVAILABLE, "api"),
    ("outside the path route: wildcard", b"GET", "api.example.com", "/v2", b"",
     True, LIVE, Route.COLD_START, "wild"),
    ("path route static candidate", b"GET", "example.com", "/docs/site.css", b"",
     True, LIVE, Route.STATIC, "docs"),
    ("image endpoint of an app with [images]", b"GET", "pics.example.com", "/_tako/image",
     b"?url=/a.png&w=320", True, LIVE, Route.IMAGE, "pics"),
    ("image endpoint: any method (the endpoint answers 405)", b"POST", "pics.example.com",
     "/_tako/image", b"", True, LIVE, Route.IMAGE, "pics"),
    ("image endpoint under a path route's prefix", b"GET", "example.com",
     "/blog/_tako/image", b"?url=/a.png&w=320", True, LIVE, Route.IMAGE, "blog"),
    ("image endpoint needs [images]: else the app", b"GET", "shop.example.com",
     "/_tako/image", b"?url=/a.png&w=320", True, LIVE, Route.PROXY, "shop"),
    ("a path that only ends like the endpoint", b"GET", "pics.example.com",
     "/x/_tako/image", b"", True, LIVE, Route.PROXY, "pics"),
    ("image endpoint over plain http redirects", b"GET", "pics.example.com", "/_tako/image",
     b"?w=1", False, LIVE, Route.REDIRECT, b"https://pics.example.com/_tako/image?w=1"),
    ("maintenance: every request of the app", b"POST", "down.example.com", "/api",
     b"", True, LIVE, Route.MAINTENANCE, "down"),
    ("maintenance before static files", b"GET", "down.example.com", "/site.css",
     b"", True, LIVE, Route.MAINTENANCE, "down"),
    ("maintenance before the image endpoint", b"GET", "down.example.com", "/_tako/image",
     b"?url=/a.png&w=320", True, LIVE, Route.MAINTENANCE, "down"),
    ("maintenance keeps ACME challenges", b"GET", "down.example.com",
     "/.well-known/acme-challenge/tok", b"", False, LIVE, Route.CHALLENGE, "tok"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "host", "path", "query", "is_tls", "state", "route", "detail"),
    [case[1:] for case in TABLE],
    ids=[case[0] for case in TABLE],
)
def test_decide_table(
    method: bytes,
    host: str,
    path: str,
    query: bytes,
    is_tls: bool,
    state: EdgeState,
    route: Route,
    detail: Any,
) -> None:
    kind, got = decide(method, RequestHead(host=host), path, query, is_tls, state, 443)
    assert kind is route
    if route in (Route.CHALLENGE, Route.REDIRECT, Route.STATUS, Route.NOT_FOUND):
        assert got == detail
    else:
        match, app = got
        assert app.key == detail
        assert match.target == detail


def test_redirect_names_the_public_https_port() -> None:
    kind, location = decide(
        b"GET", RequestHead(host="shop.example.com:8080"), "/a", b"?b", False, LIVE, 8443
    )
    assert kind is Route.REDIRECT
    assert location == b"https://shop.example.com:8443/a?b"


def test_static_decision_carries_the_route_prefix() -> None:
    kind, (match, app) = decide(
        b"GET", RequestHead(host="example.com"), "/docs/a/b.js", b"", True, LIVE, 443
    )
    assert (kind, match.prefix, app.key) == (Route.STATIC, "/docs", "docs")


def test_routed_decisions_reuse_the_states_cached_pair() -> None:
    """The hot path allocates nothing for a routed request but the result pair."""
    head = RequestHead(host="shop.example.com")
    first = decide(b"GET", head, "/cart", b"", True, LIVE, 443)[1]
    second = decide(b"GET", head, "/cart", b"", True, LIVE, 443)[1]
    assert first is second


@pytest.mark.parametrize(
    ("backends", "cold_start", "route"),
    [
        ((B1,), False, Route.PROXY),
        ((B1,), True, Route.PROXY),
        ((), True, Route.COLD_START),
        ((), False, Route.UNAVAILABLE),
    ],
)
def test_app_route_after_a_static_miss(
    backends: tuple[Backend, ...], cold_start: bool, route: Route
) -> None:
    state = EdgeState.compile(
        EdgeSnapshot(
            routes=(("a.test", "a"),), apps={"a": EdgeApp("a", backends, "/p", cold_start)}
        )
    )
    found = state.route("a.test", "/")
    assert found is not None
    assert app_route(found[1]) is route
