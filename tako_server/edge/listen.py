"""Listening sockets shared between edge processes with ``SO_REUSEPORT``.

Rules: the main process opens every listening socket (one per serving process and
port, all bound to the same address with ``SO_REUSEPORT``; the first one picks the port
when 0 is asked) and hands each worker its own by descriptor inheritance, so the kernel
spreads new connections over them. Because the main keeps a reference, a restarted
worker gets the same socket back and a takeover successor (``tako_server.upgrade``)
inherits them: connections waiting in an accept queue are never reset. A serving
process serves on a duplicate (``dup``), which its :class:`Acceptor` closes when it stops.

Accepting is ours, not uvloop's ``create_server``: the libuv inside uvloop (1.45 and
later) accepts one connection per readiness event of a listening socket, and under load
one event loop iteration polls up to 48 batches of I/O events, so a worker busy with
2,500 connections took in about 48 new ones per iteration (~1.4 s): hundreds waited in
the accept queue for seconds (HTTP c5000 p99 2.7 s against nginx's 0.33 s). An
:class:`Acceptor` takes up to :data:`ACCEPT_BATCH` connections per event and hands each
to uvloop (``connect_accepted_socket``: the same transports, TLS and timeouts as its
server's); out of descriptors (``EMFILE``) it stops accepting for
:data:`ACCEPT_RETRY_DELAY` instead of spinning.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from tako_common.tasks import spawn

from .http1 import ClientProtocol
from .runtime import EdgeRuntime

log = logging.getLogger(__name__)
BACKLOG = 4096
HANDSHAKE_TIMEOUT = 10.0
ACCEPT_BATCH = 256  # connections taken per readiness event of a listening socket, at most
ACCEPT_RETRY_DELAY = 1.0  # out of descriptors or memory: accept again after this long
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Acceptor:
    """Accepts on one listening socket (owned: closed by :meth:`close`) and starts each
    connection as ``factory()`` over a uvloop transport, with TLS when ``ssl_context``."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.ssl_context = ssl_context
        self.ssl_shutdown_timeout = ssl_shutdown_timeout
        self.loop = asyncio.get_running_loop()
        self.closed = False
        # accepted connections not yet served (a task each: in their TLS handshake, or
        # waiting for their first step)
        self._starting: dict[asyncio.Task[None], socket.socket] = {}
        self._retry: asyncio.TimerHandle | None = None
        self._warned_at = 0.0
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def __repr__(self) -> str:
        kind = "https" if self.ssl_context is not None else "http"
        return f"Acceptor({kind}, fd={self.sock.fileno()}, starting={len(self._starting)})"

    def _accept(self) -> None:
        sock = self.sock
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the peer gave up while queued
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause(exc)
                    return
                raise
            task = spawn(self._start(conn), name="edge-accept")
            self._starting[task] = conn
            task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[None]) -> None:
        self._starting.pop(task, None)

    async def _start(self, conn: socket.socket) -> None:
        try:
            if self.ssl_context is None:
                await self.loop.connect_accepted_socket(self.factory, conn)
            else:
                await self.loop.connect_accepted_socket(
                    self.factory,
                    conn,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                    ssl_shutdown_timeout=self.ssl_shutdown_timeout,
                )
        except (OSError, ssl.SSLError, TimeoutError, EOFError):
            conn.close()  # a failed handshake or a peer that left: nothing to serve (the
            # transport is closed already; closing the socket again is harmless)

    def _pause(self, exc: OSError) -> None:
        """Out of descriptors (or memory): stop watching the socket for a while, or the
        loop would spin on an accept queue it cannot take from."""
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning(
                "edge: cannot accept connections (%s); retrying every %gs", exc, ACCEPT_RETRY_DELAY
            )
        self.loop.remove_reader(self.sock.fileno())
        self._retry = self.loop.call_later(ACCEPT_RETRY_DELAY, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting and close the listening socket. Connections already accepted go
        on, also those still in their TLS handshake: the drain waits for them
        (``EdgeRuntime.drain``); :meth:`abort` drops what is left after it."""
        if self.closed:
            return
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def abort(self) -> None:
        """Drop the connections still starting (after the drain)."""
        self.close()
        for task, conn in list(self._starting.items()):
            task.cancel()
            conn.close()  # a task cancelled before its first step never saw its socket
        self._starting.clear()


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


def serve_sockets(
    rt: EdgeRuntime,
    http: Sequence[socket.socket],
    https: Sequence[socket.socket],
    ssl_context: ssl.SSLContext,
) -> list[Acceptor]:
    """Serve on listening sockets this process owns (the acceptors close them on stop)."""
    if rt.config.proxy_protocol:  # a PROXY header first from trusted proxies (proxyproto)
        from .proxyproto import ProxyGate

        return [
            *(Acceptor(sock, lambda: ProxyGate(rt, None)) for sock in http),
            *(Acceptor(sock, lambda: ProxyGate(rt, ssl_context)) for sock in https),
        ]
    return [
        *(Acceptor(sock, lambda: ClientProtocol(rt, False)) for sock in http),
        *(
            Acceptor(sock, lambda: ClientProtocol(rt, True), ssl_context, rt.config.ssl_shutdown)
            for sock in https
        ),
    ]


def serve(
    rt: EdgeRuntime,
    host: str,
    http_port: int,
    https_port: int,
    ssl_context: ssl.SSLContext,
) -> list[Acceptor]:
    """Listen on both ports in this process; return the acceptors (close them to stop)."""
    http = open_listeners(host, http_port, 1)
    https = open_listeners(host, https_port, 1)
    return serve_sockets(rt, http, https, ssl_context)
