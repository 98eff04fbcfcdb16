"""An edge worker accepts nothing before it has the routes and certificates of its main.

The rule holds in every start path (first start, takeover successor, restart after a
crash): a worker says ``started``, waits for its first snapshot, re-reads the
certificates, then accepts and says ``ready``; :meth:`Edge.start` returns only once every
worker is ready. A connection made meanwhile waits in the kernel accept queue and gets
the right answer, never a 404 from an empty route table.

The first tests play the main process themselves over a real channel to a real worker
process (typed messages, :mod:`tako_server.edge.messages`), so the snapshot can be held
back for as long as the test likes (the worker's ``started`` is the synchronisation
point, no sleeps). The last one kills a worker of a real :class:`Edge` and sends a
request while it is down.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tako_server.edge.channel import Channel
from tako_server.edge.listen import open_listeners
from tako_server.edge.messages import Message, Ready, SnapshotPush, Started, StopWorker
from tako_server.edge.runtime import EdgeConfig
from tako_server.edge.snapshot import Backend, EdgeApp, EdgeSnapshot
from tako_server.edge.workers import worker_argv, worker_config
from tako_server.tls import CertStore, ensure_self_signed
from tests.integration.test_edge_harness import (
    FixedHooks,
    RawResponse,
    Upstream,
    client_tls,
    parse_response,
    raw_request,
    start_edge,
    upstreams,
)

__all__ = ["upstreams"]

pytestmark = pytest.mark.timeout(60)

HOST = "app.test"
DEADLINE = 10.0


def accept_queue_length(listener: socket.socket) -> int:
    """Connections waiting in a listening socket's kernel accept queue (Linux reports it
    as ``tcpi_unacked`` of ``TCP_INFO`` for a socket in LISTEN state)."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 24)[0])


async def until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class WorkerUnderTest:
    """One real worker process; the test is its main process (channel + listeners)."""

    process: asyncio.subprocess.Process
    channel: Channel
    http: socket.socket
    https: socket.socket

    async def next_of(self, *wanted: type[Message]) -> Message | None:
        """The next message of one of the ``wanted`` types (others skipped), or None at
        EOF; bounded by ``DEADLINE``."""
        async with asyncio.timeout(DEADLINE):
            while True:
                message = await self.channel.recv()
                if message is None or isinstance(message, wanted):
                    return message

    def send_snapshot(self, backend: Backend) -> None:
        app = EdgeApp("app/prod", (backend,), None, False)
        snapshot = EdgeSnapshot(routes=((HOST, "app/prod"),), apps={"app/prod": app})
        self.channel.send(SnapshotPush(snapshot))


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[WorkerUnderTest]:
    http = open_listeners("127.0.0.1", 0, 1)[0]
    https = open_listeners("127.0.0.1", 0, 1)[0]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    CertStore(tmp_path / "certs").ensure_default()  # as the main process does before workers
    config = worker_config(
        index=0,
        host="127.0.0.1",
        http_port=http.getsockname()[1],
        https_port=https.getsockname()[1],
        certs_dir=tmp_path / "certs",
        edge=EdgeConfig(),
    )
    config.update({"http_fds": [http.fileno()], "https_fds": [https.fileno()]})
    process = await asyncio.create_subprocess_exec(
        *worker_argv(theirs.fileno(), config),
        pass_fds=(theirs.fileno(), http.fileno(), https.fileno()),
        stdin=asyncio.subprocess.DEVNULL,
    )
    theirs.close()
    channel = await Channel.open(ours)
    try:
        yield WorkerUnderTest(process, channel, http, https)
    finally:
        if process.returncode is None:
            process.kill()  # only the worker this fixture started, by its handle
            await process.wait()
        channel.close()
        http.close()
        https.close()


async def open_request(port: int, *, tls: bool) -> tuple[asyncio.StreamReader, Any]:
    """A connection with a complete request written (the answer is read later)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls() if tls else None, server_hostname=HOST if tls else None
    )
    writer.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_answer(reader: asyncio.StreamReader, writer: Any) -> tuple[int, dict[str, Any]]:
    async with asyncio.timeout(DEADLINE):
        raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body.startswith(b"{") else {}


async def test_a_connection_made_before_the_first_snapshot_waits_and_gets_the_app(
    worker: WorkerUnderTest, upstreams: list[Upstream]
) -> None:
    assert isinstance(await worker.next_of(Started, Ready), Started), (
        "the worker said ready before it had any routes"
    )
    reader, writer = await open_request(worker.http.getsockname()[1], tls=False)
    await until(lambda: accept_queue_length(worker.http) == 1, "the connection to be queued")
    worker.send_snapshot(upstreams[0].backend)  # held back until the request was waiting

    status, body = await read_answer(reader, writer)
    assert (status, body.get("instance")) == (200, 1)
    assert isinstance(await worker.next_of(Ready), Ready)
    worker.channel.send(StopWorker(0.5))
    assert await asyncio.wait_for(worker.process.wait(), DEADLINE) == 0


async def test_a_worker_serves_the_certificates_written_before_its_first_snapshot(
    worker: WorkerUnderTest, upstreams: list[Upstream], tmp_path: Path
) -> None:
    assert isinstance(await worker.next_of(Started, Ready), Started)
    issued = ensure_self_signed(CertStore(tmp_path / "certs"), HOST, datetime.now(UTC))
    worker.send_snapshot(upstreams[0].backend)
    assert isinstance(await worker.next_of(Ready), Ready)

    reader, writer = await open_request(worker.https.getsockname()[1], tls=True)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    assert x509.load_der_x509_certificate(der).serial_number == issued.serial
    status, body = await read_answer(reader, writer)
    assert (status, body.get("instance")) == (200, 1)


async def test_a_worker_stopped_before_its_first_snapshot_exits_without_serving(
    worker: WorkerUnderTest,
) -> None:
    assert isinstance(await worker.next_of(Started, Ready), Started)
    worker.channel.send(StopWorker(0.1))
    assert await worker.next_of(Ready) is None  # EOF: it never said ready
    assert await asyncio.wait_for(worker.process.wait(), DEADLINE) == 0


def request_and_read(port: int, tls: bool) -> RawResponse:
    """A blocking request (run in a thread while the test's loop keeps serving)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as plain:
        sock = client_tls().wrap_socket(plain, server_hostname=HOST) if tls else plain
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return parse_response(raw)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_restarted_worker_answers_a_request_queued_while_it_was_down(
    tmp_path: Path, upstreams: list[Upstream], tls: bool
) -> None:
    """The main process answers the restarted worker's ``started`` with the last snapshot
    it pushed (it asks nobody for it), so the queued request is routed, never a 404."""
    hooks = FixedHooks()
    hooks.add("app/prod", [HOST], [upstreams[1].backend])
    edge = await start_edge(tmp_path, hooks, 1)
    try:
        port = edge.https_port if tls else edge.http_port
        first = await raw_request(port, HOST, tls=tls)  # start() returned: the worker routes
        assert first.status == 200 and json.loads(first.body)["instance"] == 2
        [pid] = edge.worker_pids
        os.kill(pid, signal.SIGKILL)  # the worker this test's edge started
        await until(lambda: pid not in edge.worker_pids, "the worker to be reaped")

        answer = await asyncio.to_thread(request_and_read, port, tls)  # queued until it serves
        assert answer.status == 200, answer.raw[:200]
        assert json.loads(answer.body)["instance"] == 2
        assert edge.worker_pids and edge.worker_pids != [pid]
    finally:
        await edge.stop(1.0)
