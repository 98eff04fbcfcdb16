"""The edge refuses malformed, oversized and slow requests, and serves static files itself."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.integration.test_edge_harness import (
    EdgeEnv,
    Upstream,
    client_tls,
    edge_env,
    parse_response,
    raw_exchange,
    raw_request,
    upstreams,
)

__all__ = ["edge_env", "upstreams"]

HOST = "app.example.com"


async def setup_app(env: EdgeEnv, ups: list[Upstream], public: Path | None = None) -> None:
    env.hooks.add("app/prod", [HOST, f"{HOST}/site/*"], [ups[0].backend], public_dir=public)
    await env.apply(HOST, "/")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", 400),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", 400),
        ("Transfer-Encoding: gzip\r\n", 400),
        ("Content-Length: -1\r\n", 400),
        (f"Content-Length: {129 * 1024 * 1024}\r\n", 413),
    ],
    ids=["cl-and-te", "differing-cl", "duplicate-cl", "non-chunked-te", "negative-cl", "too-large"],
)
async def test_smuggling_and_size_rules_are_enforced(
    edge_env: EdgeEnv, upstreams: list[Upstream], headers: str, status: int
) -> None:
    await setup_app(edge_env, upstreams)
    payload = f"POST /upload HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\nhello".encode()
    response = parse_response(await raw_exchange(edge_env.https, payload, tls=True, sni=HOST))
    assert response.status == status


async def test_missing_host_on_http11_is_400(edge_env: EdgeEnv) -> None:
    raw = await raw_exchange(edge_env.http, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert parse_response(raw).status == 400


async def test_garbage_request_line_is_400(edge_env: EdgeEnv) -> None:
    raw = await raw_exchange(edge_env.http, b"NOT HTTP AT ALL\r\n\r\n")
    assert parse_response(raw).status == 400


async def test_chunked_body_over_the_cap_is_413(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    ssl_ctx = client_tls()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", edge_env.https, ssl=ssl_ctx, server_hostname=HOST
    )
    writer.write(
        f"POST /upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b"z" * 1024 * 1024)
    try:
        async with asyncio.timeout(60):
            for _ in range(130):
                writer.write(chunk)
                await writer.drain()
    except (ConnectionError, OSError):
        pass  # the edge may stop reading after refusing
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    assert parse_response(data).status == 413


async def test_headers_sent_byte_by_byte_are_cut_off(edge_env: EdgeEnv) -> None:
    """Slowloris: header_timeout is 1.5 s in these tests."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_env.http)
    started = time.monotonic()
    request = b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Slow: " + b"a" * 200
    closed_at = None
    for byte in request:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionError, OSError):
            closed_at = time.monotonic()
            break
        try:
            data = await asyncio.wait_for(reader.read(1024), timeout=0.1)
        except TimeoutError:
            continue
        if data == b"" or data.startswith(b"HTTP/1.1 408"):
            closed_at = time.monotonic()
            break
    writer.close()
    assert closed_at is not None, "the edge kept a slow-header connection open"
    assert closed_at - started < 5.0


async def test_idle_client_connection_is_closed_after_the_header_timeout(edge_env: EdgeEnv) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_env.http)
    async with asyncio.timeout(6):
        assert await reader.read() == b""
    writer.close()


@pytest.fixture
def public_dir(tmp_path: Path) -> Path:
    public = tmp_path / "release" / "public"
    (public / "css").mkdir(parents=True)
    (public / "app.js").write_text("console.log('hi');\n")
    (public / "css" / "site.css").write_text("body{}\n")
    (public / "big.bin").write_bytes(b"b" * (3 * 1024 * 1024))
    (public / "dir.d").mkdir()
    (tmp_path / "release" / "secret.txt").write_text("do not serve")
    (public / "link.txt").symlink_to(tmp_path / "release" / "secret.txt")
    return public


async def test_static_file_with_etag_and_304(
    edge_env: EdgeEnv, upstreams: list[Upstream], public_dir: Path
) -> None:
    await setup_app(edge_env, upstreams, public_dir)
    first = await raw_request(edge_env.https, HOST, "/app.js", tls=True)
    assert first.status == 200
    assert first.body == b"console.log('hi');\n"
    assert first.headers["content-type"].startswith("text/javascript")
    etag = first.headers["etag"]
    again = await raw_request(
        edge_env.https, HOST, "/app.js", tls=True, headers={"If-None-Match": etag}
    )
    assert again.status == 304 and again.body == b""
    head = await raw_request(edge_env.https, HOST, "/css/site.css", tls=True, method="HEAD")
    assert head.status == 200 and head.body == b"" and head.headers["content-length"] == "7"


@pytest.mark.parametrize(
    ("path", "status", "from_app"),
    [
        ("/site/app.js", 200, False),  # prefix stripped under a path route
        ("/missing.js", 200, True),  # not a file: the app answers
        ("/dir.d", 200, True),  # directories are never listed
        ("/noext", 200, True),
        ("/%2e%2e/secret.txt", 400, False),
        ("/css/..%2f..%2fsecret.txt", 400, False),
        ("/a%00.js", 400, False),
        ("/link.txt", 400, False),  # symlink leaving public/
    ],
)
async def test_static_path_resolution(
    edge_env: EdgeEnv,
    upstreams: list[Upstream],
    public_dir: Path,
    path: str,
    status: int,
    from_app: bool,
) -> None:
    await setup_app(edge_env, upstreams, public_dir)
    response = await raw_request(edge_env.https, HOST, path, tls=True)
    assert response.status == status
    if status == 200:
        assert (b'"instance"' in response.body) is from_app


async def test_large_static_file_is_streamed_completely(
    edge_env: EdgeEnv, upstreams: list[Upstream], public_dir: Path
) -> None:
    await setup_app(edge_env, upstreams, public_dir)
    response = await raw_request(edge_env.https, HOST, "/big.bin", tls=True)
    assert response.status == 200
    assert response.body == b"b" * (3 * 1024 * 1024)


async def test_body_of_a_local_answer_is_discarded_and_connection_reused(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    payload = (
        f"POST /x HTTP/1.1\r\nHost: nothing.example.com\r\nContent-Length: 5\r\n\r\nhello"
        f"GET /after HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    ).encode()
    raw = await raw_exchange(edge_env.https, payload, tls=True, sni=HOST)
    assert raw.startswith(b"HTTP/1.1 404")
    assert b'"/after"' in raw
    body = raw[raw.index(b"{") :]
    assert json.loads(body)["path_qs"] == "/after"
