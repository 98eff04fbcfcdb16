"""What the edge knows about the world: the snapshot the main process hands to the edge.

Rules:

- :class:`EdgeSnapshot` / :class:`EdgeApp` are the provider-facing values (shared API);
  backends may be any object with ``instance_id``, ``host`` and ``port`` (the
  supervisor's ``Backend`` as is); the compiled state holds the edge's own copies.
- This module (like every module a worker imports) does not import the supervisor.
- A snapshot travels to worker processes as JSON (:func:`snapshot_to_wire`) and is
  compiled once per change into an immutable :class:`EdgeState` (route table + apps),
  swapped whole; request handling only reads it.
- Route lookups are memoised per ``(host, path)`` in the state (bounded, and thrown away
  with the state), so repeated requests cost one dict lookup.
- A snapshot whose routes conflict or do not parse is refused with the library error
  (the caller keeps the previous state); routes pointing at unknown apps answer 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tako_common.routes import RouteMatch, RouteTable

ROUTE_CACHE_SIZE = 8192

__all__ = [
    "AppState",
    "Backend",
    "BackendLike",
    "EdgeApp",
    "EdgeSnapshot",
    "EdgeState",
    "snapshot_from_wire",
    "snapshot_to_wire",
]


class BackendLike(Protocol):
    """Where to send requests; ``tako_server.supervisor.Backend`` fits as is."""

    @property
    def instance_id(self) -> int: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Backend:
    """The edge's own backend value (same fields as the supervisor's)."""

    instance_id: int
    host: str
    port: int


@dataclass(frozen=True)
class EdgeApp:
    """One app as the edge sees it: where to send requests and what to serve itself."""

    key: str
    backends: tuple[BackendLike, ...]
    public_dir: str | None
    cold_start: bool


@dataclass(frozen=True)
class EdgeSnapshot:
    """Routes ``(route text, app key)`` and the apps they point to."""

    routes: tuple[tuple[str, str], ...] = ()
    apps: Mapping[str, EdgeApp] = field(default_factory=dict)


def snapshot_to_wire(snapshot: EdgeSnapshot) -> dict[str, Any]:
    """A JSON-ready form of ``snapshot`` for worker processes."""
    return {
        "routes": [[text, key] for text, key in snapshot.routes],
        "apps": {
            key: {
                "backends": [[b.instance_id, b.host, b.port] for b in app.backends],
                "public_dir": app.public_dir,
                "cold_start": app.cold_start,
            }
            for key, app in snapshot.apps.items()
        },
    }


def snapshot_from_wire(data: Mapping[str, Any]) -> EdgeSnapshot:
    """Inverse of :func:`snapshot_to_wire`."""
    apps = {
        key: EdgeApp(
            key=key,
            backends=tuple(Backend(int(i), str(h), int(p)) for i, h, p in raw["backends"]),
            public_dir=raw.get("public_dir"),
            cold_start=bool(raw.get("cold_start", False)),
        )
        for key, raw in data.get("apps", {}).items()
    }
    routes = tuple((str(text), str(key)) for text, key in data.get("routes", ()))
    return EdgeSnapshot(routes=routes, apps=apps)


@dataclass(frozen=True, slots=True)
class AppState:
    """An app compiled for request handling."""

    key: str
    backends: tuple[Backend, ...]
    public_dir: Path | None
    cold_start: bool


@dataclass(frozen=True)
class EdgeState:
    """The compiled, immutable view a process routes requests with."""

    table: RouteTable[str]
    apps: Mapping[str, AppState]
    _cache: dict[tuple[str, str], tuple[RouteMatch[str], AppState] | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def empty(cls) -> EdgeState:
        return cls(RouteTable.build([]), {})

    @classmethod
    def compile(cls, snapshot: EdgeSnapshot) -> EdgeState:
        """Build the route table and app map; raises the route library's errors."""
        table: RouteTable[str] = RouteTable.build(snapshot.routes)
        apps = {
            key: AppState(
                key=key,
                backends=tuple(Backend(b.instance_id, b.host, b.port) for b in app.backends),
                public_dir=Path(app.public_dir) if app.public_dir else None,
                cold_start=app.cold_start,
            )
            for key, app in snapshot.apps.items()
        }
        return cls(table, apps)

    def route(self, host: str, path: str) -> tuple[RouteMatch[str], AppState] | None:
        """The matching route and its app, or None (-> 404); memoised per (host, path)."""
        key = (host, path)
        try:
            return self._cache[key]
        except KeyError:
            pass
        if len(self._cache) >= ROUTE_CACHE_SIZE:
            self._cache.clear()
        result = self._cache[key] = self._route(host, path)
        return result

    def _route(self, host: str, path: str) -> tuple[RouteMatch[str], AppState] | None:
        found = self.table.match(host, path)
        if found is None:
            return None
        app = self.apps.get(found.target)
        if app is None:
            return None
        return found, app

    def addresses(self) -> set[tuple[str, int]]:
        """Every backend ``(host, port)`` in this state (the pool closes the others)."""
        return {(b.host, b.port) for app in self.apps.values() for b in app.backends}

    def __repr__(self) -> str:
        return f"EdgeState(routes={len(self.table)}, apps={sorted(self.apps)})"
