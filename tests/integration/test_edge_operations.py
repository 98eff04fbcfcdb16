"""Edge operations on a real edge (in-process and two worker processes): compression,
request ids and the access log, per-client caps, the send timeout, WebSockets to a
leaving backend, and the request defects found by the adversarial review."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import brotli
import pytest

from tests.integration.test_edge_harness import (
    EdgeEnv,
    FixedHooks,
    Upstream,
    client_tls,
    dechunk,
    parse_response,
    raw_exchange,
    raw_request,
    rss_kb,
    start_edge,
    upstreams,
)

__all__ = ["upstreams"]

HOST = "ops.example.com"
ACCESS_LOG = "access.log"


@pytest.fixture(params=[0, 2], ids=["inprocess", "workers2"])
async def ops_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EdgeEnv]:
    """An edge with the access log on, small per-client caps and short budgets."""
    hooks = FixedHooks()
    edge = await start_edge(
        tmp_path,
        hooks,
        request.param,
        header_timeout=1.5,
        access_log=str(tmp_path / ACCESS_LOG),
        client_requests=3,
        send_timeout=1.0,
        upgrade_drain=1.0,
    )
    try:
        yield EdgeEnv(edge, hooks, request.param)
    finally:
        await edge.stop(2.0)


async def setup_app(env: EdgeEnv, ups: list[Upstream], count: int = 1) -> None:
    env.hooks.add("ops/prod", [HOST], [u.backend for u in ups[:count]])
    await env.apply(HOST, "/")


async def get(env: EdgeEnv, target: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    answer = await raw_request(env.https, HOST, target, tls=True, headers=headers)
    body = answer.body
    if answer.headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return answer.status, answer.headers, body


# --- compression -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "encoding", "decode"),
    [("br", "br", brotli.decompress), ("gzip, deflate", "gzip", gzip.decompress)],
)
async def test_compressed_bodies_decode_to_the_original(
    ops_env: EdgeEnv, upstreams: list[Upstream], accept: str, encoding: str, decode: object
) -> None:
    await setup_app(ops_env, upstreams)
    _, _, plain = await get(ops_env, "/text?size=50000")
    status, headers, body = await get(ops_env, "/text?size=50000", **{"Accept-Encoding": accept})
    assert status == 200 and len(plain) == 50000
    assert headers["content-encoding"] == encoding
    assert headers["vary"] == "Accept-Encoding"
    assert "content-length" not in headers and len(body) < len(plain) // 5
    assert decode(body) == plain  # type: ignore[operator]


@pytest.mark.parametrize(
    ("target", "extra"),
    [
        ("/text?size=500", {}),  # below 1 KiB
        ("/text?size=50000&type=image/png", {}),  # not compressible
        ("/text?size=50000&type=text/event-stream", {}),  # streams are never held or packed
        ("/text?size=50000", {"Range": "bytes=0-99"}),  # ranges are never compressed
        ("/text?size=50000", {"Accept-Encoding": "gzip;q=0, br;q=0"}),  # refused by weight
    ],
    ids=["small", "image", "event-stream", "range", "q-zero"],
)
async def test_what_is_never_compressed(
    ops_env: EdgeEnv, upstreams: list[Upstream], target: str, extra: dict[str, str]
) -> None:
    await setup_app(ops_env, upstreams)
    headers = {"Accept-Encoding": "br, gzip", **extra}
    status, got, _ = await get(ops_env, target, **headers)
    assert status in (200, 206) and "content-encoding" not in got


async def test_static_files_come_from_precompressed_siblings(
    ops_env: EdgeEnv, upstreams: list[Upstream], tmp_path: Path
) -> None:
    public = tmp_path / "public"
    public.mkdir()
    original = b"body { color: red; }\n" * 100
    (public / "site.css").write_bytes(original)
    (public / "site.css.br").write_bytes(brotli.compress(original))
    (public / "site.css.gz").write_bytes(gzip.compress(original))
    ops_env.hooks.add("ops/prod", [HOST], [upstreams[0].backend], public_dir=public)
    await ops_env.apply(HOST, "/site.css")
    for accept, name, decode in (
        ("br", "br", brotli.decompress),
        ("gzip", "gzip", gzip.decompress),
    ):
        status, headers, body = await get(ops_env, "/site.css", **{"Accept-Encoding": accept})
        assert (status, headers["content-encoding"], headers["vary"]) == (
            200,
            name,
            "Accept-Encoding",
        )
        assert decode(body) == original  # type: ignore[operator]
    status, headers, body = await get(ops_env, "/site.css")
    assert status == 200 and "content-encoding" not in headers and body == original


# --- request ids and the access log ------------------------------------------------------
async def read_log(
    path: Path, want: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The access log's lines once ``want`` holds for them (edge processes flush every tick)."""
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x]
            if want(lines):
                return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never had the lines wanted: {lines[-5:]}")


async def test_the_same_request_id_reaches_the_app_and_the_access_log(
    ops_env: EdgeEnv, upstreams: list[Upstream], tmp_path: Path
) -> None:
    await setup_app(ops_env, upstreams)
    log = tmp_path / ACCESS_LOG
    _, _, made = await get(ops_env, "/rid?secret=1")
    _, _, kept = await get(ops_env, "/rid", **{"X-Request-Id": "ci-run-42.a/b"})
    _, _, replaced = await get(ops_env, "/rid", **{"X-Request-Id": "bad id with spaces"})
    assert len(made) >= 8 and kept == b"ci-run-42.a/b"
    assert replaced not in (b"", b"bad id with spaces")
    ids = {made.decode(), "ci-run-42.a/b", replaced.decode()}
    lines = await read_log(log, lambda got: ids <= {x["request_id"] for x in got})
    by_id = {line["request_id"]: line for line in lines}
    line = by_id[made.decode()]
    assert line["path"] == "/rid" and "secret" not in json.dumps(line)  # no query by default
    assert (line["host"], line["method"], line["status"]) == (HOST, "GET", 200)
    assert (line["app"], line["env"], line["client"]) == ("ops", "prod", "127.0.0.1")
    assert line["instance"] == upstreams[0].instance_id and line["bytes"] == len(made)
    assert isinstance(line["duration_ms"], float) and isinstance(line["upstream_ms"], float)
    assert line["cold_start_ms"] is None and str(line["time"]).endswith("Z")


async def test_edge_answers_are_logged_with_their_status(
    ops_env: EdgeEnv, upstreams: list[Upstream], tmp_path: Path
) -> None:
    await setup_app(ops_env, upstreams)
    answer = await raw_request(ops_env.https, "unknown.example.com", "/nope", tls=True)
    assert answer.status == 404
    await read_log(
        tmp_path / ACCESS_LOG,
        lambda got: any(
            x["status"] == 404 and x["path"] == "/nope" and x["app"] == "" for x in got
        ),
    )


# --- per-client caps ----------------------------------------------------------------------
async def test_a_client_over_its_concurrent_request_cap_gets_429(
    upstreams: list[Upstream], tmp_path: Path
) -> None:
    # in-process: the cap is per edge process (with workers the kernel spreads a client's
    # connections over them, so each counts its share)
    hooks = FixedHooks()
    edge = await start_edge(tmp_path, hooks, 0, client_requests=3)
    env = EdgeEnv(edge, hooks, 0)
    try:
        await setup_app(env, upstreams)
        slow = [asyncio.create_task(get(env, "/slow?delay=1.5")) for _ in range(3)]
        await asyncio.sleep(0.5)
        status, headers, _ = await get(env, "/text")
        assert status == 429 and headers["retry-after"] == "1"
        assert [s for s, _, _ in await asyncio.gather(*slow)] == [200, 200, 200]
        assert (await get(env, "/text"))[0] == 200  # the count went back down
    finally:
        await edge.stop(2.0)


async def test_a_trusted_proxy_is_never_capped(upstreams: list[Upstream], tmp_path: Path) -> None:
    """Many users arrive through one trusted proxy: its address is not one client's."""
    hooks = FixedHooks()
    edge = await start_edge(
        tmp_path, hooks, 0, client_requests=3, client_connections=3,
        trusted_proxies=("127.0.0.1/32",),
    )  # fmt: skip
    env = EdgeEnv(edge, hooks, 0)
    try:
        await setup_app(env, upstreams)
        slow = [asyncio.create_task(get(env, "/slow?delay=1.5")) for _ in range(4)]
        await asyncio.sleep(0.5)
        assert (await get(env, "/text"))[0] == 200  # 6 connections, 5 requests: not capped
        assert [s for s, _, _ in await asyncio.gather(*slow)] == [200] * 4
    finally:
        await edge.stop(2.0)


# --- the send timeout ---------------------------------------------------------------------
async def test_a_client_that_stops_reading_a_huge_response_is_cut_off(
    ops_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(ops_env, upstreams)
    pid = ops_env.edge.worker_pids[0] if ops_env.workers else None
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", ops_env.https, ssl=client_tls(), server_hostname=HOST
    )
    size = 100 * 1024 * 1024
    writer.write(f"GET /big?size={size} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    await asyncio.sleep(3.0)  # never read: the send timeout (1 s) cuts it off
    got = 0
    async with asyncio.timeout(20):
        while chunk := await reader.read(1024 * 1024):
            got += len(chunk)
    writer.close()
    assert got < size // 2, f"the whole response was kept for a client that stopped ({got})"
    if pid is not None:
        assert rss_kb(pid) < 200_000, "the worker buffered the response"


# --- WebSockets to a backend that leaves --------------------------------------------------
async def test_a_websocket_survives_a_rollout_then_gets_a_close_frame(
    ops_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    import aiohttp

    await setup_app(ops_env, upstreams)
    url = f"https://127.0.0.1:{ops_env.https}/ws"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url, headers={"Host": HOST}, ssl=client_tls())
        await ws.send_str("before")
        assert (await ws.receive(timeout=5)).data == "echo:before"
        ops_env.hooks.add("ops/prod", [HOST], [upstreams[1].backend])  # the rollout
        await ops_env.apply(HOST, "/")
        await ws.send_str("during")
        assert (await ws.receive(timeout=5)).data == "echo:during"  # still the old instance
        started = time.monotonic()
        message = await ws.receive(timeout=10)
        waited = time.monotonic() - started
        assert message.type == aiohttp.WSMsgType.CLOSE, message
        assert message.data == 1001 and waited < 5
        await ws.close()


# --- defects of the adversarial review -----------------------------------------------------
async def test_trace_unknown_expect_and_hostless_http10(
    ops_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(ops_env, upstreams)
    assert (await raw_request(ops_env.https, HOST, "/", tls=True, method="TRACE")).status == 405
    # TRACK is not even a method to the parser: refused before any routing
    assert (await raw_request(ops_env.https, HOST, "/", tls=True, method="TRACK")).status == 400
    expect = await raw_request(ops_env.https, HOST, "/", tls=True, headers={"Expect": "magic"})
    assert expect.status == 417
    raw = await raw_exchange(ops_env.http, b"GET / HTTP/1.0\r\n\r\n")
    answer = parse_response(raw)
    assert answer.status == 404 and "location" not in answer.headers


async def test_a_bare_lf_chunk_never_reaches_the_app_as_a_complete_request(
    ops_env: EdgeEnv, upstreams: list[Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    await setup_app(ops_env, upstreams)
    before = json.loads((await get(ops_env, "/uploads-done"))[2])["done"]
    for _ in range(5):
        payload = (
            f"POST /upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n3\nabc\r\n0\r\n\r\n"
        ).encode()
        answer = parse_response(await raw_exchange(ops_env.https, payload, tls=True, sni=HOST))
        assert answer.status == 400
    await asyncio.sleep(0.5)
    status, _, body = await get(ops_env, "/uploads-done")
    assert status == 200 and json.loads(body)["done"] == before  # no upload completed
    assert "never retrieved" not in caplog.text and "Traceback" not in caplog.text


# --- deadlines the review found lost -------------------------------------------------------
async def test_a_client_that_never_sends_the_rest_of_its_body_is_closed(
    upstreams: list[Upstream], tmp_path: Path
) -> None:
    hooks = FixedHooks()
    edge = await start_edge(tmp_path, hooks, 0, header_timeout=1.5)
    env = EdgeEnv(edge, hooks, 0)
    sock = socket.socket()
    try:
        public = tmp_path / "public"
        public.mkdir()
        size = 2_880_000  # the stream ends while the client's buffer is full
        (public / "big.bin").write_bytes(b"x" * size)
        local = "ops.localhost"
        hooks.add("ops/prod", [local], [upstreams[0].backend], public_dir=public)
        await env.apply(local, "/")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", env.http))
        request = f"GET /big.bin HTTP/1.1\r\nHost: {local}\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(request.encode() + b"y" * 50)  # half the body; the rest never comes
        await asyncio.sleep(0.5)  # not reading yet: the edge pauses, then resumes as we read
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        got = 0
        async with asyncio.timeout(15):
            while got < size:
                got += len(await loop.sock_recv(sock, 1 << 20))
            started = time.monotonic()
            while chunk := await loop.sock_recv(sock, 1 << 16):  # until the edge closes
                got += len(chunk)
        took = time.monotonic() - started
        assert took < 5, f"the connection stayed {took:.1f}s past its answer (header timeout 1.5 s)"
    finally:
        sock.close()
        await edge.stop(2.0)


@pytest.mark.parametrize(
    "size",
    [2_870_000, 40_000_000],  # ends up queued after the close / cut off mid-stream
    ids=["queued-after-close", "mid-stream"],
)
async def test_a_closed_connection_whose_client_never_reads_is_released(
    upstreams: list[Upstream], tmp_path: Path, size: int
) -> None:
    hooks = FixedHooks()
    edge = await start_edge(tmp_path, hooks, 0, send_timeout=1.0)
    env = EdgeEnv(edge, hooks, 0)
    sock = socket.socket()
    try:
        public = tmp_path / "public"
        public.mkdir()
        (public / "big.bin").write_bytes(b"x" * size)
        local = "ops.localhost"  # plain HTTP is served (not redirected) for a local host
        hooks.add("ops/prod", [local], [upstreams[0].backend], public_dir=public)
        await env.apply(local, "/")
        rt = edge._rt
        assert rt is not None
        await asyncio.sleep(0.5)  # the probes' connections are gone
        before = len(rt.connections)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that takes little
        sock.connect(("127.0.0.1", env.http))
        request = f"GET /big.bin HTTP/1.1\r\nHost: {local}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        await asyncio.sleep(0.3)
        assert len(rt.connections) == before + 1  # never read: the edge holds it for now
        deadline = time.monotonic() + 8
        while len(rt.connections) > before and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(rt.connections) == before, "a closed connection held its buffer for good"
    finally:
        sock.close()
        await edge.stop(2.0)
