"""Helpers for supervisor integration tests: specs for the test apps, loopback HTTP, polling.

Rules: requests go only to 127.0.0.1; every wait polls a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from tako_server.routing import RoutingState
from tako_server.supervisor import LaunchSpec, Supervisor, SupervisorSettings

APPS = Path(__file__).resolve().parent
PYAPP = APPS / "pyapp.py"
NODEAPP = APPS / "server.js"

FAST = SupervisorSettings(
    health_interval=0.2,
    unhealthy_after=2,
    dead_after=5,
    startup_timeout=5.0,
    drain_timeout=3.0,
    stop_grace=1.0,
    restart_backoff_base=0.1,
    restart_backoff_cap=2.0,
    backoff_reset_after=30.0,
    cold_start_queue=100,
    cold_start_timeout=5.0,
    idle_check_interval=0.1,
    startup_probe_interval=0.05,
    probe_timeout=1.0,
    tick_interval=0.05,
)


def make_spec(
    root: Path,
    version: str = "v1",
    *,
    env: dict[str, str] | None = None,
    node: bool = False,
    app: str = "shop",
) -> LaunchSpec:
    """A release dir under ``root`` with the test app copied in."""
    workdir = root / "releases" / version
    workdir.mkdir(parents=True, exist_ok=True)
    source = NODEAPP if node else PYAPP
    shutil.copy(source, workdir / source.name)
    command = ["node", source.name] if node else [sys.executable, source.name]
    environ = {
        "APP_VERSION": version,
        "TAKO_ENV": "production",
        "TAKO_BUILD": version,
        "TAKO_APP_NAME": app,
    } | (env or {})
    return LaunchSpec(
        app=app,
        env="production",
        version=version,
        workdir=workdir,
        command=command,
        environ=environ,
        log_dir=root / "shared" / "logs",
    )


async def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET http://127.0.0.1:port/path; returns (status, parsed JSON or text)."""

    async def fetch() -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    return await asyncio.wait_for(fetch(), timeout)


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float, what: str = "condition"
) -> float:
    """Poll ``condition`` every 20 ms until it holds; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.asynccontextmanager
async def running_supervisor(
    settings: SupervisorSettings = FAST,
    on_change: Callable[[], None] | None = None,
    routing: RoutingState | None = None,
) -> AsyncIterator[Supervisor]:
    """A Supervisor that is shut down (every instance stopped) when the block ends."""
    supervisor = Supervisor(settings, routing=routing, on_change=on_change)
    try:
        yield supervisor
    finally:
        try:
            await asyncio.wait_for(supervisor.shutdown(), 20)
        finally:
            supervisor.kill_all()
