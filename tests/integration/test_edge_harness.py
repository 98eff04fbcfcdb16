"""Harness for the edge integration tests (no tests here): real upstream app processes,
in-test :class:`~tako_server.edge.EdgeHooks` with fixed routes and backends (pushed to
the edge with :meth:`EdgeEnv.apply`), and small real clients.

The hooks are the edge's interface to the rest of the server (what the daemon implements
over the supervisor), not a stand-in for the edge: everything the tests check goes
through real sockets, real TLS and, with ``workers=2``, real worker processes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tako_server.edge import Backend, Edge, EdgeApp, EdgeConfig, EdgeSnapshot

UPSTREAM_APP = r"""
import asyncio, hashlib, json, sys
from aiohttp import web

INSTANCE = int(sys.argv[2])

async def echo(request):
    body = await request.read()
    return web.json_response({
        "instance": INSTANCE, "method": request.method, "path_qs": request.path_qs,
        "headers": {k: v for k, v in request.headers.items()},
        "xff_all": request.headers.getall("X-Forwarded-For", []),
        "body_len": len(body),
    })

UPLOADS = {"done": 0}

async def upload(request):
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    UPLOADS["done"] += 1
    return web.json_response({"size": size, "sha256": digest.hexdigest(),
                              "chunked": request.headers.get("Transfer-Encoding")})

async def big(request):
    size = int(request.query["size"])
    response = web.StreamResponse()
    response.content_length = size
    await response.prepare(request)
    block = b"x" * (1024 * 1024)
    left = size
    while left > 0:
        await response.write(block[: min(left, len(block))])
        left -= len(block)
    await response.write_eof()
    return response

async def chunks(request):
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(5):
        await response.write(f"part{i};".encode())
    await response.write_eof()
    return response

async def text(request):
    size = int(request.query.get("size", "4096"))
    body = ("The quick brown fox jumps over the lazy dog. " * (size // 45 + 1))[:size]
    ctype = request.query.get("type", "text/plain")
    return web.Response(body=body.encode(), headers={"Content-Type": ctype})

async def uploads_done(request):
    return web.json_response(UPLOADS)

async def rid(request):
    return web.Response(text=request.headers.get("X-Request-Id", ""))

async def slow(request):
    await asyncio.sleep(float(request.query.get("delay", "1")))
    return web.Response(text=f"slow done {INSTANCE}")

async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == web.WSMsgType.TEXT:
            await sock.send_str(f"echo:{msg.data}")
        elif msg.type == web.WSMsgType.BINARY:
            await sock.send_bytes(msg.data)
    return sock

app = web.Application(client_max_size=512 * 1024 * 1024)
app.router.add_route("*", "/upload", upload)
app.router.add_get("/big", big)
app.router.add_get("/chunks", chunks)
app.router.add_get("/slow", slow)
app.router.add_get("/text", text)
app.router.add_get("/rid", rid)
app.router.add_get("/uploads-done", uploads_done)
app.router.add_get("/ws", ws)
app.router.add_route("*", "/{tail:.*}", echo)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"upstream exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"upstream on port {port} not ready in {timeout}s")


@dataclass
class Upstream:
    """One real app process (aiohttp) on a loopback port."""

    instance_id: int
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def backend(self) -> Backend:
        return Backend(self.instance_id, "127.0.0.1", self.port)


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Upstream]]:
    """Three app processes (instances 1, 2, 3), shared by every edge test."""
    script = tmp_path_factory.mktemp("edge-upstream") / "app.py"
    script.write_text(UPSTREAM_APP)
    started: list[Upstream] = []
    try:
        for instance in (1, 2, 3):
            port = free_port()
            proc = subprocess.Popen([sys.executable, str(script), str(port), str(instance)])
            started.append(Upstream(instance, port, proc))
        for up in started:
            wait_for_port(up.port, up.proc)
        yield started
    finally:
        for up in started:
            up.proc.terminate()
        for up in started:
            try:
                up.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                up.proc.kill()
                up.proc.wait()


@dataclass
class FixedHooks:
    """EdgeHooks over fixed routes/backends (``snapshot()`` is what tests push), recording
    what the edge reports."""

    routes: list[tuple[str, str]] = field(default_factory=list)
    apps: dict[str, EdgeApp] = field(default_factory=dict)
    cold: Callable[[str], Awaitable[list[Backend]]] | None = None
    challenges: dict[str, str] = field(default_factory=dict)
    activity: list[tuple[str, dict[int, int], str]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    cold_calls: int = 0

    def add(
        self,
        key: str,
        routes: list[str],
        backends: list[Backend],
        public_dir: Path | None = None,
        cold_start: bool = False,
    ) -> None:
        self.routes = [r for r in self.routes if r[1] != key] + [(r, key) for r in routes]
        self.apps[key] = EdgeApp(
            key, tuple(backends), str(public_dir) if public_dir else None, cold_start
        )

    def snapshot(self) -> EdgeSnapshot:
        return EdgeSnapshot(routes=tuple(self.routes), apps=dict(self.apps))

    async def cold_start(self, key: str) -> list[Backend]:
        self.cold_calls += 1
        assert self.cold is not None, "cold start not expected in this test"
        return await self.cold(key)

    def report(self, reporter: str, in_flight: Mapping[str, Mapping[int, int]]) -> None:
        for key, counts in in_flight.items():
            self.activity.append((key, dict(counts), reporter))

    async def challenge(self, token: str) -> str | None:
        return self.challenges.get(token)

    def app_log(self, key: str, line: str) -> None:
        self.logs.append((key, line))


@dataclass
class EdgeEnv:
    edge: Edge
    hooks: FixedHooks
    workers: int

    @property
    def http(self) -> int:
        return self.edge.http_port

    @property
    def https(self) -> int:
        return self.edge.https_port

    async def apply(
        self, probe_host: str | None = None, probe_path: str = "/", expect: int = 200
    ) -> None:
        """Push the hooks' routes and wait until the edge (every worker) routes with them."""
        self.push()
        if probe_host is None:
            await asyncio.sleep(0)
            return
        deadline = time.monotonic() + 10
        hits = 0
        while time.monotonic() < deadline:
            status = (await raw_request(self.https, probe_host, probe_path, tls=True)).status
            hits = hits + 1 if status == expect else 0
            if hits >= 8:  # several connections, so every worker saw the snapshot
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"edge did not apply the snapshot ({probe_host}{probe_path})")

    def push(self) -> None:
        """Hand the edge the hooks' current routes (it applies them on its next turn)."""
        self.edge.update(self.hooks.snapshot())


async def start_edge(
    tmp_path: Path, hooks: FixedHooks, workers: int, **config: float | str
) -> Edge:
    """A started edge serving ``hooks.snapshot()`` from its first request."""
    edge = Edge(
        hooks,
        http_port=0,
        https_port=0,
        certs_dir=tmp_path / "certs",
        workers=workers,
        host="127.0.0.1",
        config=EdgeConfig(**config),  # type: ignore[arg-type]
    )
    edge.update(hooks.snapshot())
    await edge.start()
    return edge


@pytest.fixture(params=[0, 2], ids=["inprocess", "workers2"])
async def edge_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EdgeEnv]:
    """A running edge (in-process and with two real worker processes)."""
    hooks = FixedHooks()
    edge = await start_edge(tmp_path, hooks, request.param, header_timeout=1.5)
    try:
        yield EdgeEnv(edge, hooks, request.param)
    finally:
        await edge.stop(2.0)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def client_tls() -> ssl.SSLContext:
    """A client context that verifies nothing (the edge's certificates are self-signed).
    Not ``create_default_context()``: loading the system's CA store costs ~20 ms of CPU
    per context, with the GIL held, and the in-process tests measure the edge's loop."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def raw_exchange(
    port: int, payload: bytes, *, tls: bool = False, sni: str | None = None, timeout: float = 10.0
) -> bytes:
    """Send ``payload`` on a new connection and read until the server closes."""
    ssl_ctx = client_tls() if tls else None
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_ctx, server_hostname=sni if tls else None
        )
        writer.write(payload)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body, raw)


async def raw_request(
    port: int,
    host: str,
    target: str = "/",
    *,
    tls: bool = False,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> RawResponse:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode()
    sni = host.split(":")[0] if tls else None
    return parse_response(await raw_exchange(port, payload, tls=tls, sni=sni))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body (no trailers)."""
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)
