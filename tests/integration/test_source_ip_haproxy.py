"""source_ip through a real HAProxy in front of the edge: PROXY v1/v2, X-Forwarded-*,
forged headers from untrusted peers, Cloudflare's header from its ranges.

Loopback addresses tell the parties apart: HAProxy connects to the edge from 127.0.0.2
(the only trusted proxy), test clients connect from 127.0.0.9 (through HAProxy) or
127.0.0.1 (straight to the edge, untrusted), and 127.0.0.4 plays a Cloudflare address.
The app is the shared aiohttp upstream that echoes the headers it got.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tako_server.edge import Edge, EdgeApp
from tako_server.tls import make_self_signed

from .pebble import free_port
from .test_edge_harness import FixedHooks, Upstream, client_tls, start_edge, upstreams

__all__ = ["upstreams"]

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")

PUBLIC, LOCAL, CF_APP = "app.example.com", "app.localhost", "cf.example.com"
#: one real worker process: the production path (uvloop, the channel for counters)
WORKERS = 1
CLIENT, HOP, CF_PEER = "127.0.0.9", "127.0.0.2", "127.0.0.4"


@dataclass
class Front:
    edge: Edge
    hooks: FixedHooks
    ports: dict[str, int]  # HAProxy frontends by name


HAPROXY_CFG = """
global
    maxconn 200
defaults
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend v1_http
    mode tcp
    bind 127.0.0.1:{v1}
    default_backend v1_http
backend v1_http
    mode tcp
    server edge 127.0.0.1:{http} send-proxy source {hop}
frontend v2_tls
    mode tcp
    bind 127.0.0.1:{v2}
    default_backend v2_tls
backend v2_tls
    mode tcp
    server edge 127.0.0.1:{https} send-proxy-v2 source {hop}
frontend terminating
    mode http
    bind 127.0.0.1:{term} ssl crt {pem}
    option forwardfor
    default_backend terminating
backend terminating
    mode http
    server edge 127.0.0.1:{http} send-proxy-v2-ssl source {hop}
frontend headers_only
    mode http
    bind 127.0.0.1:{plain}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend headers_only
backend headers_only
    mode http
    server edge 127.0.0.1:{plain_http} source {hop}
"""


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # poll inside a deadline-bounded loop
    raise RuntimeError(f"haproxy not listening on {port} in {deadline_s}s")


@pytest.fixture
def haproxy_ports() -> dict[str, int]:
    return {name: free_port() for name in ("v1", "v2", "term", "plain")}


@pytest.fixture
async def front(
    tmp_path: Path, upstreams: list[Upstream], haproxy_ports: dict[str, int]
) -> AsyncIterator[Front]:
    hooks = FixedHooks()
    backend = [upstreams[0].backend]
    hooks.add("app/prod", [PUBLIC, LOCAL], backend)
    hooks.add("cf/prod", [CF_APP], backend)
    hooks.apps["cf/prod"] = EdgeApp("cf/prod", tuple(backend), None, False,
                                    source_ip="cloudflare-proxy")  # fmt: skip
    trust: dict[str, Any] = {
        "trusted_proxies": (f"{HOP}/32",),
        "cloudflare_ranges": (f"{CF_PEER}/32",),
    }
    edge = await start_edge(tmp_path / "a", hooks, WORKERS, proxy_protocol=True, **trust)
    plain_log = str(tmp_path / "b" / "access.log")  # headers only, no PROXY:
    plain = await start_edge(tmp_path / "b", hooks, 0, access_log=plain_log, **trust)
    cert, key = make_self_signed(PUBLIC, datetime.now(UTC))
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes(cert + key)
    cfg = tmp_path / "haproxy.cfg"
    ports = {"http": edge.http_port, "https": edge.https_port, "plain_http": plain.http_port}
    cfg.write_text(HAPROXY_CFG.format(hop=HOP, pem=pem, **ports, **haproxy_ports))
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL)
    try:
        for port in haproxy_ports.values():
            await asyncio.to_thread(wait_port, port, proc)
        yield Front(edge, hooks, haproxy_ports)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        await edge.stop(0.5)  # HAProxy's idle pooled connections need no long drain
        await plain.stop(0.5)


async def exchange(
    port: int, payload: bytes, *, source: str = CLIENT, tls: str | None = None
) -> bytes:
    """Send ``payload`` from ``source`` and read until the server closes (bounded)."""
    ctx = client_tls() if tls else None
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), ssl=ctx, server_hostname=tls
        )
        try:
            writer.write(payload)
            await writer.drain()
            data = await reader.read()
        except ConnectionResetError:  # closed with our bytes unread: a reset
            data = b""
        writer.close()
    return data


def request(host: str, headers: dict[str, str] | None = None) -> bytes:
    lines = ["GET /who HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, (json.loads(body) if status == 200 else {"head": head.decode()})


FORGED = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "X-Forwarded-Proto": "https",
          "CF-Connecting-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6"}  # fmt: skip


def seen(data: dict[str, object]) -> tuple[object, object, object]:
    headers = data["headers"]
    assert isinstance(headers, dict)
    return data["xff_all"], headers.get("X-Real-IP"), headers.get("X-Forwarded-Proto")


async def test_proxy_v1_on_http_gives_the_client_address(front: Front) -> None:
    status, data = answer(await exchange(front.ports["v1"], request(LOCAL, FORGED)))
    assert status == 200
    assert seen(data) == ([CLIENT], CLIENT, "http")  # forged headers from the client dropped
    assert "CF-Connecting-IP" not in data["headers"]  # type: ignore[operator]
    assert "Forwarded" not in data["headers"]  # type: ignore[operator]


async def test_proxy_v2_before_tls_gives_the_client_address(front: Front) -> None:
    raw = await exchange(front.ports["v2"], request(PUBLIC, FORGED), tls=PUBLIC)
    status, data = answer(raw)
    assert status == 200
    assert seen(data) == ([CLIENT], CLIENT, "https")


async def test_tls_terminating_proxy_saying_https_is_not_redirected(front: Front) -> None:
    """HAProxy ends TLS and forwards plain HTTP with PROXY v2 + its SSL TLV."""
    forged = {"X-Forwarded-For": "6.6.6.6"}
    raw = await exchange(front.ports["term"], request(PUBLIC, forged), tls=PUBLIC)
    status, data = answer(raw)
    assert status == 200, data  # not the 307 loop
    assert seen(data) == ([CLIENT], CLIENT, "https")


async def test_trusted_proxy_headers_without_proxy_protocol(
    front: Front, tmp_path: Path
) -> None:
    raw = await exchange(front.ports["plain"], request(PUBLIC, {"X-Forwarded-For": "6.6.6.6"}))
    status, data = answer(raw)
    assert status == 200, data
    assert seen(data) == ([CLIENT], CLIENT, "https")  # 6.6.6.6 was the client's own forgery
    log = tmp_path / "b" / "access.log"  # the access log names the same client
    for _ in range(100):
        if log.exists() and log.read_text():
            break
        await asyncio.sleep(0.05)
    assert json.loads(log.read_text().splitlines()[-1])["client"] == CLIENT


async def test_forged_headers_from_an_untrusted_peer_are_dropped(front: Front) -> None:
    port = front.edge.http_port
    status, data = answer(await exchange(port, request(LOCAL, FORGED), source="127.0.0.1"))
    assert status == 200
    assert seen(data) == (["127.0.0.1"], "127.0.0.1", "http")
    status, data = answer(await exchange(port, request(PUBLIC, FORGED), source="127.0.0.1"))
    assert status == 307, "an untrusted X-Forwarded-Proto: https does not stop the redirect"


async def test_proxy_header_from_an_untrusted_peer_is_refused(front: Front) -> None:
    payload = b"PROXY TCP4 1.2.3.4 10.0.0.1 1111 80\r\n" + request(LOCAL)
    raw = await exchange(front.edge.http_port, payload, source="127.0.0.1")
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]


async def test_malformed_or_missing_proxy_header_from_trusted_peer_closes_and_counts(
    front: Front,
) -> None:
    before = _errors(front.edge)
    assert await exchange(front.edge.http_port, b"PROXY TCP4 nonsense\r\n" + request(LOCAL),
                          source=HOP) == b""  # fmt: skip
    assert await exchange(front.edge.http_port, request(LOCAL), source=HOP) == b""
    deadline = time.monotonic() + 5  # a worker reports its counters every second
    while _errors(front.edge) < before + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert _errors(front.edge) == before + 2


def _errors(edge: Edge) -> int:
    counters = edge.meter_snapshot()["counters"]
    return sum(n for name, _, n in counters if name == "proxy_protocol_errors")


async def test_cloudflare_header_believed_only_from_cloudflare_ranges(front: Front) -> None:
    headers = {"CF-Connecting-IP": "198.51.100.7", "X-Forwarded-Proto": "https"}
    plain = front.edge.http_port
    status, data = answer(await exchange(plain, request(CF_APP, headers), source=CF_PEER))
    assert status == 200, data
    assert seen(data) == (["198.51.100.7"], "198.51.100.7", "https")
    status, _ = answer(await exchange(plain, request(CF_APP, headers), source="127.0.0.1"))
    assert status == 307, "CF-Connecting-IP from elsewhere is ignored (and no https claim)"
    raw = await exchange(front.edge.https_port, request(CF_APP, headers), source="127.0.0.1",
                         tls=CF_APP)  # fmt: skip
    status, data = answer(raw)
    assert seen(data) == (["127.0.0.1"], "127.0.0.1", "https")
