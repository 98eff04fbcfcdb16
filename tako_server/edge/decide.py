"""Where a request goes: the edge's routing decision as one pure function.

Rules:

- :func:`decide` reads only its arguments (the parsed request head, the routing state
  and two facts about the connection) and returns ``(Route, detail)``; it does no I/O and
  keeps no state, so a table test covers it (``tests/unit/server/test_edge_decide.py``).
- Order of checks: ACME challenge, HTTPS redirect (see :func:`.policy.should_redirect`),
  ``tako.internal/status``, route lookup (none: 404), maintenance mode (every request of
  the app: 503 page), the image endpoint (:data:`IMAGE_PATH`, also under a path route's
  prefix, for an app with ``[images]``), static candidate (``GET``/``HEAD``, an app with
  a ``public/`` directory and a path with a file extension), then the app: proxy to a
  backend, cold start, or 503 when it has neither.
- A static candidate is only a candidate: whether the file exists is I/O, so the shell
  asks the file system and falls back to :func:`app_route` when it does not.
- ``detail`` per route: ``CHALLENGE`` the token (``None``: malformed, 404), ``REDIRECT``
  the ``Location`` bytes, ``STATUS``/``NOT_FOUND`` ``None``, every other route the
  state's ``(RouteMatch, RoutedApp)`` pair (cached by the state: no allocation).
- The kinds are :class:`Route` members; the module also binds them to plain names so
  the hot path compares with ``is``.
"""

from __future__ import annotations

import enum
from typing import Any

from tako_common.hosts import (
    acme_challenge_token,
    is_acme_challenge_path,
    is_internal_status_request,
)

from .policy import RequestHead, redirect_location, should_redirect
from .snapshot import EdgeState, RoutedApp
from .static import has_extension


class Route(enum.IntEnum):
    """What the edge does with a request."""

    CHALLENGE = 1  # answer an ACME HTTP-01 challenge
    REDIRECT = 2  # 307 to HTTPS
    STATUS = 3  # the edge's own health answer
    NOT_FOUND = 4  # no route (or a route to an unknown app)
    STATIC = 5  # try the app's public/ directory first, then app_route(app)
    PROXY = 6  # forward to one of the app's backends
    COLD_START = 7  # start the app, then forward
    UNAVAILABLE = 8  # no healthy instance and no cold start: 503
    IMAGE = 9  # the image optimizer (:mod:`.images`)
    MAINTENANCE = 10  # the app is in maintenance mode: 503 page (:mod:`.maintenance`)


CHALLENGE = Route.CHALLENGE
REDIRECT = Route.REDIRECT
STATUS = Route.STATUS
NOT_FOUND = Route.NOT_FOUND
STATIC = Route.STATIC
PROXY = Route.PROXY
COLD_START = Route.COLD_START
UNAVAILABLE = Route.UNAVAILABLE
IMAGE = Route.IMAGE
MAINTENANCE = Route.MAINTENANCE
IMAGE_PATH = "/_tako/image"
Decision = tuple[Route, Any]
_STATIC_METHODS = (b"GET", b"HEAD")


def decide(
    method: bytes,
    head: RequestHead,
    path: str,
    query: bytes,
    is_tls: bool,
    state: EdgeState,
    https_port: int,
) -> Decision:
    """The route for a request (see the module rules for the order and ``detail``)."""
    host = head.host
    if is_acme_challenge_path(path):
        return CHALLENGE, acme_challenge_token(path)
    if should_redirect(is_tls, host, path):
        return REDIRECT, redirect_location(host, path, query, https_port)
    if is_internal_status_request(host, path):
        return STATUS, None
    found = state.route(host, path)
    if found is None:
        return NOT_FOUND, None
    app = found[1]
    if app.maintenance is not None:
        return MAINTENANCE, found
    if app.images is not None and path.endswith(IMAGE_PATH):
        if path == IMAGE_PATH or path == found[0].prefix + IMAGE_PATH:
            return IMAGE, found
    if app.public_dir is not None and method in _STATIC_METHODS and has_extension(path):
        return STATIC, found
    if app.backends:  # app_route(app), inlined: this is every proxied request
        return PROXY, found
    return (COLD_START if app.cold_start else UNAVAILABLE), found


def app_route(app: RoutedApp) -> Route:
    """How a routed request reaches ``app``: a backend, a cold start, or 503."""
    if app.backends:
        return PROXY
    if app.cold_start:
        return COLD_START
    return UNAVAILABLE
