"""The edge proxies real requests to real app processes over HTTP and HTTPS."""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
import pytest

from tests.integration.test_edge_harness import (
    EdgeEnv,
    Upstream,
    client_tls,
    edge_env,
    raw_exchange,
    raw_request,
    upstreams,
)

__all__ = ["edge_env", "upstreams"]

HOST = "app.example.com"


async def setup_app(env: EdgeEnv, ups: list[Upstream], routes: list[str] | None = None) -> None:
    env.hooks.add("app/prod", routes or [HOST], [ups[0].backend])
    await env.apply(HOST, "/")


def url(env: EdgeEnv, path: str) -> str:
    return f"https://127.0.0.1:{env.https}{path}"


async def test_https_request_reaches_the_app_with_forwarded_headers(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url(edge_env, "/hello?x=1"),
            headers={"Host": HOST, "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "http"},
            ssl=client_tls(),
            server_hostname=HOST,
        ) as response:
            assert response.status == 200
            data = await response.json()
    assert data["path_qs"] == "/hello?x=1"
    assert data["instance"] == 1
    assert data["xff_all"] == ["127.0.0.1"]  # the client's own header is not trusted
    assert data["headers"]["X-Forwarded-Proto"] == "https"
    assert data["headers"]["X-Forwarded-Host"] == HOST
    assert data["headers"]["Host"] == HOST


async def test_plain_http_redirects_to_https_keeping_path_and_query(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    response = await raw_request(edge_env.http, HOST, "/a/b?q=1&r=two")
    assert response.status == 307
    assert response.headers["location"] == f"https://{HOST}:{edge_env.https}/a/b?q=1&r=two"
    assert response.headers["cache-control"] == "no-store"


async def test_local_host_on_plain_http_is_proxied_without_redirect(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams, [HOST, "app.localhost"])
    response = await raw_request(edge_env.http, "app.localhost", "/x?y=1")
    assert response.status == 200
    data = json.loads(response.body)
    assert data["path_qs"] == "/x?y=1"
    assert data["headers"]["X-Forwarded-Proto"] == "http"


async def test_acme_challenge_is_answered_on_plain_http(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    edge_env.hooks.challenges["tok-123"] = "tok-123.thumb"
    await setup_app(edge_env, upstreams)
    known = await raw_request(edge_env.http, HOST, "/.well-known/acme-challenge/tok-123")
    unknown = await raw_request(edge_env.http, HOST, "/.well-known/acme-challenge/nope")
    assert (known.status, known.body) == (200, b"tok-123.thumb")
    assert unknown.status == 404


async def test_internal_status_on_plain_http_is_not_redirected(edge_env: EdgeEnv) -> None:
    response = await raw_request(edge_env.http, "tako.internal", "/status")
    assert response.status == 200


async def run_tool(*argv: str) -> bytes:
    """Run a real client tool without blocking the loop (the edge may serve in-process)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    return out


async def test_unknown_sni_completes_the_handshake_and_gets_404(edge_env: EdgeEnv) -> None:
    out = await run_tool(
        "curl",
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        "--resolve",
        f"unknown.example.org:{edge_env.https}:127.0.0.1",
        f"https://unknown.example.org:{edge_env.https}/",
    )
    assert out == b"404"


async def test_openssl_handshake_without_sni_succeeds(edge_env: EdgeEnv) -> None:
    out = await run_tool(
        "openssl", "s_client", "-connect", f"127.0.0.1:{edge_env.https}", "-noservername"
    )
    assert b"BEGIN CERTIFICATE" in out


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("app.example.com", "/", 1),
        ("app.example.com", "/api", 3),
        ("app.example.com", "/api/v1/users", 3),
        ("app.example.com", "/apiary", 1),
        ("x.example.com", "/api/v1", 2),
        ("deep.x.example.com", "/", 2),
        ("example.com", "/", None),
    ],
)
async def test_most_specific_route_wins_across_apps(
    edge_env: EdgeEnv, upstreams: list[Upstream], host: str, path: str, expected: int | None
) -> None:
    p = edge_env.hooks
    p.add("exact/prod", ["app.example.com"], [upstreams[0].backend])
    p.add("wild/prod", ["*.example.com"], [upstreams[1].backend])
    p.add("api/prod", ["app.example.com/api/*"], [upstreams[2].backend])
    await edge_env.apply("app.example.com", "/api/x")
    response = await raw_request(edge_env.https, host, path, tls=True)
    if expected is None:
        assert response.status == 404
    else:
        assert response.status == 200
        assert json.loads(response.body)["instance"] == expected


async def test_chunked_upload_streams_to_the_app(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    piece = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()

    async def body():  # type: ignore[no-untyped-def]
        for _ in range(20):
            digest.update(piece)
            yield piece

    async with aiohttp.ClientSession() as session:
        async with session.post(
            url(edge_env, "/upload"),
            data=body(),
            headers={"Host": HOST},
            ssl=client_tls(),
            server_hostname=HOST,
        ) as response:
            assert response.status == 200
            data = await response.json()
    assert data == {"size": 20 * len(piece), "sha256": digest.hexdigest(), "chunked": "chunked"}


async def test_chunked_response_is_relayed(edge_env: EdgeEnv, upstreams: list[Upstream]) -> None:
    await setup_app(edge_env, upstreams)
    response = await raw_request(edge_env.https, HOST, "/chunks", tls=True)
    assert response.status == 200
    assert response.headers["transfer-encoding"] == "chunked"
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url(edge_env, "/chunks"), headers={"Host": HOST}, ssl=client_tls(), server_hostname=HOST
        ) as resp:
            assert await resp.text() == "part0;part1;part2;part3;part4;"


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    requests = b"".join(
        f"GET /{name} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode()
        for name, extra in [("one", ""), ("slow?delay=0.3", ""), ("three", "Connection: close\r\n")]
    )
    raw = await raw_exchange(edge_env.https, requests, tls=True, sni=HOST)
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    first, second, third = raw.index(b'"/one"'), raw.index(b"slow done"), raw.index(b'"/three"')
    assert first < second < third


@pytest.mark.parametrize("edge_env", [0], indirect=True, ids=["inprocess"])
async def test_tls_connections_read_and_write_through_the_c_methods(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    """uvloop binds the SSL object's read/write/pending once per connection: they are the
    C methods (DirectSSLObject), and a request and a large response still pass intact
    (in-process: with workers the SSL objects live in the worker processes)."""
    await setup_app(edge_env, upstreams)
    rt = edge_env.edge._rt
    assert rt is not None
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", edge_env.https, ssl=client_tls(), server_hostname=HOST
    )
    try:
        writer.write(f"GET /big?size=300000 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        assert body == b"x" * 300_000
        objects = [
            conn.transport.get_extra_info("ssl_object")
            for conn in rt.connections
            if conn.transport is not None
        ]
        direct = [o for o in objects if o is not None and type(o).__name__ == "DirectSSLObject"]
        assert direct, objects
        for obj in direct:
            for name in ("read", "write", "pending"):
                assert type(getattr(obj, name)).__name__ == "builtin_function_or_method", name
    finally:
        writer.close()


async def test_head_request_gets_headers_only_and_connection_is_reused(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    payload = (
        f"HEAD /x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        f"GET /y HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    ).encode()
    raw = await raw_exchange(edge_env.https, payload, tls=True, sni=HOST)
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.count(b'"path_qs"') == 1 and b'"/y"' in raw


async def test_websocket_echo_through_the_proxy(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"wss://127.0.0.1:{edge_env.https}/ws",
            headers={"Host": HOST},
            ssl=client_tls(),
            server_hostname=HOST,
        ) as ws:
            for i in range(3):
                await ws.send_str(f"hi{i}")
                assert (await ws.receive_str(timeout=5)) == f"echo:hi{i}"
            await ws.send_bytes(b"\x00\x01" * 5000)
            assert (await ws.receive_bytes(timeout=5)) == b"\x00\x01" * 5000


async def test_unreachable_backend_gives_generic_502_and_logs_details(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    from tako_server.edge import Backend
    from tests.integration.test_edge_harness import free_port

    edge_env.hooks.add("dead/prod", ["dead.example.com"], [Backend(9, "127.0.0.1", free_port())])
    await edge_env.apply("dead.example.com", "/", expect=502)
    response = await raw_request(edge_env.https, "dead.example.com", "/", tls=True)
    assert response.status == 502
    assert b"127.0.0.1" not in response.body
    assert any(
        key == "dead/prod" and "cannot connect" in line for key, line in edge_env.hooks.logs
    )


async def test_backend_removed_mid_request_still_completes_it(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    slow = asyncio.create_task(raw_request(edge_env.https, HOST, "/slow?delay=1.0", tls=True))
    await asyncio.sleep(0.3)
    edge_env.hooks.add("app/prod", [HOST], [upstreams[1].backend])  # instance 1 leaves
    await edge_env.apply(HOST, "/")
    response = await slow
    assert (response.status, response.body) == (200, b"slow done 1")
    after = await raw_request(edge_env.https, HOST, "/", tls=True)
    assert json.loads(after.body)["instance"] == 2


async def test_stop_lets_in_flight_requests_finish(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    slow = asyncio.create_task(raw_request(edge_env.https, HOST, "/slow?delay=0.8", tls=True))
    await asyncio.sleep(0.3)
    await edge_env.edge.stop(5.0)
    response = await slow
    assert response.status == 200
    with pytest.raises(OSError):
        await raw_request(edge_env.https, HOST, "/", tls=True)


async def test_least_connections_spreads_load_over_backends(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    edge_env.hooks.add("lb/prod", ["lb.example.com"], [u.backend for u in upstreams])
    await edge_env.apply("lb.example.com", "/")
    results = await asyncio.gather(
        *(
            raw_request(edge_env.https, "lb.example.com", "/slow?delay=0.3", tls=True)
            for _ in range(9)
        )
    )
    seen = {r.body for r in results}
    assert seen == {b"slow done 1", b"slow done 2", b"slow done 3"}


async def test_activity_is_reported_per_instance(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    await raw_request(edge_env.https, HOST, "/slow?delay=0.3", tls=True)
    deadline = asyncio.get_running_loop().time() + 5
    while asyncio.get_running_loop().time() < deadline:
        reports = [a for a in edge_env.hooks.activity if a[0] == "app/prod"]
        if any(a[1] == {1: 1} for a in reports) and reports[-1][1] == {}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"no activity reports: {edge_env.hooks.activity}")
    reporters = {a[2] for a in edge_env.hooks.activity}
    assert reporters <= ({"edge"} if edge_env.workers == 0 else {"edge-0", "edge-1"})


async def test_close_delimited_response_from_an_http10_app_is_relayed(edge_env: EdgeEnv) -> None:
    """A stdlib-style app answering HTTP/1.0 without Content-Length: the body ends at close."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold-style body")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        from tako_server.edge import Backend

        edge_env.hooks.add("old/prod", ["old.example.com"], [Backend(5, "127.0.0.1", port)])
        await edge_env.apply("old.example.com", "/")
        raw = await raw_exchange(
            edge_env.https,
            b"GET / HTTP/1.1\r\nHost: old.example.com\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: old.example.com\r\nConnection: close\r\n\r\n",
            tls=True,
            sni="old.example.com",
        )
    finally:
        server.close()
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.count(b"old-style body") == 2
    assert b"Transfer-Encoding: chunked" in raw
