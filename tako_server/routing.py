"""The routing state: what the edge must know, held in memory and fed by its two owners.

Rules:

- Pure: no I/O, no clock, no database, no asyncio. The daemon keeps one
  :class:`RoutingState`; the edge is told of each change through ``on_change``.
- Two owners, two halves, one setter each:

  - the app service (:mod:`tako_server.apps`, :mod:`tako_server.deployer`) sets each
    app's routes, public directory, image rules and whether it runs
    (:meth:`RoutingState.set_app`, :meth:`~RoutingState.set_running`,
    :meth:`~RoutingState.remove_app`) on deploy, rollback, stop, scale, delete and the
    start-up restore, and its maintenance mode (:meth:`~RoutingState.set_maintenance`,
    kept across deploys until turned off or the app is deleted), with what it already
    holds: the state database is written, never read back for routing;
  - the supervisor sets each app's backends and cold-start wish
    (:meth:`~RoutingState.set_backends`) whenever an app's machine reports a change.

- The edge sees running apps only: a stopped app keeps no routes (its hosts answer 404);
  an app the app service never set (a first deploy still rolling out, or one that
  failed) is invisible, whatever its backends.
- :attr:`RoutingState.snapshot` is the :class:`~tako_server.edge.EdgeSnapshot` of what
  the edge sees, rebuilt whole when (and only when) that changed, and then handed to
  ``on_change`` once. Every setter returns whether it changed the snapshot; an update
  the edge cannot see (the same backends again, backends of a stopped app) notifies
  nobody.
- Route order in the snapshot: apps by ``(app, env)``, each app's routes in its own order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tako_common.protocol import ImageSettings
from tako_server.edge.snapshot import Backend, EdgeApp, EdgeSnapshot, ImageRules

__all__ = ["AppRoutes", "RoutingState", "image_rules"]

Listener = Callable[[EdgeSnapshot], None]
_View = tuple[tuple[str, ...], EdgeApp] | None


@dataclass(frozen=True, slots=True)
class AppRoutes:
    """The app service's half of an app: its routes, static directory, desired state and
    image rules."""

    routes: tuple[str, ...]
    public_dir: str | None
    running: bool
    images: ImageRules | None = None


@dataclass(frozen=True, slots=True)
class _Live:
    """The supervisor's half of an app."""

    backends: tuple[Backend, ...]
    cold_start: bool


_NO_LIVE = _Live((), False)


class RoutingState:
    """Per app key: routes, public dir, running or stopped, backends, cold-start wish."""

    def __init__(self, on_change: Listener | None = None) -> None:
        self.on_change = on_change
        self._apps: dict[str, AppRoutes] = {}
        self._live: dict[str, _Live] = {}
        self._maintenance: dict[str, str] = {}
        #: ``source_ip`` per app (absent: ``auto``), what its last deploy said
        self._source_ip: dict[str, str] = {}
        self.snapshot = EdgeSnapshot()

    def __repr__(self) -> str:
        running = sum(1 for a in self._apps.values() if a.running)
        return (
            f"RoutingState(apps={len(self._apps)}, running={running},"
            f" routes={len(self.snapshot.routes)}, live={sorted(self._live)})"
        )

    # --------------------------------------------------------------- the app service's half

    def set_app(
        self,
        key: str,
        routes: Iterable[str],
        public_dir: Path | str | None,
        *,
        running: bool = True,
        images: ImageRules | None = None,
    ) -> bool:
        """Deploy, rollback, restore: the app's routes, ``public/`` directory, state and
        image rules."""
        public = str(public_dir) if public_dir is not None else None
        before = self._view(key)
        self._apps[key] = AppRoutes(tuple(routes), public, running, images)
        return self._publish_if_changed(key, before)

    def set_running(self, key: str, running: bool) -> bool:
        """Stop (``False``) or start again (``True``, e.g. a scale); unknown keys: no-op."""
        entry = self._apps.get(key)
        if entry is None or entry.running is running:
            return False
        before = self._view(key)
        self._apps[key] = AppRoutes(entry.routes, entry.public_dir, running, entry.images)
        return self._publish_if_changed(key, before)

    def set_maintenance(self, key: str, message: str | None) -> bool:
        """Maintenance mode on (``message``; ``""``: the default page text) or off (None).
        May come before :meth:`set_app` (the start-up restore sets it first)."""
        before = self._view(key)
        if message is None:
            self._maintenance.pop(key, None)
        else:
            self._maintenance[key] = message
        return self._publish_if_changed(key, before)

    def set_source_ip(self, key: str, mode: str) -> bool:
        """The app's ``source_ip`` mode (docs/source-ip.md); the edge resolves client
        addresses of its requests with it."""
        before = self._view(key)
        if mode == "auto":
            self._source_ip.pop(key, None)
        else:
            self._source_ip[key] = mode
        return self._publish_if_changed(key, before)

    def remove_app(self, key: str) -> bool:
        """Delete: forget the app's routes and maintenance mode (its backends are the
        supervisor's to drop)."""
        before = self._view(key)
        self._apps.pop(key, None)
        self._maintenance.pop(key, None)
        self._source_ip.pop(key, None)
        return self._publish_if_changed(key, before)

    def app(self, key: str) -> AppRoutes | None:
        return self._apps.get(key)

    # --------------------------------------------------------------- the supervisor's half

    def set_backends(self, key: str, backends: Sequence[Backend], cold_start: bool) -> bool:
        """The app's routable instances now, and whether a request may cold-start it."""
        before = self._view(key)
        live = _Live(tuple(backends), cold_start)
        if live == _NO_LIVE:
            self._live.pop(key, None)
        else:
            self._live[key] = live
        return self._publish_if_changed(key, before)

    # --------------------------------------------------------------- what the edge sees

    def _view(self, key: str) -> _View:
        entry = self._apps.get(key)
        if entry is None or not entry.running:
            return None
        live = self._live.get(key, _NO_LIVE)
        edge_app = EdgeApp(
            key,
            live.backends,
            entry.public_dir,
            live.cold_start,
            maintenance=self._maintenance.get(key),
            images=entry.images,
            source_ip=self._source_ip.get(key, "auto"),
        )
        return entry.routes, edge_app

    def _publish_if_changed(self, key: str, before: _View) -> bool:
        if self._view(key) == before:
            return False
        self.snapshot = self._build()
        if self.on_change is not None:
            self.on_change(self.snapshot)
        return True

    def _build(self) -> EdgeSnapshot:
        routes: list[tuple[str, str]] = []
        apps: dict[str, EdgeApp] = {}
        for key in sorted(self._apps, key=_app_env):
            view = self._view(key)
            if view is not None:
                texts, apps[key] = view
                routes.extend((text, key) for text in texts)
        return EdgeSnapshot(routes=tuple(routes), apps=apps)


def _app_env(key: str) -> tuple[str, str]:
    app, _, env = key.partition("/")
    return app, env


def image_rules(settings: ImageSettings | None, cache_dir: Path) -> ImageRules | None:
    """What the edge needs of a release's ``[images]`` (None: no image endpoint)."""
    if settings is None:
        return None
    return ImageRules(
        local_patterns=tuple(settings.local_patterns),
        remote_patterns=tuple(settings.remote_patterns),
        sizes=tuple(settings.sizes),
        qualities=tuple(settings.qualities),
        formats=tuple(settings.formats),
        cache_dir=str(cache_dir),
    )
