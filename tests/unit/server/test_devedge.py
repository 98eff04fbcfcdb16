"""The dev edge's pure parts: the registry (one app per name, one owner per route, the
snapshot by app state, URLs), the pages it serves itself, the port candidates and the
/proc/net/tcp reading that names a port's holder."""

from __future__ import annotations

import pytest

from tako_server.devedge.page import render_page
from tako_server.devedge.ports import HTTP_DEFAULTS, HTTPS_DEFAULTS, candidates, listening_inodes
from tako_server.devedge.registry import (
    INDEX_KEY,
    DevApp,
    DevRefused,
    DevRegistry,
    route_url,
)
from tako_server.edge.snapshot import Backend, EdgeState


def app(name: str, *routes: str, pid: int = 10) -> DevApp:
    return DevApp(name, routes or (f"{name}.localhost",), f"/src/{name}", None, pid)


def registry(*apps: DevApp) -> DevRegistry:
    reg = DevRegistry()
    for item in apps:
        reg.add(item)
    return reg


def test_a_second_session_of_one_app_is_refused_with_how_to_stop_it() -> None:
    reg = registry(app("web", pid=42))
    with pytest.raises(DevRefused) as caught:
        reg.add(app("web", pid=43))
    assert "pid 42" in caught.value.message and "tako dev stop web" in (caught.value.hint or "")


def test_a_route_another_app_owns_is_refused_and_changes_nothing() -> None:
    reg = registry(app("web", "web.localhost", "shop.test"))
    with pytest.raises(DevRefused, match="shop.test"):
        reg.add(app("api", "api.localhost", "SHOP.test"))
    assert [a.name for a in reg] == ["web"]
    reg.add(app("api", "api.localhost", "shop.test/api/*"))  # more specific: fine
    assert [a.name for a in reg] == ["api", "web"]


@pytest.mark.parametrize(
    ("state", "port", "backends", "cold_start"),
    [
        ("starting", None, (), True),
        ("up", 4100, (Backend(1, "127.0.0.1", 4100),), False),
        ("down", None, (Backend(0, "127.0.0.1", 9000),), False),
    ],
)
def test_the_snapshot_routes_an_app_by_its_state(
    state: str, port: int | None, backends: tuple[Backend, ...], cold_start: bool
) -> None:
    reg = registry(app("web"))
    reg.set_state("web", state, port)  # type: ignore[arg-type]
    snap = reg.snapshot(page_port=9000)
    edge_app = snap.apps["web"]
    assert (edge_app.backends, edge_app.cold_start) == (backends, cold_start)
    compiled = EdgeState.compile(snap)
    found = compiled.route("web.localhost", "/")
    assert found is not None and found[1].key == "web"


def test_index_routes_catch_unknown_localhost_names_but_never_an_apps_route() -> None:
    reg = registry(app("web"))
    state = EdgeState.compile(reg.snapshot(page_port=9000))
    for host in ("localhost", "typo.localhost", "127.0.0.1"):
        found = state.route(host, "/")
        assert found is not None and found[1].key == INDEX_KEY, host
    assert state.route("elsewhere.test", "/") is None
    reg.add(app("home", "localhost"))
    assert "localhost" not in reg.index_routes()
    state = EdgeState.compile(reg.snapshot(page_port=9000))
    found = state.route("localhost", "/")
    assert found is not None and found[1].key == "home"


@pytest.mark.parametrize(
    ("route", "port", "url"),
    [
        ("web.localhost", 443, "https://web.localhost/"),
        ("web.localhost", 47831, "https://web.localhost:47831/"),
        ("api.test/v1/*", 47831, "https://api.test:47831/v1/"),
        ("api.test/health", 443, "https://api.test/health"),
        ("*.web.test", 443, "https://*.web.test/"),
    ],
)
def test_urls(route: str, port: int, url: str) -> None:
    assert route_url(route, port) == url


def test_pages_say_why_an_app_is_down_and_list_the_running_apps() -> None:
    reg = registry(app("web"), app("api"))
    reg.set_state("web", "down", None, "exited with code 3")
    status, text = render_page("web.localhost:47831", reg, 47831)
    assert status == 502 and "exited with code 3" in text and "r</code> + Enter" in text
    status, text = render_page("localhost", reg, 47831)
    assert status == 200 and "https://api.localhost:47831/" in text
    status, text = render_page("typo.localhost", reg, 47831)
    assert status == 404 and "https://web.localhost:47831/" in text


def test_page_values_are_escaped() -> None:
    reg = registry(app("web"))
    reg.set_state("web", "down", None, "<script>x</script>")
    _, text = render_page("web.localhost", reg, 443)
    assert "<script>x" not in text and "&lt;script&gt;" in text


def test_an_empty_registry_says_so() -> None:
    status, text = render_page("localhost", DevRegistry(), 443)
    assert status == 200 and "No app runs" in text


def test_port_candidates() -> None:
    assert candidates(None, HTTPS_DEFAULTS) == (443, 47831)
    assert candidates(None, HTTP_DEFAULTS) == (80, 47830, 0)
    assert candidates(5000, HTTPS_DEFAULTS) == (5000,)


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:BAD7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81234 1
   1: 00000000:BAD7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81235 1
   2: 0100007F:BAD7 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 81236 1
   3: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1
   4: garbage
"""


def test_listening_inodes_are_the_listen_rows_of_the_port() -> None:
    assert listening_inodes(PROC_NET_TCP, 0xBAD7) == {81234, 81235}
    assert listening_inodes(PROC_NET_TCP, 80) == {555}
    assert listening_inodes(PROC_NET_TCP, 443) == set()
