"""Edge hardening found in review: header/URL size limits, pipelined slowloris, bodies
that trickle after the edge answered, absolute-form targets, and pipelined answers that a
client never reads. header_timeout is 1.5 s in these tests (see the harness)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.integration.test_edge_harness import (
    EdgeEnv,
    Upstream,
    edge_env,
    parse_response,
    raw_exchange,
    rss_kb,
    upstreams,
)

__all__ = ["edge_env", "upstreams"]

HOST = "app.example.com"


async def setup_app(env: EdgeEnv, ups: list[Upstream]) -> None:
    env.hooks.add("app/prod", [HOST], [ups[0].backend])
    await env.apply(HOST, "/")


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("X-A: " + "a" * 70_000 + "\r\n", 431),
        ("".join(f"X-{i}: v\r\n" for i in range(300)), 431),
    ],
    ids=["one-huge-header", "too-many-headers"],
)
async def test_oversized_request_heads_get_431(
    edge_env: EdgeEnv, upstreams: list[Upstream], extra: str, status: int
) -> None:
    await setup_app(edge_env, upstreams)
    payload = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode()
    assert parse_response(await raw_exchange(edge_env.http, payload)).status == status


async def test_a_header_streamed_without_end_gets_431_once_past_the_cap(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_env.http)
    writer.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: ".encode())
    for _ in range(4):  # 256 KiB of one header value that never ends
        writer.write(b"a" * 65536)
        await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read(65536)
    writer.close()
    assert parse_response(answer).status == 431


async def test_an_overlong_url_gets_414(edge_env: EdgeEnv, upstreams: list[Upstream]) -> None:
    await setup_app(edge_env, upstreams)
    payload = f"GET /{'x' * 20_000} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    assert parse_response(await raw_exchange(edge_env.http, payload)).status == 414


async def test_absolute_form_reaches_the_app_as_origin_form(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    ok = f"GET http://{HOST}/echo?a=1 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    response = parse_response(await raw_exchange(edge_env.http, ok.encode()))
    # plain HTTP to a public host redirects; the point is what the app would see, so use TLS
    if response.status == 307:
        response = parse_response(
            await raw_exchange(edge_env.https, ok.encode(), tls=True, sni=HOST)
        )
    assert response.status == 200 and json.loads(response.body)["path_qs"] == "/echo?a=1"
    bad = f"GET http://evil.internal/admin HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    response = parse_response(await raw_exchange(edge_env.https, bad.encode(), tls=True, sni=HOST))
    assert response.status == 400


async def test_a_pipelined_request_trickling_its_headers_is_cut_off(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_env.http)
    writer.write(f"GET /x.txt HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET / HTTP/1.1\r\nHost: a".encode())
    await writer.drain()
    started = time.monotonic()
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass
    writer.close()
    assert time.monotonic() - started < 6  # header_timeout 1.5 s (+ linger)


async def test_a_body_trickling_after_the_edge_answered_is_cut_off(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_env.http)
    writer.write(
        b"POST /a.txt HTTP/1.1\r\nHost: nosuch.localhost\r\nContent-Length: 1000\r\n\r\nabc"
    )
    await writer.drain()
    started = time.monotonic()
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass
    writer.close()
    assert time.monotonic() - started < 6


async def test_pipelined_answers_to_a_client_that_does_not_read_stay_bounded(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    await setup_app(edge_env, upstreams)
    pids = edge_env.edge.worker_pids or [__import__("os").getpid()]
    before = sum(rss_kb(p) for p in pids)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_env.http)
    request = b"GET /nowhere HTTP/1.1\r\nHost: unknown.example.org\r\n\r\n"
    try:
        for _ in range(200):  # bounded: at most 200 * 1000 requests (10 MiB)
            writer.write(request * 1000)
            await asyncio.wait_for(writer.drain(), 2)
    except (TimeoutError, ConnectionError):
        pass  # the edge stopped reading: that is the point
    grown = sum(rss_kb(p) for p in pids) - before
    writer.transport.abort()
    assert grown < 100 * 1024, f"edge grew by {grown} KiB for one non-reading client"
