"""The PROXY protocol (v1 and v2) on the edge's listeners, when the server enables it.

Rules (docs/source-ip.md):

- Only with ``[source_ip] proxy_protocol = true``; otherwise listeners serve
  :class:`~.http1.ClientProtocol` directly and nothing here runs.
- A connection from a ``trusted_proxies`` address must start with a PROXY header (as
  HAProxy's ``accept-proxy``); the bytes after the header are handed on untouched (to
  the HTTP parser, or to the TLS layer that this gate puts on the same transport, as
  ``create_server(ssl=...)`` would). Its source address becomes the client's
  (``LOCAL``/``UNKNOWN``: the proxy's own address). A malformed header, or none, closes
  the connection and counts ``proxy_protocol_errors``; so does a header not complete
  within ``header_timeout``.
- A connection from anyone else is served at once as if the setting were off: a PROXY
  header from it is never parsed (HTTP answers 400, TLS fails its handshake) — refused.
- The cost is per connection only (one cached range lookup); requests pay nothing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto

from .clientaddr import ProxyHeaderError, parse_proxy_header
from .http1 import ClientProtocol
from .runtime import EdgeRuntime

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10


class ProxyGate(asyncio.Protocol):
    """The first moments of a connection: PROXY header (trusted peers), then HTTP(S)."""

    def __init__(self, rt: EdgeRuntime, ssl_context: ssl.SSLContext | None) -> None:
        self.rt = rt
        self.ssl_context = ssl_context
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"ProxyGate(tls={self.ssl_context is not None}, read={len(self.buf)})"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        hop = (peer[0] if peer else "").encode("ascii")
        if hop not in self.rt.trusted:
            self._hand_over(b"", b"")
            return
        timeout = self.rt.config.header_timeout
        self._timer = self.rt.loop.call_later(timeout, self._refuse, "no PROXY header in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            parsed = parse_proxy_header(self.buf)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if parsed is None:
            return  # more to come (parse_proxy_header bounds the length)
        used, src, client_tls = parsed
        self._cancel_timer()
        self._hand_over(src or b"", self.buf[used:], client_tls=client_tls)
        self.buf = b""

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, reason: str) -> None:
        self._cancel_timer()
        self.rt.meter.count("proxy_protocol_errors", None)
        log.debug("PROXY header refused: %s", reason)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def _hand_over(self, src: bytes, rest: bytes, *, client_tls: bool = False) -> None:
        """The connection becomes a :class:`ClientProtocol` (through TLS on the HTTPS
        port); ``rest`` (bytes after the header) is fed to it as if just received."""
        transport = self.transport
        assert transport is not None
        client = ClientProtocol(self.rt, self.ssl_context is not None)
        client.peer_ip = src  # b"": connection_made takes the TCP peer
        if client_tls:  # TLS ended at the proxy (send-proxy-v2-ssl): no redirect, https
            client.proto = b"https"
        if self.ssl_context is None:
            transport.set_protocol(client)
            client.connection_made(transport)
            if rest:
                client.data_received(rest)
            return
        waiter = self.rt.loop.create_future()  # a failed handshake is not an error here
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        tls = sslproto.SSLProtocol(
            self.rt.loop, client, self.ssl_context, waiter, server_side=True,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=self.rt.config.ssl_shutdown,
        )  # fmt: skip
        transport.set_protocol(tls)
        tls.connection_made(transport)  # the handshake; then client.connection_made
        if rest:
            view = tls.get_buffer(len(rest))
            view[: len(rest)] = rest
            tls.buffer_updated(len(rest))
