"""Cold starts through the hooks, bounded memory on big downloads, many parallel clients."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tako_server.edge import Backend, ColdStartError, ColdStartKind
from tests.integration.test_edge_harness import (
    EdgeEnv,
    FixedHooks,
    Upstream,
    client_tls,
    edge_env,
    raw_request,
    rss_kb,
    start_edge,
    upstreams,
)

__all__ = ["edge_env", "upstreams"]

HOST = "app.example.com"


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (ColdStartError(ColdStartKind.REJECTED, "cold-start queue of app/prod is full"), 503, "1"),
        (ColdStartError(ColdStartKind.FAILED, "instance exited during startup"), 502, None),
        (ColdStartError(ColdStartKind.TIMEOUT, "not ready in 30s"), 504, None),
        (RuntimeError("hooks broke their rule"), 502, None),
    ],
    ids=["rejected", "failed", "timeout", "other"],
)
async def test_cold_start_failures_map_to_statuses(
    edge_env: EdgeEnv, error: Exception, status: int, retry_after: str | None
) -> None:
    async def cold(key: str) -> list[Backend]:
        raise error

    edge_env.hooks.cold = cold
    edge_env.hooks.add("app/prod", [HOST], [], cold_start=True)
    await edge_env.apply(HOST, "/", expect=status)
    response = await raw_request(edge_env.https, HOST, "/", tls=True)
    assert response.status == status
    assert response.headers.get("retry-after") == retry_after
    assert str(error) not in response.body.decode()
    assert any(str(error) in line for _, line in edge_env.hooks.logs)


async def test_cold_start_waits_for_the_instance_then_proxies(
    edge_env: EdgeEnv, upstreams: list[Upstream]
) -> None:
    started = asyncio.Event()

    async def cold(key: str) -> list[Backend]:
        started.set()
        await asyncio.sleep(0.3)  # the instance boots
        return [upstreams[1].backend]

    edge_env.hooks.cold = cold
    edge_env.hooks.add("app/prod", [HOST], [], cold_start=True)
    edge_env.push()
    deadline = time.monotonic() + 10
    while True:
        response = await raw_request(edge_env.https, HOST, "/hello", tls=True)
        if response.status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert response.status == 200
    assert b'"instance":2' in response.body.replace(b" ", b"")
    assert started.is_set()


async def test_app_without_instances_and_no_cold_start_is_503(edge_env: EdgeEnv) -> None:
    edge_env.hooks.add("app/prod", [HOST], [])
    await edge_env.apply(HOST, "/", expect=503)


@pytest.fixture
async def edge_workers(tmp_path: Path) -> AsyncIterator[EdgeEnv]:
    hooks = FixedHooks()
    edge = await start_edge(tmp_path, hooks, 2)
    try:
        yield EdgeEnv(edge, hooks, 2)
    finally:
        await edge.stop(2.0)


async def test_100mb_download_streams_with_bounded_memory(
    edge_workers: EdgeEnv, upstreams: list[Upstream]
) -> None:
    env = edge_workers
    env.hooks.add("app/prod", [HOST], [upstreams[0].backend])
    await env.apply(HOST, "/")
    pids = env.edge.worker_pids
    before = {pid: rss_kb(pid) for pid in pids}
    peak = dict(before)
    size = 100 * 1024 * 1024
    received = 0
    async with aiohttp.ClientSession(read_bufsize=64 * 1024) as session:
        async with session.get(
            f"https://127.0.0.1:{env.https}/big?size={size}",
            headers={"Host": HOST},
            ssl=client_tls(),
            server_hostname=HOST,
        ) as response:
            assert response.status == 200
            first = await response.content.read(64 * 1024)
            received += len(first)
            # Stall: without backpressure the edge would now buffer the whole body.
            stall_end = time.monotonic() + 1.5
            while time.monotonic() < stall_end:
                for pid in pids:
                    peak[pid] = max(peak[pid], rss_kb(pid))
                await asyncio.sleep(0.1)
            async for chunk in response.content.iter_chunked(1024 * 1024):
                received += len(chunk)
                for pid in pids:
                    peak[pid] = max(peak[pid], rss_kb(pid))
    assert received == size
    growth_mb = max(peak[pid] - before[pid] for pid in pids) / 1024
    assert growth_mb < 100, f"edge worker RSS grew by {growth_mb:.0f} MB"


@pytest.mark.slow
async def test_200_parallel_clients_for_10s_without_errors(
    edge_workers: EdgeEnv, upstreams: list[Upstream]
) -> None:
    env = edge_workers
    env.hooks.add("app/prod", [HOST], [u.backend for u in upstreams])
    await env.apply(HOST, "/")
    stop_at = time.monotonic() + 10
    ok = 0
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=200, ssl=client_tls())

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        while time.monotonic() < stop_at:
            try:
                async with session.get(
                    f"https://127.0.0.1:{env.https}/load",
                    headers={"Host": HOST},
                    server_hostname=HOST,
                ) as response:
                    await response.read()
                    if response.status == 200:
                        ok += 1
                    else:
                        errors.append(f"status {response.status}")
            except (aiohttp.ClientError, OSError) as exc:
                errors.append(repr(exc))

    async with aiohttp.ClientSession(connector=connector) as session:
        async with asyncio.timeout(60):
            await asyncio.gather(*(client(session) for _ in range(200)))
    assert errors == []
    assert ok > 1000
    assert all(rss_kb(pid) < 200 * 1024 for pid in env.edge.worker_pids)
    assert os.getpid() not in env.edge.worker_pids
