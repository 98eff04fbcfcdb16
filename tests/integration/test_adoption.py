"""App instances outlive tako-server: a SIGHUP takeover, then a ``kill -9`` and a restart
of the daemon, with three apps under a request loop.

What must hold: zero failed requests (through the edge across the takeover; straight to
the instances while no daemon runs after the ``kill -9``), the same app pids before and
after, the apps' output continues in their logs with no line lost or doubled (each app
prints numbered lines), and a crash after the adoption is noticed and the instance is
replaced. A ``prepare-stop --keep-apps`` + SIGTERM (what ``systemctl restart`` does)
keeps the apps; a plain SIGTERM (``systemctl stop``) stops them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import APPS_DIR, ServerProcess, deploy_message
from tests.integration.test_upgrade import (
    Load,
    Target,
    make_server,
    pid_alive,
    run_load,
    server_info,
    until,
    wait_for,
)

__all__ = ["make_server"]  # the fixture, shared with the takeover tests

pytestmark = pytest.mark.timeout(150)

APPS = ("alpha", "beta", "gamma")
TICKER = """
import os, threading, time

def tick():  # one write(2) per line: lines of two threads never interleave
    n = 0
    while True:
        n += 1
        os.write(1, f"tick {n}\\n".encode())
        if n % 5 == 0:
            os.write(2, f"etick {n // 5}\\n".encode())
        time.sleep(0.01)

Handler.log_message = lambda self, *args: None
threading.Thread(target=tick, daemon=True).start()
"""


def ticker_app(tmp_path: Path, name: str) -> Path:
    """The test pyapp plus a thread that prints numbered lines (stdout and stderr)."""
    src = tmp_path / f"src-{name}"
    shutil.copytree(APPS_DIR / "pyapp", src)
    app = src / "app.py"
    text = app.read_text()
    app.write_text(text.replace("\ndef main() -> None:", TICKER + "\n\ndef main() -> None:", 1))
    return src


def deploy(server: ServerProcess, tmp_path: Path, name: str) -> None:
    artifact, digest = place_artifact(tar_zst_from_dir(ticker_app(tmp_path, name)), server.incoming)
    with server.client() as client:
        client.ok(deploy_message(artifact, digest, app=name, routes=[f"{name}.localhost"]))


def status(server: ServerProcess, name: str) -> dict[str, Any]:
    with server.client() as client:
        reply = client.ok({"command": "status", "app": name, "env": "production"})
    app: dict[str, Any] = reply["apps"][0]
    return app


def healthy_pids(server: ServerProcess) -> dict[str, set[int]]:
    result = {}
    for name in APPS:
        instances = status(server, name)["instances"]
        result[name] = {i["pid"] for i in instances if i["state"] == "healthy"}
    return result


def app_lines(server: ServerProcess, name: str) -> list[str]:
    with server.client() as client:
        reply = client.ok({"command": "logs", "app": name, "env": "production", "lines": 100_000})
    lines: list[str] = reply["lines"]
    return lines


def numbers(lines: list[str], stream: str, word: str, instance: int) -> list[int]:
    pattern = re.compile(rf"\[{stream}\] \[{instance}\] {word} (\d+)$")
    return [int(m.group(1)) for line in lines if (m := pattern.search(line))]


def assert_contiguous(values: list[int], what: str) -> None:
    assert values, f"no {what} lines"
    expected = list(range(values[0], values[0] + len(values)))
    if values != expected:
        dups = sorted({v for v in values if values.count(v) > 1})
        gaps = sorted(set(range(values[0], values[-1] + 1)) - set(values))
        raise AssertionError(f"{what}: duplicates {dups[:10]}, gaps {gaps[:10]}")


async def direct_loop(ports: list[int], stop: asyncio.Event, failures: list[str]) -> int:
    """GET / straight from the instances (no edge) until ``stop``; the count of answers."""
    ok = 0
    while not stop.is_set():
        for port in ports:
            target = Target("127.0.0.1", port, body=b"hello from pyapp")
            writer = None
            try:
                reader, writer = await target.connect()
                writer.write(target.request(close=True))
                data = await asyncio.wait_for(reader.read(), 10)
                if b" 200 " not in data.split(b"\r\n", 1)[0] + b" ":
                    failures.append(f"port {port}: {data[:80]!r}")
                else:
                    ok += 1
            except Exception as exc:
                failures.append(f"port {port}: {exc!r}")
            finally:
                if writer is not None:
                    writer.close()
        await asyncio.sleep(0.01)
    return ok


async def get(target: Target, path: str) -> bytes:
    reader, writer = await target.connect()
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return await reader.read()
    finally:
        writer.close()


def kill_groups(pids: set[int]) -> None:
    """Teardown: the instances this test saw (by pid) must not outlive it."""
    for pid in pids:
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def seen_pids() -> Iterator[set[int]]:
    pids: set[int] = set()
    yield pids
    kill_groups(pids)


async def test_apps_survive_a_takeover_and_a_kill_9_restart_and_are_adopted(
    make_server: Callable[..., ServerProcess], tmp_path: Path, seen_pids: set[int]
) -> None:
    server = await asyncio.to_thread(make_server, 0)
    assert server.proc is not None
    for name in APPS:
        await asyncio.to_thread(deploy, server, tmp_path, name)
    before = await asyncio.to_thread(healthy_pids, server)
    seen_pids.update(*before.values())
    assert all(len(p) == 1 for p in before.values()), before

    # 1. SIGHUP takeover under load through the edge
    loads = [Load(Target("127.0.0.1", server.http_port, host=f"{n}.localhost")) for n in APPS]
    loaders = [asyncio.create_task(run_load(load, clients=1)) for load in loads]
    await until(lambda: all(load.ok >= 50 for load in loads), "load warm-up", 15)
    old = server.proc
    old.send_signal(signal.SIGHUP)
    assert await asyncio.to_thread(old.wait, 60) == 0
    counts = [load.ok for load in loads]
    await until(
        lambda: all(load.ok >= c + 50 for load, c in zip(loads, counts, strict=True)),
        "requests to the successor",
        15,
    )
    for load in loads:
        load.stop.set()
    await asyncio.gather(*loaders)
    failures = [f for load in loads for f in load.failures]
    assert failures == [], failures[:5]
    successor = (await asyncio.to_thread(server_info, server))["pid"]
    assert successor != old.pid
    assert await asyncio.to_thread(healthy_pids, server) == before

    # 2. kill -9 of the daemon, a request loop straight to the instances, a new daemon
    ports = [status(server, n)["instances"][0]["port"] for n in APPS]
    stop, direct_failures = asyncio.Event(), []
    direct = asyncio.create_task(direct_loop(ports, stop, direct_failures))
    await asyncio.sleep(0.3)
    os.kill(successor, signal.SIGKILL)
    await asyncio.to_thread(wait_for, lambda: not pid_alive(successor), "the killed daemon", 10)
    await asyncio.sleep(0.5)  # the apps run (and print) with no daemon at all
    server.proc = None
    await asyncio.to_thread(server.start)
    await asyncio.sleep(0.5)
    stop.set()
    served = await direct
    assert direct_failures == [], direct_failures[:5]
    assert served > 50
    assert await asyncio.to_thread(healthy_pids, server) == before
    assert all(pid_alive(p) for pids in before.values() for p in pids)
    after_restart = Load(Target("127.0.0.1", server.http_port, host="alpha.localhost"))
    after_restart.max_requests = 100
    await run_load(after_restart, clients=1, limit=10)
    assert after_restart.failures == [] and after_restart.ok >= 100

    # 3. logs: every numbered line exactly once, across both hand-overs
    await asyncio.sleep(0.3)
    for name in APPS:
        lines = await asyncio.to_thread(app_lines, server, name)
        assert_contiguous(numbers(lines, "out", "tick", 1), f"{name} stdout")
        assert_contiguous(numbers(lines, "err", "etick", 1), f"{name} stderr")
        assert any("adopted version v1: pid" in line for line in lines), name

    # 4. a crash after the adoption is noticed and the instance replaced
    port = status(server, "beta")["instances"][0]["port"]
    crash = Target("127.0.0.1", port, body=b"bye")
    await asyncio.wait_for(get(crash, "/crash"), 10)
    beta_old = before["beta"]

    def replaced() -> bool:
        pids = healthy_pids(server)["beta"]
        seen_pids.update(pids)
        return bool(pids) and pids.isdisjoint(beta_old)

    await asyncio.to_thread(wait_for, replaced, "beta replaced after its crash", 30)
    lines = await asyncio.to_thread(app_lines, server, "beta")
    assert any("exited unexpectedly (exit status unknown" in line for line in lines)
    now = await asyncio.to_thread(healthy_pids, server)
    assert (now["alpha"], now["gamma"]) == (before["alpha"], before["gamma"])


def test_a_restart_keeps_the_apps_and_a_stop_stops_them(
    make_server: Callable[..., ServerProcess], tmp_path: Path, seen_pids: set[int]
) -> None:
    server = make_server(0)
    deploy(server, tmp_path, "alpha")
    pids = healthy_pids_of(server, "alpha")
    seen_pids.update(pids)

    prepare = [sys.executable, "-m", "tako_server.cli", "prepare-stop"]
    done = subprocess.run(
        [*prepare, "--data-dir", str(server.data_dir), "--keep-apps"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (server.data_dir / "keep-apps").is_file()
    server.stop()  # SIGTERM: what systemd sends after ExecStop
    assert not (server.data_dir / "keep-apps").exists()
    assert all(pid_alive(p) for p in pids)
    server.start()
    assert healthy_pids_of(server, "alpha") == pids

    server.stop()  # no marker: a stop, the apps stop with the server
    wait_for(lambda: not any(pid_alive(p) for p in pids), "the instances to stop", 30)


def test_an_instance_that_died_while_no_server_ran_is_replaced(
    make_server: Callable[..., ServerProcess], tmp_path: Path, seen_pids: set[int]
) -> None:
    server = make_server(0)
    deploy(server, tmp_path, "alpha")
    [pid] = healthy_pids_of(server, "alpha")
    seen_pids.add(pid)
    assert server.proc is not None
    server.proc.kill()  # kill -9: the app keeps running
    server.proc.wait(10)
    server.proc = None
    assert pid_alive(pid)
    os.killpg(pid, signal.SIGKILL)  # and dies while no server watches
    wait_for(lambda: not pid_alive(pid), "the instance to die", 10)

    server.start()
    new = healthy_pids_of(server, "alpha")
    seen_pids.update(new)
    assert pid not in new
    lines = app_lines(server, "alpha")
    assert any(
        f"pid {pid} exited while no tako-server watched it: replacing it" in line for line in lines
    )
    assert numbers(lines, "out", "tick", 1), "the dead instance's output was copied to the log"


def healthy_pids_of(server: ServerProcess, name: str, timeout: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {i["pid"] for i in status(server, name)["instances"] if i["state"] == "healthy"}
        if pids:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{name} has no healthy instance after {timeout}s")
