"""The edge's upstream pool against a real loopback server: a burst of requests opens at
most ``max_connecting`` connections at once per backend, a request in line gets the first
connection released or opened (in the very call that releases it: no event-loop turn in
between), first come first served, waits are bounded by the connect timeout and lose
nothing, a failed connect fails the oldest request at once, and idle connections close
after the idle timeout."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tako_server.edge.links import UpstreamLink
from tako_server.edge.upstream import UpstreamConnection, UpstreamPool


class Waiter:
    """A request in line (``links.PoolWaiter``): keeps what the pool hands it."""

    def __init__(self, wants: bool = True) -> None:
        self.wants = wants
        self.done: asyncio.Future[UpstreamConnection] = asyncio.get_running_loop().create_future()

    def upstream_ready(self, conn: UpstreamLink) -> bool:
        if not self.wants or self.done.done():
            return False
        assert isinstance(conn, UpstreamConnection)
        self.done.set_result(conn)
        return True

    def upstream_unavailable(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def acquire(pool: UpstreamPool, addr: tuple[str, int]) -> UpstreamConnection:
    """What a request does: an idle connection, else wait in line for one."""
    conn = pool.take(addr)
    if conn is not None:
        return conn
    waiter = Waiter()
    pool.wait(addr, waiter)
    return await waiter.done


async def settled(pool: UpstreamPool, addr: tuple[str, int]) -> None:
    """Wait until no connect is under way (bounded)."""
    deadline = time.monotonic() + 5
    while pool.connecting(addr) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert pool.connecting(addr) == 0


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
        conn = await acquire(pool, addr)
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
        await settled(pool, addr)
    finally:
        watcher.cancel()
    assert len(got) == 200
    assert 1 <= peak <= 5, peak
    assert pool.waiting(addr) == 0
    assert app.accepted == pool.idle(addr) < 200  # released connections served waiting requests
    assert len({id(c) for c in got}) <= pool.idle(addr)
    pool.close_all()


async def test_a_released_connection_goes_to_the_waiting_request_in_the_same_call(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    """No future, no task, no event-loop turn between the release and the hand-over: under
    load uvloop runs those only after a whole batch of I/O events (seconds at c5000)."""
    app, addr = server
    pool = UpstreamPool(5.0, 10, max_connecting=1)
    first = await acquire(pool, addr)
    await settled(pool, addr)
    pool._connecting[addr] = 1  # as if a connect were under way: the next request waits
    waiter = Waiter()
    pool.wait(addr, waiter)
    assert not waiter.done.done() and pool.waiting(addr) == 1
    pool.put(first)
    assert waiter.done.done()  # already, inside put()
    assert waiter.done.result() is first and first.reused
    assert pool.waiting(addr) == 0 and pool.idle(addr) == 0
    del pool._connecting[addr]
    pool.put(first)
    assert pool.idle(addr) == 1
    pool.close_all()
    await asyncio.sleep(0.05)
    assert app.accepted == 1


async def test_a_request_that_no_longer_wants_a_connection_is_passed_over(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    _, addr = server
    pool = UpstreamPool(5.0, 10, max_connecting=1)
    conn = await acquire(pool, addr)
    await settled(pool, addr)
    pool._connecting[addr] = 1
    gone, live = Waiter(wants=False), Waiter()
    pool.wait(addr, gone)
    pool.wait(addr, live)
    pool.put(conn)
    assert live.done.result() is conn and not gone.done.done()
    pool.put(conn)  # nobody waits now: idle, not lost
    gone2 = Waiter(wants=False)
    pool.wait(addr, gone2)
    second = pool.take(addr)
    assert second is conn
    pool.put(second)  # the only one in line declines: kept idle
    assert pool.idle(addr) == 1 and pool.waiting(addr) == 0
    del pool._connecting[addr]
    pool.close_all()


async def test_waits_are_bounded_by_the_connect_timeout_and_connects_by_theirs(
    full_backlog: tuple[str, int],
) -> None:
    """Against a backend whose connects hang, every request in line fails at its own
    deadline (the runtime's sweep calls ``expire``); the connects time out too, and fail
    nobody by themselves (under load a slow connect is often the loop, not the app)."""
    pool = UpstreamPool(0.3, 10, max_connecting=1)

    async def sweep() -> None:  # as EdgeRuntime._sweep does every tick
        while True:
            await asyncio.sleep(0.05)
            pool.expire(time.monotonic())

    sweeper = asyncio.ensure_future(sweep())
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(acquire(pool, full_backlog) for _ in range(3)), return_exceptions=True
        )
    finally:
        sweeper.cancel()
    took = time.monotonic() - started
    assert all(isinstance(r, TimeoutError) for r in results), results
    assert all("no connection within 0.3s" in str(r) for r in results), results
    assert 0.3 <= took < 1.0, took
    await settled(pool, full_backlog)
    assert pool.waiting(full_backlog) == 0


async def test_a_connect_that_times_out_fails_no_request_in_line(
    full_backlog: tuple[str, int],
) -> None:
    pool = UpstreamPool(0.2, 10, max_connecting=1)
    waiter = Waiter()
    pool.wait(full_backlog, waiter)  # starts the one connect, which hangs
    await asyncio.sleep(0.5)  # it timed out by now (no sweep runs here)
    assert pool.connecting(full_backlog) == 1  # the next connect for the line is under way
    assert not waiter.done.done() and pool.waiting(full_backlog) == 1
    pool.expire(time.monotonic())
    assert isinstance(waiter.done.exception(), TimeoutError)
    for task in list(pool._tasks):
        task.cancel()
    await settled(pool, full_backlog)


async def test_a_request_waiting_past_the_connect_timeout_is_failed_by_the_sweep(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    _, addr = server
    pool = UpstreamPool(0.5, 10, max_connecting=1)
    pool._connecting[addr] = 1  # the one connect slot is taken: the requests only wait
    early, later = Waiter(), Waiter()
    pool.wait(addr, early)
    now = time.monotonic()
    pool._waiters[addr][0].deadline = now - 0.01  # waited its 0.5 s already
    pool.wait(addr, later)
    pool.expire(now)
    assert isinstance(early.done.exception(), TimeoutError)
    assert not later.done.done() and pool.waiting(addr) == 1
    pool.expire(now + 1.0)
    assert isinstance(later.done.exception(), TimeoutError)
    assert pool.waiting(addr) == 0
    del pool._connecting[addr]


async def test_a_failed_connect_fails_the_oldest_waiting_request_at_once() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    addr = closed.getsockname()
    closed.close()  # nothing listens there: every connect is refused
    pool = UpstreamPool(5.0, 10, max_connecting=2)
    started = time.monotonic()
    results = await asyncio.gather(*(acquire(pool, addr) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionRefusedError) for r in results), results
    assert time.monotonic() - started < 2.0
    await settled(pool, addr)
    assert pool.waiting(addr) == 0


async def test_idle_connections_close_after_the_idle_timeout(
    server: tuple[Counting, tuple[str, int]],
) -> None:
    _, addr = server
    pool = UpstreamPool(5.0, 10, idle_timeout=30.0)
    old, new = await acquire(pool, addr), await acquire(pool, addr)
    await settled(pool, addr)
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
    """Released and newly opened connections go to the oldest request in line; a request
    that arrives later waits behind it."""
    _, addr = server
    pool = UpstreamPool(5.0, 10, max_connecting=1)
    conns = [await acquire(pool, addr) for _ in range(2)]
    await settled(pool, addr)
    pool._connecting[addr] = 1  # a connect under way: the next requests wait
    first, second = Waiter(), Waiter()
    pool.wait(addr, first)
    pool.wait(addr, second)
    pool.put(conns[0])
    late = Waiter()
    pool.wait(addr, late)  # arrives as the second connection is released...
    pool.put(conns[1])  # ...which is "second"'s: it waited longer
    assert first.done.result() is conns[0] and second.done.result() is conns[1]
    assert not late.done.done()
    del pool._connecting[addr]
    pool._open_more(addr)  # a connect for the one still in line
    third = await asyncio.wait_for(late.done, 5)
    await settled(pool, addr)
    assert pool.waiting(addr) == 0
    for conn in [*conns, third]:
        conn.close()


class Recorder:
    """An exchange (``links.ExchangeLink``) and its client (``links.Sink``) in one: keeps
    every event; releases a keep-alive connection as the proxy does."""

    closed = False
    write_paused = False

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.done = asyncio.get_running_loop().create_future()

    def write(self, data: bytes) -> None:
        self.events.append(("write", data))

    def cork(self) -> None: ...
    def flush(self) -> None: ...
    def block_reading(self, reason: int) -> None: ...
    def unblock_reading(self, reason: int) -> None: ...

    def upstream_interim(self, status: int, reason: bytes, headers: object) -> None:
        self.events.append(("interim", status))

    def upstream_head(self, status: int, reason: bytes, headers: object) -> None:
        self.events.append(("head", status))

    def upstream_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def upstream_complete(self, conn: UpstreamLink, keep_alive: bool) -> None:
        self.events.append(("complete", keep_alive))
        if keep_alive:
            conn.release()
        else:
            conn.close()
        if not self.done.done():
            self.done.set_result(None)

    def upstream_spliced(self, rest: bytes) -> None:
        self.events.append(("spliced", rest))

    def upstream_failed(self, conn: UpstreamLink, detail: str) -> None:
        self.events.append(("failed", detail))

    def upstream_lost(self, conn: UpstreamLink, exc: Exception | None) -> None:
        self.events.append(("lost", exc))


async def _answer_with(reply: bytes) -> tuple[asyncio.Server, tuple[str, int]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, ("127.0.0.1", srv.sockets[0].getsockname()[1])


async def request_and_one_in_line(
    pool: UpstreamPool, addr: tuple[str, int]
) -> tuple[UpstreamConnection, Recorder, Waiter]:
    """A request sent on a fresh connection, and a second request in line that only this
    connection can serve (the connect slot is taken)."""
    conn = await acquire(pool, addr)
    await settled(pool, addr)
    first, after = Recorder(), Waiter()
    conn.start(first, first, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False)
    pool._connecting[addr] = 1
    pool.wait(addr, after)
    return conn, first, after


@pytest.mark.parametrize(
    "extra",
    [b"GARBAGE", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad", b"HTTP/1.1 101 X\r\n\r\n"],
    ids=["garbage", "second-response", "upgrade"],
)
async def test_bytes_after_a_response_reach_no_exchange_and_the_connection_is_not_reused(
    extra: bytes,
) -> None:
    """An app that sends more than its response (a wrong Content-Length, a stray second
    response) loses the connection; the exchange gets its response and nothing else."""
    srv, addr = await _answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + extra)
    pool = UpstreamPool(5.0, 10)
    try:
        conn, first, after = await request_and_one_in_line(pool, addr)
        await asyncio.wait_for(first.done, 5)
        await asyncio.sleep(0.05)
        assert first.events == [("head", 200), ("body", b"ok"), ("complete", True)]
        assert conn.closed and pool.idle(addr) == 0
        assert not after.done.done()  # never handed a connection with stray bytes
        del pool._connecting[addr]
    finally:
        pool.close_all()
        srv.close()


async def test_a_connection_released_while_its_response_is_parsed_is_handed_over_after() -> None:
    srv, addr = await _answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pool = UpstreamPool(5.0, 10)
    try:
        conn, first, after = await request_and_one_in_line(pool, addr)
        await asyncio.wait_for(first.done, 5)
        assert await asyncio.wait_for(after.done, 1) is conn  # in the same callback, after
        assert not conn.closed and conn.reused and not conn.feeding
        assert first.events == [("head", 200), ("body", b"ok"), ("complete", True)]
        second = Recorder()
        conn.start(second, second, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False)
        await asyncio.wait_for(second.done, 5)
        assert second.events == [("head", 200), ("body", b"ok"), ("complete", True)]
        assert pool.idle(addr) == 1  # back in the pool once nobody waits
        del pool._connecting[addr]
    finally:
        pool.close_all()
        srv.close()
