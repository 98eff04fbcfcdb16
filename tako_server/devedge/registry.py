"""Which apps the dev edge serves, and what the edge must route for them (pure).

Rules:

- one :class:`DevApp` per app name: a second ``tako dev`` of the same app is refused, and
  so is a route another app already owns (the same normalised route; a more or less
  specific overlap is not a conflict, as in production);
- the edge snapshot (:meth:`DevRegistry.snapshot`) routes each app by its state: ``up``
  -> its port; ``starting`` -> no backend and a cold start (requests wait until it is up);
  ``down`` -> the status page server, which answers a 502 page saying why;
- the *index* routes ``localhost``, ``*.localhost`` and ``127.0.0.1`` go to the page
  server (a page listing every running app), except a route an app claims itself; an app
  host always wins over ``*.localhost`` because an exact host is more specific;
- URLs are ``https://{host}[:{port}]{path}``, the port left out when it is 443.

Nothing here does I/O; the service (:mod:`.service`) owns the sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from tako_common.errors import TakoError
from tako_common.protocol.dev import DevAppInfo, DevStateName
from tako_common.routes import PathKind, Route, RouteTable, find_conflicts, parse_route
from tako_server.edge.snapshot import Backend, EdgeApp, EdgeSnapshot

INDEX_KEY = "_index"
INDEX_ROUTES = ("localhost", "*.localhost", "127.0.0.1")
LOOPBACK = "127.0.0.1"
APP_INSTANCE = 1
PAGE_INSTANCE = 0


class DevRefused(TakoError):
    """A registration the dev edge cannot accept (name taken, route owned, ...)."""

    code = "dev_refused"


@dataclass(frozen=True)
class DevApp:
    """One app under ``tako dev``: its routes, where it runs and what state it is in."""

    name: str
    routes: tuple[str, ...]
    app_dir: str
    public_dir: str | None
    pid: int
    state: DevStateName = "starting"
    port: int | None = None
    message: str = ""


def route_url(route: str | Route, https_port: int) -> str:
    """The URL a developer opens for ``route`` (wildcard hosts stay ``*.x``)."""
    parsed = route if isinstance(route, Route) else parse_route(route)
    port = "" if https_port == 443 else f":{https_port}"
    if parsed.path is None:
        path = "/"
    elif parsed.path_kind is PathKind.PREFIX:
        path = parsed.path.rstrip("/") + "/"
    else:
        path = parsed.path
    return f"https://{parsed.host_pattern}{port}{path}"


class DevRegistry:
    """The apps of the dev edge, by name."""

    def __init__(self) -> None:
        self._apps: dict[str, DevApp] = {}

    def __repr__(self) -> str:
        states = {name: app.state for name, app in sorted(self._apps.items())}
        return f"DevRegistry({states})"

    def __len__(self) -> int:
        return len(self._apps)

    def __iter__(self) -> Iterator[DevApp]:
        return iter(sorted(self._apps.values(), key=lambda app: app.name))

    def get(self, name: str) -> DevApp | None:
        return self._apps.get(name)

    def add(self, app: DevApp) -> None:
        """Take ``app`` in; :class:`DevRefused` when its name or a route is taken."""
        current = self._apps.get(app.name)
        if current is not None:
            raise DevRefused(
                f"app {app.name!r} already runs under tako dev (pid {current.pid}, "
                f"{current.app_dir})",
                hint=f"stop it first with `tako dev stop {app.name}`",
            )
        owned = {name: other.routes for name, other in self._apps.items()}
        conflicts = find_conflicts(owned, app.name, app.routes)
        if conflicts:
            raise DevRefused(
                str(conflicts[0]),
                hint="each route may belong to one app: change [envs.development] routes",
            )
        self._apps[app.name] = app

    def set_state(
        self, name: str, state: DevStateName, port: int | None, message: str = ""
    ) -> DevApp:
        """Record the app's new state (KeyError when it is not registered)."""
        app = replace(self._apps[name], state=state, port=port, message=message)
        self._apps[name] = app
        return app

    def remove(self, name: str) -> DevApp | None:
        return self._apps.pop(name, None)

    def owner(self, host: str, path: str = "/") -> DevApp | None:
        """The app whose route serves ``host`` + ``path`` (index routes excluded)."""
        table: RouteTable[str] = RouteTable.build(
            (route, app.name) for app in self._apps.values() for route in app.routes
        )
        found = table.match(host, path)
        return self._apps.get(found.target) if found is not None else None

    def index_routes(self) -> list[str]:
        """The index routes no app claims itself."""
        claimed = {parse_route(r).key for app in self._apps.values() for r in app.routes}
        return [r for r in INDEX_ROUTES if parse_route(r).key not in claimed]

    def snapshot(self, page_port: int) -> EdgeSnapshot:
        """What the edge routes with now (see the module rules)."""
        page = (Backend(PAGE_INSTANCE, LOOPBACK, page_port),)
        routes = [(route, app.name) for app in self for route in app.routes]
        routes += [(route, INDEX_KEY) for route in self.index_routes()]
        apps = {INDEX_KEY: EdgeApp(INDEX_KEY, page, None, False)}
        for app in self:
            if app.state == "up" and app.port is not None:
                backends: tuple[Backend, ...] = (Backend(APP_INSTANCE, LOOPBACK, app.port),)
            elif app.state == "down":
                backends = page
            else:
                backends = ()
            apps[app.name] = EdgeApp(app.name, backends, app.public_dir, not backends)
        return EdgeSnapshot(routes=tuple(routes), apps=apps)

    def info(self, app: DevApp, https_port: int) -> DevAppInfo:
        return DevAppInfo(
            name=app.name,
            urls=[route_url(route, https_port) for route in app.routes],
            state=app.state,
            port=app.port,
            pid=app.pid,
            app_dir=app.app_dir,
            message=app.message,
        )

    def listing(self, https_port: int) -> list[DevAppInfo]:
        return [self.info(app, https_port) for app in self]
