"""Route syntax, matching, precedence, conflicts and the route table (see docs/routes.md)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tako_common.errors import ValidationError
from tako_common.routes import (
    PathKind,
    Route,
    RouteConflictError,
    RouteTable,
    find_conflicts,
    parse_route,
    route_hosts,
)

# --- parsing ---------------------------------------------------------------------------

ANY, EXACT, PREFIX = PathKind.ANY, PathKind.EXACT, PathKind.PREFIX


@pytest.mark.parametrize(
    ("text", "normal", "host", "wildcard", "path", "kind"),
    [
        ("example.com", "example.com", "example.com", False, None, ANY),
        ("Example.COM", "example.com", "example.com", False, None, ANY),
        ("example.com.", "example.com", "example.com", False, None, ANY),
        ("*.example.com", "*.example.com", "example.com", True, None, ANY),
        ("example.com/*", "example.com", "example.com", False, None, ANY),
        ("example.com/api", "example.com/api", "example.com", False, "/api", EXACT),
        ("example.com/api/", "example.com/api", "example.com", False, "/api", EXACT),
        ("example.com/", "example.com/", "example.com", False, "/", EXACT),
        ("example.com/api/*", "example.com/api/*", "example.com", False, "/api", PREFIX),
        ("example.com/a/b/*", "example.com/a/b/*", "example.com", False, "/a/b", PREFIX),
        ("*.example.com/api/*", "*.example.com/api/*", "example.com", True, "/api", PREFIX),
        ("*.example.com/api", "*.example.com/api", "example.com", True, "/api", EXACT),
        ("localhost", "localhost", "localhost", False, None, ANY),
        ("myapp", "myapp", "myapp", False, None, ANY),
        ("*.localhost", "*.localhost", "localhost", True, None, ANY),
        ("*.app.localhost/x/*", "*.app.localhost/x/*", "app.localhost", True, "/x", PREFIX),
        ("127.0.0.1/api", "127.0.0.1/api", "127.0.0.1", False, "/api", EXACT),
        (
            "xn--bcher-kva.example",
            "xn--bcher-kva.example",
            "xn--bcher-kva.example",
            False,
            None,
            ANY,
        ),
        ("example.com/API/V1", "example.com/API/V1", "example.com", False, "/API/V1", EXACT),
        ("example.com/a%20b/~x", "example.com/a%20b/~x", "example.com", False, "/a%20b/~x", EXACT),
        (
            "example.com/v1.2/file.js",
            "example.com/v1.2/file.js",
            "example.com",
            False,
            "/v1.2/file.js",
            EXACT,
        ),
    ],
)
def test_parse_route_accepts_and_normalizes(
    text: str, normal: str, host: str, wildcard: bool, path: str | None, kind: PathKind
) -> None:
    route = parse_route(text)
    assert (route.text, route.host, route.wildcard, route.path, route.path_kind) == (
        normal,
        host,
        wildcard,
        path,
        kind,
    )
    assert str(route) == normal


LONG_LABEL = "a" * 64
LONG_HOST = ".".join(["a" * 63] * 4)  # 255 characters


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "cannot be empty"),
        ("/api/*", "path-only routes are invalid: a route needs a host, e.g. example.com/api/*"),
        ("/", "path-only routes are invalid"),
        ("https://example.com", "takes no scheme"),
        ("http://example.com/api", "takes no scheme"),
        ("example.com:8080", "cannot name a port"),
        ("example.com:443/api", "cannot name a port"),
        ("[::1]", "IPv6 literals are not supported"),
        ("[::1]:443/api", "IPv6 literals are not supported"),
        (" example.com", "whitespace"),
        ("example.com/a b", "whitespace"),
        ("example.com\t", "whitespace"),
        ("example.com/?q=1", "query '?' or fragment '#'"),
        ("example.com/a#top", "query '?' or fragment '#'"),
        ("*", "needs a domain after it"),
        ("*/api", "needs a domain after it"),
        ("a.*.com", "only as the whole first label"),
        ("*foo.example.com", "only as the whole first label"),
        ("*.*.example.com", "only as the whole first label"),
        ("example.*", "only as the whole first label"),
        ("*.com", "wildcard over a top-level domain"),
        ("*.myapp", "wildcard over a top-level domain"),
        ("-bad.example.com", "invalid host label '-bad'"),
        ("bad-.example.com", "invalid host label 'bad-'"),
        ("under_score.example.com", "invalid host label"),
        ("a..example.com", "invalid host label ''"),
        (".example.com", "invalid host label ''"),
        (f"{LONG_LABEL}.example.com", "invalid host label"),
        (LONG_HOST, "at most 253 characters"),
        ("bücher.example", "invalid host label"),
        ("1.2.3", "must be an IPv4 address"),
        ("999.1.1.1", "must be an IPv4 address"),
        ("*.1.2.3.4", "must be an IPv4 address"),
        ("example.com/a*", "only as a trailing '/*'"),
        ("example.com/*/a", "only as a trailing '/*'"),
        ("example.com/a/*/*", "only as a trailing '/*'"),
        ("example.com/a/b*", "only as a trailing '/*'"),
        ("example.com//a", "empty segment '//'"),
        ("example.com/a//", "empty segment '//'"),
        ("example.com/a//*", "empty segment '//'"),
        ("example.com/../etc", "'.' or '..' segments"),
        ("example.com/a/..", "'.' or '..' segments"),
        ("example.com/a/./b/*", "'.' or '..' segments"),
        ("example.com/a\\b", "invalid path segment"),
        ("example.com/a%zz", "invalid path segment"),
        ("example.com/<x>", "invalid path segment"),
    ],
)
def test_parse_route_rejects_and_names_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_route(text)
    assert rule in str(info.value)
    assert str(info.value).startswith(f"invalid route {text!r}: ")


def test_parse_route_suggests_the_route_without_scheme() -> None:
    with pytest.raises(ValidationError) as info:
        parse_route("https://example.com/api/*")
    assert info.value.hint == "write 'example.com/api/*'"


# --- matching a single route -----------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "host", "path", "expected"),
    [
        ("example.com", "example.com", "/anything/at/all", True),
        ("example.com", "EXAMPLE.com:443", "/", True),
        ("example.com", "example.com.", "/", True),
        ("example.com", "www.example.com", "/", False),
        ("*.example.com", "a.example.com", "/", True),
        ("*.example.com", "a.b.example.com", "/x", True),
        ("*.example.com", "example.com", "/", False),
        ("*.example.com", "badexample.com", "/", False),
        ("*.example.com", ".example.com", "/", False),
        ("example.com/api", "example.com", "/api", True),
        ("example.com/api", "example.com", "/api/", True),
        ("example.com/api", "example.com", "/api/x", False),
        ("example.com/api", "example.com", "/apix", False),
        ("example.com/", "example.com", "/", True),
        ("example.com/", "example.com", "", True),
        ("example.com/", "example.com", "/a", False),
        ("example.com/api/*", "example.com", "/api", True),
        ("example.com/api/*", "example.com", "/api/", True),
        ("example.com/api/*", "example.com", "/api/v1/users", True),
        ("example.com/api/*", "example.com", "/apiology", False),
        ("example.com/api/*", "example.com", "/", False),
        ("example.com/API/*", "example.com", "/api/x", False),
        ("*.example.com/api/*", "x.example.com", "/api/y", True),
        ("*.example.com/api/*", "example.com", "/api/y", False),
        ("*.localhost", "app.localhost:3000", "/", True),
        ("*.localhost", "localhost", "/", False),
    ],
)
def test_route_matches_host_and_path(route: str, host: str, path: str, expected: bool) -> None:
    assert parse_route(route).matches(host, path) is expected


@pytest.mark.parametrize(
    ("route", "prefix"),
    [
        ("example.com", ""),
        ("example.com/app", ""),
        ("example.com/app/*", "/app"),
        ("*.example.com/a/b/*", "/a/b"),
        ("example.com/*", ""),
    ],
)
def test_route_prefix_is_the_base_of_a_prefix_route_only(route: str, prefix: str) -> None:
    assert parse_route(route).prefix == prefix


# --- precedence in a table -------------------------------------------------------------

PRECEDENCE_TABLE = RouteTable.build(
    [
        ("example.com", "root"),
        ("example.com/api/*", "api"),
        ("example.com/api", "api-exact"),
        ("example.com/api/v2/*", "api-v2"),
        ("example.com/", "home"),
        ("*.example.com", "wild"),
        ("*.example.com/api/*", "wild-api"),
        ("*.eu.example.com", "wild-eu"),
        ("shop.example.com", "shop"),
        ("*.localhost", "local"),
    ]
)


@pytest.mark.parametrize(
    ("host", "path", "target", "prefix"),
    [
        ("example.com", "/about", "root", ""),
        ("example.com", "/", "home", ""),
        ("example.com", "/api/users", "api", "/api"),
        ("example.com", "/api", "api-exact", ""),
        ("example.com", "/api/", "api-exact", ""),
        ("example.com", "/api/v2/x", "api-v2", "/api/v2"),
        ("example.com", "/api/v2", "api-v2", "/api/v2"),
        ("example.com", "/apiology", "root", ""),
        ("shop.example.com", "/api/x", "shop", ""),
        ("a.example.com", "/api/x", "wild-api", "/api"),
        ("a.example.com", "/x", "wild", ""),
        ("a.b.example.com", "/x", "wild", ""),
        ("x.eu.example.com", "/api/x", "wild-eu", ""),
        ("eu.example.com", "/x", "wild", ""),
        ("Shop.Example.COM.:8443", "/", "shop", ""),
        ("app.localhost", "/", "local", ""),
    ],
)
def test_route_table_picks_the_most_specific_route(
    host: str, path: str, target: str, prefix: str
) -> None:
    found = PRECEDENCE_TABLE.match(host, path)
    assert found is not None
    assert (found.target, found.prefix) == (target, prefix)
    assert found.route.matches(host, path)


@pytest.mark.parametrize(
    ("host", "path"),
    [("example.org", "/"), ("localhost", "/"), ("com", "/"), ("", "/"), ("example.com.evil", "/")],
)
def test_route_table_returns_none_when_nothing_matches(host: str, path: str) -> None:
    assert PRECEDENCE_TABLE.match(host, path) is None


def test_exact_host_route_path_miss_falls_through_to_wildcard() -> None:
    table = RouteTable.build([("api.example.com/v1/*", "v1"), ("*.example.com", "wild")])
    found = table.match("api.example.com", "/v2")
    assert found is not None and found.target == "wild"


def test_route_table_len_iter_and_repr() -> None:
    table = RouteTable.build([("b.com", 1), ("a.com/x/*", 2), ("*.a.com", 3), ("a.com/x/*", 2)])
    assert len(table) == 3
    assert [(str(route), target) for route, target in table] == [
        ("*.a.com", 3),
        ("a.com/x/*", 2),
        ("b.com", 1),
    ]
    assert repr(table) == "RouteTable(routes=3, exact_hosts=2, wildcard_suffixes=1)"
    assert len(RouteTable()) == 0 and RouteTable().match("a.com", "/") is None


def test_route_table_rejects_identical_routes_for_different_targets() -> None:
    with pytest.raises(RouteConflictError) as info:
        RouteTable.build([("a.com/api/*", "a/production"), ("A.com/api/*", "b/production")])
    assert str(info.value) == (
        "route 'a.com/api/*' of 'b/production' conflicts with route 'a.com/api/*' of 'a/production'"
    )
    assert info.value.code == "route_conflict" and len(info.value.conflicts) == 1


def test_route_table_treats_host_star_as_the_same_route_as_bare_host() -> None:
    with pytest.raises(RouteConflictError):
        RouteTable.build([("a.com", "x"), ("a.com/*", "y")])


# --- conflicts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "new", "expected"),
    [
        (
            {"a/production": ["example.com/api/*"]},
            ["example.com/api/*"],
            [
                "route 'example.com/api/*' of 'b/production' conflicts with "
                "route 'example.com/api/*' of 'a/production'"
            ],
        ),
        (
            {"a/production": ["Example.com/api"]},
            ["example.com/api/"],
            [
                "route 'example.com/api' of 'b/production' conflicts with "
                "route 'example.com/api' of 'a/production'"
            ],
        ),
        (
            {"a/production": ["example.com"]},
            ["example.com/*"],
            [
                "route 'example.com' of 'b/production' conflicts with "
                "route 'example.com' of 'a/production'"
            ],
        ),
        ({"a/production": ["example.com"]}, ["example.com/api/*"], []),
        ({"a/production": ["example.com/api"]}, ["example.com/api/*"], []),
        ({"a/production": ["*.example.com"]}, ["example.com", "www.example.com"], []),
        ({"b/production": ["example.com", "example.com/api/*"]}, ["example.com"], []),
        ({"a/staging": ["example.com"]}, ["other.com"], []),
    ],
)
def test_find_conflicts_reports_identical_routes_only(
    existing: dict[str, list[str]], new: list[str], expected: list[str]
) -> None:
    found = find_conflicts(existing, "b/production", new)
    assert [str(conflict) for conflict in found] == expected


def test_find_conflicts_names_both_routes_and_targets() -> None:
    (conflict,) = find_conflicts({"a/prod": ["x.com/a/*"]}, "b/prod", ["x.com/a/*", "x.com/a/*"])
    assert (conflict.target, conflict.other_target) == ("b/prod", "a/prod")
    assert conflict.route == conflict.other_route == parse_route("x.com/a/*")


def test_find_conflicts_rejects_an_invalid_new_route() -> None:
    with pytest.raises(ValidationError):
        find_conflicts({}, "a/production", ["/api/*"])


def test_route_hosts_lists_distinct_host_patterns_in_order() -> None:
    routes: list[str | Route] = [
        "b.com/api/*",
        "*.a.com",
        "B.com",
        "a.com/x",
        parse_route("*.a.com/y"),
    ]
    assert route_hosts(routes) == ["b.com", "*.a.com", "a.com"]


# --- properties ------------------------------------------------------------------------

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
TLD = st.from_regex(r"[a-z]{2,6}", fullmatch=True)
SEGMENT = st.from_regex(r"([A-Za-z0-9_~!$&'()+,;=:@-]|%[0-9A-F]{2}){1,8}", fullmatch=True)


@st.composite
def route_texts(draw: st.DrawFn) -> str:
    """Valid routes in all forms, with case and trailing-slash variations."""
    labels = draw(st.lists(LABEL, min_size=1, max_size=3)) + [draw(TLD)]
    host = ".".join(labels)
    if draw(st.booleans()):
        host = "*." + host
    if draw(st.booleans()):
        host = host.upper()
    segments = draw(st.lists(SEGMENT, max_size=3))
    path = "/" + "/".join(segments) if segments else ""
    suffix = draw(st.sampled_from(["", "/", "/*"]))
    return host + path + suffix


@given(route_texts())
def test_property_parse_of_str_round_trips(text: str) -> None:
    route = parse_route(text)
    again = parse_route(str(route))
    assert again == route
    assert str(again) == str(route)


# A small universe so random requests often hit random routes.
HOSTS = ["example.com", "a.example.com", "b.a.example.com", "other.org"]
PATHS = ["/", "/api", "/api/v1", "/api/v1/x", "/apix", "/static/app.js"]


@st.composite
def small_routes(draw: st.DrawFn) -> str:
    host = draw(st.sampled_from(HOSTS))
    if draw(st.booleans()) and host.count(".") >= 2:
        host = "*." + host.split(".", 1)[1]
    elif draw(st.booleans()):
        host = "*." + host
    path = draw(st.sampled_from(["", "/", "/api", "/api/*", "/api/v1", "/api/v1/*", "/*"]))
    return host + path


REQUEST_HOSTS = st.sampled_from(HOSTS + ["x.example.com", "x.b.a.example.com", "z.other.org"])


@settings(max_examples=300)
@given(st.lists(small_routes(), max_size=12), REQUEST_HOSTS, st.sampled_from(PATHS))
def test_property_table_match_is_a_matching_route_that_nothing_beats(
    texts: list[str], host: str, path: str
) -> None:
    routes = list({parse_route(text).key: parse_route(text) for text in texts}.values())
    table = RouteTable.build([(route, index) for index, route in enumerate(routes)])
    found = table.match(host, path)
    matching = [route for route in routes if route.matches(host, path)]
    if found is None:
        assert matching == []
        return
    assert found.route.matches(host, path)
    assert found.route is routes[found.target]
    assert all(route.specificity <= found.route.specificity for route in matching)


@given(route_texts(), st.sampled_from(PATHS))
def test_property_wildcard_never_matches_its_bare_suffix(text: str, path: str) -> None:
    route = parse_route(text)
    if not route.wildcard:
        route = parse_route("*." + text)
    table = RouteTable.build([(route, "t")])
    assert not route.matches(route.host, path)
    assert table.match(route.host, path) is None
    deeper = "sub." + route.host
    assert table.match(deeper, path) is not None or not route.matches_path(path)


@given(route_texts())
def test_property_specificity_is_consistent_with_route_identity(text: str) -> None:
    route = parse_route(text)
    assert isinstance(route, Route)
    assert route.specificity[0] == (0 if route.wildcard else 1)
    assert (route.path is None) == (route.path_kind is PathKind.ANY)
