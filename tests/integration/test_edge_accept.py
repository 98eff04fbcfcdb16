"""The edge accepts connections itself (``listen.Acceptor``): a batch per readiness event
of the listening socket (libuv takes one, which under load left hundreds of connections
waiting seconds in the accept queue), TLS through the same uvloop transports, and out of
descriptors it pauses instead of spinning, then serves the connections that waited."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tako_server.edge.listen import ACCEPT_BATCH, Acceptor
from tako_server.tls.selfsigned import make_self_signed
from tests.integration.test_edge_harness import client_tls
from tests.integration.test_edge_worker_start import until

ROOT = Path(__file__).resolve().parents[2]


class Echo(asyncio.Protocol):
    made: list[Echo] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        Echo.made.append(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    try:
        yield sock
    finally:
        sock.close()


def server_tls(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for ``accept.test``."""
    cert, key = make_self_signed("accept.test", datetime.now(UTC))
    (directory / "c.pem").write_bytes(cert)
    (directory / "k.pem").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(directory / "c.pem", directory / "k.pem")
    return ctx


async def test_one_readiness_event_takes_a_batch_of_queued_connections(
    listener: socket.socket,
) -> None:
    Echo.made = []
    clients = [socket.create_connection(listener.getsockname()) for _ in range(300)]
    try:
        acceptor = Acceptor(listener, Echo)
        acceptor.loop.remove_reader(listener.fileno())
        acceptor._accept()  # what one readiness event does
        assert len(acceptor._starting) == ACCEPT_BATCH  # not 1, as libuv's server does
        acceptor._accept()  # the next event takes the rest
        await until(lambda: len(Echo.made) == 300, "300 connections served", 10)
        assert len(Echo.made) == 300
        loop = asyncio.get_running_loop()
        for client in clients[:5]:  # served (the echo runs on this loop: no blocking calls)
            client.setblocking(False)
            await loop.sock_sendall(client, b"ping")
            assert await asyncio.wait_for(loop.sock_recv(client, 4), 5) == b"ping"
        acceptor.loop.add_reader(listener.fileno(), acceptor._accept)  # as close() expects
        acceptor.close()
        assert listener.fileno() == -1  # the acceptor owns its socket
    finally:
        for client in clients:
            client.close()
        for proto in Echo.made:
            proto.transport.close()


async def test_tls_connections_are_served_and_failed_handshakes_are_dropped(
    listener: socket.socket, tmp_path: Path
) -> None:
    server_ctx, client_ctx = server_tls(tmp_path), client_tls()
    Echo.made = []
    acceptor = Acceptor(listener, Echo, server_ctx, 1.0)
    port = listener.getsockname()[1]
    try:
        bad = socket.create_connection(("127.0.0.1", port))
        bad.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not a TLS client hello
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="accept.test"
        )
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        bad.settimeout(5)
        while bad.recv(100):  # the server closes it (after a TLS alert, if it sends one)
            pass
        await until(lambda: not acceptor._starting, "the failed handshake dropped", 5)
        assert not acceptor._starting  # the failed handshake left nothing behind
        assert len(Echo.made) == 1
        writer.close()
        bad.close()
    finally:
        acceptor.close()


async def test_close_keeps_connections_in_their_handshake_and_abort_drops_them(
    listener: socket.socket, tmp_path: Path
) -> None:
    """Closing the listener (a drain begins) must not drop a connection accepted just
    before, still in its TLS handshake: the drain waits for it; abort (after the drain)
    drops what is left."""
    server_ctx, client_ctx = server_tls(tmp_path), client_tls()
    acceptor = Acceptor(listener, Echo, server_ctx, 1.0)
    addr = listener.getsockname()
    early, late = socket.create_connection(addr), socket.create_connection(addr)
    try:
        await until(lambda: len(acceptor._starting) == 2, "both connections accepted", 5)
        assert len(acceptor._starting) == 2  # accepted, handshakes not begun by the clients
        acceptor.close()
        early.setblocking(False)
        reader, writer = await asyncio.open_connection(
            sock=early, ssl=client_ctx, server_hostname="accept.test"
        )
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        acceptor.abort()
        late.settimeout(5)
        assert late.recv(100) == b""  # dropped: closed by the edge
        assert not acceptor._starting
        writer.close()
    finally:
        acceptor.abort()
        late.close()


CHILD = r"""
import asyncio, os, resource, socket, sys, uvloop
from tako_server.edge.listen import Acceptor

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)

async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    used = len(os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 6, hard))
    Acceptor(sock, Echo)
    print(sock.getsockname()[1], flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_it_pauses_without_spinning_and_serves_the_rest_later() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    clients: list[socket.socket] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
        for client in clients:
            client.settimeout(10)
        served = []
        for client in clients[:4]:  # a few fit under the limit
            client.sendall(b"ping")
            served.append(client.recv(4))
        assert served == [b"ping"] * 4
        time.sleep(0.5)  # the acceptor has hit EMFILE by now and paused
        cpu_before = _cpu_seconds(child.pid)
        time.sleep(2.0)
        spent = _cpu_seconds(child.pid) - cpu_before
        assert spent < 0.5, f"the acceptor spun on EMFILE ({spent:.2f}s CPU in 2 s)"
        for client in clients[:8]:  # free descriptors: their connections close
            client.close()
        for client in clients[8:]:  # waited in the accept queue, served after the pause
            client.sendall(b"pong")
            assert client.recv(4) == b"pong"
    finally:
        for client in clients:
            client.close()
        child.terminate()
        _, err = child.communicate(timeout=10)
    warnings = err.decode().count("cannot accept connections")
    assert warnings == 1, err.decode()
