"""Maintenance mode at the edge: every request of the app gets a ``503`` page.

Rules:

- The decision is :data:`~.decide.MAINTENANCE` (before static files and the image
  endpoint; ACME challenges and ``tako.internal/status`` are answered as always). The
  app's instances keep running; the edge just does not forward to them.
- The answer: ``503 Service Unavailable`` with ``Retry-After: 60`` (:data:`RETRY_AFTER`),
  ``Cache-Control: no-store`` and an HTML page: the app's own ``public/503.html`` when
  its release has one (at most :data:`PAGE_LIMIT` bytes; self-contained, since its CSS
  and images are answered 503 too), else :func:`maintenance_page` with the message,
  HTML-escaped (an empty message gives :data:`DEFAULT_MESSAGE`). ``HEAD`` gets the head.
- ``public/503.html`` is read once per release directory, through a thread (never on
  the event loop), and remembered in this process (release directories do not change).
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .policy import Rejected, simple_response
from .snapshot import RoutedApp
from .static import resolve_static

if TYPE_CHECKING:
    from tako_common.routes import RouteMatch

    from .runtime import EdgeRuntime

RETRY_AFTER = "60"
PAGE_LIMIT = 256 * 1024
DEFAULT_MESSAGE = "This site is down for maintenance. Please try again soon."
_EXTRA = (("Retry-After", RETRY_AFTER), ("Cache-Control", "no-store"))
_HTML = "text/html; charset=utf-8"
_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Down for maintenance</title>
<style>
body{{font-family:system-ui,sans-serif;margin:0;min-height:100vh;display:flex;
align-items:center;justify-content:center;background:#f6f6f4;color:#222}}
main{{max-width:36rem;padding:2rem;text-align:center}}
h1{{font-size:1.5rem;margin:0 0 1rem}}
p{{line-height:1.5;white-space:pre-line}}
</style>
</head>
<body>
<main>
<h1>Down for maintenance</h1>
<p>{message}</p>
</main>
</body>
</html>
"""

__all__ = ["maintenance_page", "maintenance_response", "serve_maintenance"]


class MaintenanceExchange(Protocol):
    """What maintenance mode uses of an exchange."""

    rt: EdgeRuntime
    keep_alive: bool
    is_head: bool

    def respond(self, data: bytes) -> None: ...


def maintenance_page(message: str) -> bytes:
    """The built-in page, with ``message`` (or :data:`DEFAULT_MESSAGE`) HTML-escaped."""
    text = html.escape(message.strip() or DEFAULT_MESSAGE)
    return _TEMPLATE.format(message=text).encode("utf-8")


def maintenance_response(body: bytes, *, close: bool, head_only: bool) -> bytes:
    """The complete 503 answer with ``body``."""
    return simple_response(
        503, body, close=close, extra=_EXTRA, content_type=_HTML, head_only=head_only
    )


_PAGES: dict[Path, bytes | None] = {}  # public dir -> its 503.html (None: it has none)


def serve_maintenance(ex: MaintenanceExchange, detail: tuple[RouteMatch[str], RoutedApp]) -> None:
    """Answer a request of an app in maintenance mode (see the module rules)."""
    app = detail[1]
    public = app.public_dir
    if public is None or public in _PAGES:
        ex.respond(_answer(ex, app, _PAGES.get(public) if public else None))
        return
    ex.rt.spawn(_load_then_answer(ex, app, public), name=f"edge-maintenance-{app.key}")


async def _load_then_answer(ex: MaintenanceExchange, app: RoutedApp, public: Path) -> None:
    page = await asyncio.to_thread(read_page, public)
    if len(_PAGES) >= 64:
        _PAGES.clear()
    _PAGES[public] = page
    ex.respond(_answer(ex, app, page))


def read_page(public: Path) -> bytes | None:
    """The bytes of ``public/503.html``, or None (missing, unreadable, too large, or a
    link out of the public directory)."""
    try:
        found = resolve_static(public, "/503.html")
        if found is None:
            return None
        with found.path.open("rb") as handle:
            data = handle.read(PAGE_LIMIT + 1)
    except (OSError, Rejected):
        return None
    return data if len(data) <= PAGE_LIMIT else None


def _answer(ex: MaintenanceExchange, app: RoutedApp, page: bytes | None) -> bytes:
    body = page if page is not None else maintenance_page(app.maintenance or "")
    return maintenance_response(body, close=not ex.keep_alive, head_only=ex.is_head)
