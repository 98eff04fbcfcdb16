"""The edge's upstream pool against a real loopback server: a burst of requests opens at
most ``max_connecting`` connections at once per backend, a request over that bound takes
the first connection another one releases, waits are bounded by the connect timeout and
lose nothing, and idle connections close after the idle timeout."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tako_server.edge.upstream import UpstreamConnection, UpstreamPool


class Counting:
    """A keep-alive server that only counts the connections it accepted."""

    def __init__(self) -> None:
        self.accepted = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await reader.read()
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[Counting, tuple[str, int]]]:
    app = Counting()
    srv = await asyncio.start_server(app.serve, "127.0.0.1", 0)
    try:
        yield app, ("127.0.0.1", srv.sockets[0].getsockname()[1])
    finally:
        srv.close()
        # handlers wait for their peers' EOF: the tests close every connection they make


@pytest.fixture
def full_backlog() -> Iterator[tuple[str, int]]:
    """A listener that never accepts, its queue already full: connects to it hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    addr = listener.getsockname()
    fillers = []
    try:
        for _ in range(4):  # the kernel queues backlog + 1; the rest wait in SYN retries
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.connect(addr)
            except BlockingIOError:
                pass
            fillers.append(sock)
        yield addr
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


async def test_a_burst_opens_at_most_max_connecting_at_once_and_every_request_is_served(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    app, addr = server
    pool = UpstreamPool(5.0, 1000, max_connecting=5)
    peak = 0
    got: list[UpstreamConnection] = []

    async def request() -> None:
        conn = pool.take(addr) or await pool.connect(addr)
        got.append(conn)
        await asyncio.sleep(0.005)  # the request is served
        pool.put(conn)

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, pool.connecting(addr))
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait_for(asyncio.gather(*(request() for _ in range(200))), 10)
    finally:
        watcher.cancel()
    assert len(got) == 200
    assert 1 <= peak <= 5, peak
    opened = len({id(c) for c in got})
    assert opened == pool.idle(addr) < 200  # released connections served waiting requests
    assert pool.connecting(addr) == 0 and not pool._waiters
    pool.close_all()
    await asyncio.sleep(0.05)
    assert app.accepted == opened


async def test_a_waiting_request_takes_the_connection_another_releases(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    app, addr = server
    pool = UpstreamPool(5.0, 10, max_connecting=1)
    first = await pool.connect(addr)
    pool._connecting[addr] = 1  # as if a second connect were under way: the next one waits
    waiting = asyncio.ensure_future(pool.connect(addr))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    pool.put(first)
    second = await asyncio.wait_for(waiting, 1)
    assert second is first and second.reused
    del pool._connecting[addr]
    pool.put(second)
    assert pool.idle(addr) == 1
    pool.close_all()
    await asyncio.sleep(0.05)
    assert app.accepted == 1


async def test_a_request_cancelled_as_it_is_handed_a_connection_gives_it_back(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    _, addr = server
    pool = UpstreamPool(5.0, 10, max_connecting=1)
    conn = await pool.connect(addr)
    pool._connecting[addr] = 1
    waiting = asyncio.ensure_future(pool.connect(addr))
    await asyncio.sleep(0.01)
    pool.put(conn)  # handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.take(addr) is conn  # not lost: back among the idle ones
    del pool._connecting[addr]
    conn.close()


async def test_connects_and_waits_are_bounded_by_the_connect_timeout(
    full_backlog: tuple[str, int],
) -> None:
    pool = UpstreamPool(0.3, 10, max_connecting=1)
    started = time.monotonic()
    results = await asyncio.gather(
        *(pool.connect(full_backlog) for _ in range(3)), return_exceptions=True
    )
    took = time.monotonic() - started
    assert all(isinstance(r, TimeoutError) for r in results), results
    assert took < 2.0, took
    assert pool.connecting(full_backlog) == 0


async def test_idle_connections_close_after_the_idle_timeout(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    _, addr = server
    pool = UpstreamPool(5.0, 10, idle_timeout=30.0)
    old, new = await pool.connect(addr), await pool.connect(addr)
    pool.put(old)
    pool.put(new)
    now = time.monotonic()
    assert pool.expire(now) == 0 and pool.idle(addr) == 2
    pool._idle[addr][old] = now - 31  # unused for 31 s
    assert pool.expire(now) == 1
    assert old.closed and not new.closed
    assert pool.take(addr) is new
    new.close()


async def test_requests_in_line_are_served_first_come_first_served(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    """A finished connect hands its slot to the oldest waiting request, and a request that
    arrives later waits behind it (it used to take the freed slot first, and the oldest
    request went back to the end of the line)."""
    _, addr = server
    pool = UpstreamPool(5.0, 10, max_connecting=1)
    pool._connecting[addr] = 1  # a connect under way: the next requests wait
    order: list[str] = []

    async def request(name: str) -> UpstreamConnection:
        conn = await pool.connect(addr)
        order.append(name)
        return conn

    first = asyncio.ensure_future(request("first"))
    second = asyncio.ensure_future(request("second"))
    await asyncio.sleep(0.01)
    late = asyncio.ensure_future(request("late"))  # a new request, about to run...
    pool._connect_done(addr)  # ...as the connect under way ends: its slot is "first"'s
    conns = await asyncio.wait_for(asyncio.gather(first, second, late), 5)
    assert order == ["first", "second", "late"]
    assert pool.connecting(addr) == 0 and not pool._waiters
    for conn in conns:
        conn.close()
