"""What the edge knows about the world: the snapshot pushed to it, and its compiled form.

Rules:

- :class:`Backend` is THE backend value of the server: the supervisor makes them, the
  routing state (:mod:`tako_server.routing`) collects them and the edge routes with them,
  all without conversion (a frozen, slotted dataclass; equal by value).
- :class:`EdgeSnapshot` / :class:`EdgeApp` are what the rest of the server pushes to the
  edge (:meth:`tako_server.edge.server.Edge.update`); they travel to worker processes as
  the ``snapshot`` message of :mod:`.messages`.
- This module (like every module a worker imports) imports no other part of the server.
- A snapshot is compiled once per change into an immutable :class:`EdgeState` (route
  table + :class:`RoutedApp` per app), swapped whole; request handling only reads it.
- Route lookups are memoised per ``(host, path)`` in the state (bounded, and thrown away
  with the state), so repeated requests cost one dict lookup.
- A snapshot whose routes conflict or do not parse is refused with the library error
  (the caller keeps the previous state); routes pointing at unknown apps answer 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tako_common.routes import RouteMatch, RouteTable

from .clientaddr import AUTO, MODES

ROUTE_CACHE_SIZE = 8192

__all__ = ["Backend", "EdgeApp", "EdgeSnapshot", "EdgeState", "ImageRules", "RoutedApp"]


@dataclass(frozen=True, slots=True)
class Backend:
    """One routable instance: where the edge sends requests."""

    instance_id: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ImageRules:
    """An app's ``[images]``: what ``/_tako/image`` may read and produce, and where its
    results are cached (a directory of the app's own, under the data dir)."""

    local_patterns: tuple[str, ...]
    remote_patterns: tuple[str, ...]
    sizes: tuple[int, ...]
    qualities: tuple[int, ...]
    formats: tuple[str, ...]
    cache_dir: str


@dataclass(frozen=True)
class EdgeApp:
    """One app as the edge sees it: where to send requests and what to serve itself.

    ``maintenance`` is the maintenance page's message while the app is in maintenance
    mode (``""``: the default sentence), else None; ``images`` is None without
    ``[images]`` (no image endpoint)."""

    key: str
    backends: tuple[Backend, ...]
    public_dir: str | None
    cold_start: bool
    maintenance: str | None = None
    images: ImageRules | None = None
    source_ip: str = "auto"  # docs/source-ip.md


@dataclass(frozen=True)
class EdgeSnapshot:
    """Routes ``(route text, app key)`` and the apps they point to."""

    routes: tuple[tuple[str, str], ...] = ()
    apps: Mapping[str, EdgeApp] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoutedApp:
    """An app compiled for request handling."""

    key: str
    backends: tuple[Backend, ...]
    public_dir: Path | None
    cold_start: bool
    maintenance: str | None = None
    images: ImageRules | None = None
    source_ip: int = AUTO  # a clientaddr mode


@dataclass(frozen=True)
class EdgeState:
    """The compiled, immutable view a process routes requests with."""

    table: RouteTable[str]
    apps: Mapping[str, RoutedApp]
    _cache: dict[tuple[str, str], tuple[RouteMatch[str], RoutedApp] | None] = field(
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
            key: RoutedApp(
                key=key,
                backends=app.backends,
                public_dir=Path(app.public_dir) if app.public_dir else None,
                cold_start=app.cold_start,
                maintenance=app.maintenance,
                images=app.images,
                source_ip=MODES.get(app.source_ip, AUTO),
            )
            for key, app in snapshot.apps.items()
        }
        return cls(table, apps)

    def route(self, host: str, path: str) -> tuple[RouteMatch[str], RoutedApp] | None:
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

    def _route(self, host: str, path: str) -> tuple[RouteMatch[str], RoutedApp] | None:
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
