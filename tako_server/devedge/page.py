"""The dev edge's own pages: the list of running apps, and why an app is not answering.

Rules:

- :func:`render_page` is pure: the request's host, the registry and the HTTPS port in,
  ``(status, html)`` out. A host an app owns while that app is down gets 502 with the
  reason (``exited with code 3``) and how it restarts; ``localhost`` and ``127.0.0.1`` get
  200 with every running app's URLs; any other host gets 404 with the same list (an
  unknown host, e.g. a typo in ``*.localhost``);
- :class:`PageServer` serves those pages on a loopback port the edge proxies to (the
  edge forwards the original ``Host``); it is never reachable from outside the machine;
- every value put in a page is HTML-escaped.
"""

from __future__ import annotations

import html
import socket
from collections.abc import Callable

from aiohttp import web

from tako_common.hosts import normalize_host

from .registry import LOOPBACK, DevRegistry

INDEX_HOSTS = ("localhost", "127.0.0.1")
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:3rem auto;max-width:42rem;padding:0 1rem}"
    "li{margin:.4rem 0}code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}"
)


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _app_list(registry: DevRegistry, https_port: int) -> str:
    if not len(registry):
        return "<p>No app runs under <code>tako dev</code> right now.</p>"
    items = []
    for info in registry.listing(https_port):
        links = ", ".join(
            f'<a href="{html.escape(url)}">{html.escape(url)}</a>' for url in info.urls
        )
        items.append(
            f"<li><strong>{html.escape(info.name)}</strong> ({html.escape(info.state)}): "
            f"{links}</li>"
        )
    return "<ul>" + "".join(items) + "</ul>"


def render_page(host: str, registry: DevRegistry, https_port: int) -> tuple[int, str]:
    """The status and HTML for a request that reached the page server (module rules)."""
    name = normalize_host(host)
    owner = registry.owner(name) if name else None
    if owner is not None and owner.state != "up":
        reason = owner.message or owner.state
        body = (
            f"<h1>{html.escape(owner.name)} is not running</h1>"
            f"<p>{html.escape(reason)}.</p>"
            "<p><code>tako dev</code> starts it again when a file of the app changes, or "
            "when you press <code>r</code> + Enter in its terminal.</p>"
        )
        return 502, _document(f"{owner.name}: not running", body)
    listing = _app_list(registry, https_port)
    if name in INDEX_HOSTS or owner is not None:
        return 200, _document("tako dev", "<h1>tako dev</h1>" + listing)
    body = (
        f"<h1>No app at {html.escape(name or 'this address')}</h1>"
        "<p>Apps running under <code>tako dev</code>:</p>" + listing
    )
    return 404, _document("tako dev: unknown host", body)


class PageServer:
    """An aiohttp server on a free loopback port that answers :func:`render_page`."""

    def __init__(self, registry: DevRegistry, https_port: Callable[[], int]) -> None:
        self._registry = registry
        self._https_port = https_port
        self._runner: web.AppRunner | None = None
        self.port = 0

    def __repr__(self) -> str:
        return f"PageServer(port={self.port})"

    async def start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((LOOPBACK, 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        status, text = render_page(request.host, self._registry, self._https_port())
        return web.Response(
            status=status,
            text=text,
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )
