"""A request that meets a stale pooled upstream connection is sent again on a new one,
whole: an empty chunked body keeps its end marker (it used to be lost, and the app waited
for it until the response timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tako_server.edge import Backend
from tests.integration.test_edge_harness import FixedHooks, raw_exchange, start_edge

HOST = "retry.test"  # a private host: plain HTTP is served, not redirected


class StaleAfterOne:
    """An upstream that answers the first request of each connection (keep-alive) and
    closes a connection when a second request arrives on it, without answering: what a
    pooled connection the app has just timed out looks like to the edge."""

    def __init__(self) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for number in (1, 2):
                head = await reader.readuntil(b"\r\n\r\n")
                if number == 2:
                    return  # stale: close without a byte of response
                body = b""
                if b"transfer-encoding: chunked" in head.lower():
                    body = await reader.readuntil(b"0\r\n\r\n")
                self.bodies.append(body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[StaleAfterOne, int]]:
    app = StaleAfterOne()
    server = await asyncio.start_server(app.serve, "127.0.0.1", 0)
    try:
        yield app, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_an_empty_chunked_post_is_retried_whole_on_a_stale_connection(
    tmp_path: Path, upstream: tuple[StaleAfterOne, int]
) -> None:
    app, port = upstream
    hooks = FixedHooks()
    hooks.add("app/prod", [HOST], [Backend(1, "127.0.0.1", port)])
    edge = await start_edge(tmp_path, hooks, 0, response_timeout=5.0)
    try:
        first = await raw_exchange(
            edge.http_port, f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        )
        assert first.startswith(b"HTTP/1.1 200"), first
        second = await raw_exchange(
            edge.http_port,
            f"POST /x HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n"
            f"Connection: close\r\n\r\n0\r\n\r\n".encode(),
        )
    finally:
        await edge.stop(2.0)
    assert second.startswith(b"HTTP/1.1 200"), second  # not a 504 after response_timeout
    assert app.connections == 2  # the pooled one (stale), then the retry
    assert app.bodies == [b"", b"0\r\n\r\n"]
