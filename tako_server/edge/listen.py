"""Listening sockets shared between edge processes with ``SO_REUSEPORT``.

Rules: the main process opens every listening socket (one per serving process and
port, all bound to the same address with ``SO_REUSEPORT``; the first one picks the port
when 0 is asked) and hands each worker its own by descriptor inheritance, so the kernel
spreads new connections over them. Because the main keeps a reference, a restarted
worker gets the same socket back and a takeover successor (``tako_server.upgrade``)
inherits them: connections waiting in an accept queue are never reset. A serving
process serves on a duplicate (``dup``), which its server closes when it stops.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence

from .http1 import ClientProtocol
from .runtime import EdgeRuntime

BACKLOG = 4096
HANDSHAKE_TIMEOUT = 10.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound (not listening) TCP socket with ``SO_REUSEADDR`` and ``SO_REUSEPORT``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def open_listeners(
    host: str, port: int, count: int, inherited: Sequence[socket.socket] = ()
) -> list[socket.socket]:
    """At least ``count`` listening sockets on ``host:port``: the inherited ones (their
    port wins) plus new ``SO_REUSEPORT`` ones."""
    socks = list(inherited)
    if socks:
        port = socks[0].getsockname()[1]
    try:
        while len(socks) < count:
            sock = bind_socket(host, port)
            sock.listen(BACKLOG)
            socks.append(sock)
            port = sock.getsockname()[1]
    except OSError:
        for sock in socks[len(inherited) :]:
            sock.close()
        raise
    return socks


async def serve_sockets(
    rt: EdgeRuntime,
    http: Sequence[socket.socket],
    https: Sequence[socket.socket],
    ssl_context: ssl.SSLContext,
) -> list[asyncio.Server]:
    """Serve on listening sockets this process owns (the servers close them on stop)."""
    loop = asyncio.get_running_loop()
    if rt.config.proxy_protocol:  # a PROXY header first from trusted proxies (proxyproto)
        from .proxyproto import ProxyGate

        servers = []
        for sock in http:
            servers.append(
                await loop.create_server(lambda: ProxyGate(rt, None), sock=sock, backlog=BACKLOG)
            )
        for sock in https:
            servers.append(
                await loop.create_server(
                    lambda: ProxyGate(rt, ssl_context), sock=sock, backlog=BACKLOG
                )
            )
        return servers
    servers = []
    for sock in http:
        servers.append(
            await loop.create_server(lambda: ClientProtocol(rt, False), sock=sock, backlog=BACKLOG)
        )
    for sock in https:
        servers.append(
            await loop.create_server(
                lambda: ClientProtocol(rt, True),
                sock=sock,
                backlog=BACKLOG,
                ssl=ssl_context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                ssl_shutdown_timeout=rt.config.ssl_shutdown,
            )
        )
    return servers


async def serve(
    rt: EdgeRuntime,
    host: str,
    http_port: int,
    https_port: int,
    ssl_context: ssl.SSLContext,
) -> list[asyncio.Server]:
    """Listen on both ports in this process; return the servers (close them to stop)."""
    http = open_listeners(host, http_port, 1)
    https = open_listeners(host, https_port, 1)
    return await serve_sockets(rt, http, https, ssl_context)
