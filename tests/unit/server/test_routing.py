"""RoutingState as a pure object: the app service's and the supervisor's updates in,
edge snapshots out, and a notification only when what the edge sees changed.

No database, no sockets, no clock: every test builds a RoutingState, feeds it the calls
the app service and the supervisor make, and checks the snapshot and the notifications.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tako_common.protocol import ImageSettings
from tako_server.edge.clientaddr import MODES
from tako_server.edge.snapshot import Backend, EdgeApp, EdgeSnapshot, EdgeState, ImageRules
from tako_server.routing import AppRoutes, RoutingState, image_rules

B1 = Backend(1, "127.0.0.1", 9001)
B2 = Backend(2, "127.0.0.1", 9002)
SHOP = "shop/prod"
BLOG = "blog/prod"


@dataclass
class Recorder:
    """Collects every snapshot handed to ``on_change``."""

    seen: list[EdgeSnapshot] = field(default_factory=list)

    def __call__(self, snapshot: EdgeSnapshot) -> None:
        self.seen.append(snapshot)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def routing(recorder: Recorder) -> RoutingState:
    return RoutingState(on_change=recorder)


def routed_status(snapshot: EdgeSnapshot, host: str, path: str = "/") -> str:
    """What the edge does with a request, in words: 404, proxy, cold start or 503."""
    found = EdgeState.compile(snapshot).route(host, path)
    if found is None:
        return "404"
    app = found[1]
    if app.backends:
        return f"proxy {app.key} {[b.instance_id for b in app.backends]}"
    return f"cold start {app.key}" if app.cold_start else f"503 {app.key}"


def test_a_deploy_makes_routes_and_backends_appear(
    routing: RoutingState, recorder: Recorder
) -> None:
    routing.set_backends(SHOP, (B1,), False)  # the rollout: invisible until committed
    assert routed_status(routing.snapshot, "shop.example.com") == "404"
    assert recorder.seen == []

    assert routing.set_app(SHOP, ["shop.example.com", "shop.example.com/api/*"], "/srv/public")

    assert routing.snapshot.routes == (
        ("shop.example.com", SHOP),
        ("shop.example.com/api/*", SHOP),
    )
    assert routing.snapshot.apps == {SHOP: EdgeApp(SHOP, (B1,), "/srv/public", False)}
    assert routed_status(routing.snapshot, "shop.example.com", "/api/x") == "proxy shop/prod [1]"
    assert recorder.seen == [routing.snapshot]


def test_a_stopped_app_keeps_no_routes_so_its_hosts_answer_404(
    routing: RoutingState, recorder: Recorder
) -> None:
    routing.set_app(SHOP, ["shop.example.com"], None)
    routing.set_backends(SHOP, (B1,), False)

    assert routing.set_running(SHOP, False)
    assert routing.snapshot == EdgeSnapshot()
    assert routed_status(routing.snapshot, "shop.example.com") == "404"

    assert not routing.set_backends(SHOP, (), False)  # the drain: nothing the edge sees
    assert routing.set_running(SHOP, True)  # a scale starts it again
    assert routed_status(routing.snapshot, "shop.example.com") == "503 shop/prod"
    assert len(recorder.seen) == 4  # set_app, set_backends, stop, start


def test_a_backend_change_alone_changes_the_snapshot(
    routing: RoutingState, recorder: Recorder
) -> None:
    """Only the supervisor's call: the routes come from memory, not from any store."""
    routing.set_app(SHOP, ["shop.example.com"], None)
    before = routing.snapshot

    assert routing.set_backends(SHOP, (B1, B2), False)

    assert routing.snapshot is not before
    assert routing.snapshot.routes == before.routes
    assert routing.snapshot.apps[SHOP].backends == (B1, B2)
    assert recorder.seen[-1] is routing.snapshot


def test_scaled_to_zero_app_asks_for_a_cold_start(routing: RoutingState) -> None:
    routing.set_app(SHOP, ["shop.example.com"], None)
    routing.set_backends(SHOP, (), True)
    assert routed_status(routing.snapshot, "shop.example.com") == "cold start shop/prod"
    routing.set_backends(SHOP, (B2,), False)
    assert routed_status(routing.snapshot, "shop.example.com") == "proxy shop/prod [2]"


def test_delete_removes_the_routes_and_the_supervisor_drops_the_backends(
    routing: RoutingState,
) -> None:
    routing.set_app(SHOP, ["shop.example.com"], None)
    routing.set_app(BLOG, ["blog.example.com"], None)
    routing.set_backends(SHOP, (B1,), False)

    routing.set_backends(SHOP, (), False)  # Supervisor.remove
    assert routing.remove_app(SHOP)

    assert routing.app(SHOP) is None
    assert set(routing.snapshot.apps) == {BLOG}
    assert routed_status(routing.snapshot, "shop.example.com") == "404"
    assert "live=[]" in repr(routing)


UNCHANGED: list[tuple[str, Callable[[RoutingState], bool]]] = [
    ("same backends again", lambda r: r.set_backends(SHOP, (B1,), False)),
    ("same routes and dir again", lambda r: r.set_app(SHOP, ["shop.example.com"], "/p")),
    ("same dir as a Path", lambda r: r.set_app(SHOP, ["shop.example.com"], Path("/p"))),
    ("running again", lambda r: r.set_running(SHOP, True)),
    ("backends of a stopped app", lambda r: r.set_backends(BLOG, (B2,), True)),
    ("backends of an unknown app", lambda r: r.set_backends("new/prod", (B2,), False)),
    ("starting an unknown app", lambda r: r.set_running("new/prod", True)),
    ("removing an unknown app", lambda r: r.remove_app("new/prod")),
    ("maintenance off when off", lambda r: r.set_maintenance(SHOP, None)),
    ("maintenance of a stopped app", lambda r: r.set_maintenance(BLOG, "later")),
    ("maintenance of an unknown app", lambda r: r.set_maintenance("new/prod", "later")),
]


@pytest.mark.parametrize(("what", "call"), UNCHANGED, ids=[u[0] for u in UNCHANGED])
def test_an_update_the_edge_cannot_see_notifies_nobody(
    routing: RoutingState, recorder: Recorder, what: str, call: Callable[[RoutingState], bool]
) -> None:
    routing.set_app(SHOP, ["shop.example.com"], "/p")
    routing.set_backends(SHOP, (B1,), False)
    routing.set_app(BLOG, ["blog.example.com"], None, running=False)
    snapshot, notified = routing.snapshot, len(recorder.seen)

    assert call(routing) is False, what

    assert routing.snapshot is snapshot
    assert len(recorder.seen) == notified


def test_routes_are_ordered_by_app_then_env_then_the_apps_own_order() -> None:
    routing = RoutingState()
    routing.set_app("a-b/prod", ["ab.example.com"], None)
    routing.set_app("a/staging", ["s.example.com", "a.example.com/s/*"], None)
    routing.set_app("a/prod", ["a.example.com"], None)
    assert [key for _, key in routing.snapshot.routes] == [
        "a/prod",
        "a/staging",
        "a/staging",
        "a-b/prod",
    ]
    assert routing.snapshot.routes[1:3] == (
        ("s.example.com", "a/staging"),
        ("a.example.com/s/*", "a/staging"),
    )


def test_the_app_services_half_is_readable() -> None:
    routing = RoutingState()
    routing.set_app(SHOP, ("shop.example.com",), Path("/srv/shop/public"), running=False)
    assert routing.app(SHOP) == AppRoutes(("shop.example.com",), "/srv/shop/public", False)
    assert routing.snapshot == EdgeSnapshot()  # stopped from the start: nothing to route


RULES = ImageRules(("/**",), (), (320,), (75,), ("webp",), "/data/apps/shop/prod/cache")


def test_maintenance_is_seen_by_the_edge_and_outlives_a_redeploy(
    routing: RoutingState, recorder: Recorder
) -> None:
    routing.set_app(SHOP, ["shop.example.com"], None)
    routing.set_backends(SHOP, (B1,), False)
    assert routing.set_maintenance(SHOP, "back at 5")
    assert routing.snapshot.apps[SHOP].maintenance == "back at 5"
    assert routing.snapshot.apps[SHOP].backends == (B1,)  # instances keep running
    assert routing.set_app(SHOP, ["shop.example.com", "www.shop.example.com"], None)
    assert routing.snapshot.apps[SHOP].maintenance == "back at 5"
    assert routing.set_maintenance(SHOP, "")  # another message: a change
    assert routing.snapshot.apps[SHOP].maintenance == ""
    assert routing.set_maintenance(SHOP, None)
    assert routing.snapshot.apps[SHOP].maintenance is None
    assert recorder.seen[-1] is routing.snapshot


def test_maintenance_set_before_the_app_applies_once_it_is_routed() -> None:
    """The start-up restore sets maintenance first, so no request slips through."""
    routing = RoutingState()
    assert routing.set_maintenance(SHOP, "upgrading") is False
    routing.set_app(SHOP, ["shop.example.com"], None)
    assert routing.snapshot.apps[SHOP].maintenance == "upgrading"


def test_delete_forgets_maintenance(routing: RoutingState) -> None:
    routing.set_app(SHOP, ["shop.example.com"], None)
    routing.set_maintenance(SHOP, "x")
    routing.remove_app(SHOP)
    routing.set_app(SHOP, ["shop.example.com"], None)  # deployed again later
    assert routing.snapshot.apps[SHOP].maintenance is None


def test_image_rules_travel_with_the_app_and_survive_stop_and_start(
    routing: RoutingState,
) -> None:
    routing.set_app(SHOP, ["shop.example.com"], None, images=RULES)
    assert routing.snapshot.apps[SHOP].images == RULES
    routing.set_running(SHOP, False)
    assert routing.set_running(SHOP, True)
    assert routing.snapshot.apps[SHOP].images == RULES
    assert routing.set_app(SHOP, ["shop.example.com"], None)  # a release without [images]
    assert routing.snapshot.apps[SHOP].images is None


def test_image_rules_of_a_release() -> None:
    settings = ImageSettings(sizes=[640, 320], formats=["avif", "webp"])
    rules = image_rules(settings, Path("/data/apps/shop/prod/cache"))
    assert rules == ImageRules(
        ("/**",), (), (640, 320), (75,), ("avif", "webp"), "/data/apps/shop/prod/cache"
    )
    assert image_rules(None, Path("/x")) is None


def test_source_ip_reaches_the_snapshot_and_goes_with_the_app(
    routing: RoutingState, recorder: Recorder
) -> None:
    routing.set_app(SHOP, ["shop.example.com"], None)
    assert routing.snapshot.apps[SHOP].source_ip == "auto"
    assert routing.set_source_ip(SHOP, "cloudflare-proxy")
    assert routing.snapshot.apps[SHOP].source_ip == "cloudflare-proxy"
    assert not routing.set_source_ip(SHOP, "cloudflare-proxy")  # no change, no push
    found = EdgeState.compile(routing.snapshot).route("shop.example.com", "/")
    assert found is not None and found[1].source_ip == MODES["cloudflare-proxy"]
    routing.remove_app(SHOP)
    routing.set_app(SHOP, ["shop.example.com"], None)
    assert routing.snapshot.apps[SHOP].source_ip == "auto"
