"""Workflow workers outlive tako-server, as app instances do (``test_adoption.py``).

A failed takeover (the old server takes its workers back), a SIGHUP takeover and a
``kill -9`` + restart of the daemon: the same worker pids before
and after, exactly the group's count (no doubles), a run claimed before the hand-over is
finished by the worker that claimed it (one attempt, the lease is not handed to another
worker), each worker's numbered output lines are in the app log exactly once, a worker
that died while no daemon ran is replaced (its run goes back to the queue at once), a
``systemctl restart`` (``prepare-stop --keep-apps`` + SIGTERM) keeps them and a plain stop
(``systemctl stop``) stops them.
"""

from __future__ import annotations

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
from tests.integration.conftest import APPS_DIR, ServerProcess, deploy_message, free_port
from tests.integration.test_adoption import app_lines, assert_contiguous, kill_groups
from tests.integration.test_upgrade import (
    kill_daemon,
    make_server,
    pid_alive,
    server_info,
    wait_for,
)
from tests.integration.test_workflows import WORKER, _call, _group

__all__ = ["make_server"]

pytestmark = pytest.mark.timeout(120)

APP = {"app": "web", "env": "production"}
TICKER = '''
def _tick() -> None:  # numbered lines, so a gap or a doubled line shows
    n = 0
    while True:
        n += 1
        say(f"wtick {os.getpid()} {n}")
        time.sleep(0.01)


threading.Thread(target=_tick, daemon=True).start()

'''


def ticking_worker(dest: Path) -> None:
    text = WORKER.read_text()
    marker = 'if __name__ == "__main__":'
    dest.write_text(text.replace(marker, TICKER + marker, 1))


def deploy(server: ServerProcess, tmp_path: Path, workers: int) -> None:
    src = tmp_path / "src"
    shutil.copytree(APPS_DIR / "pyapp", src)
    ticking_worker(src / "worker.py")
    name, sha = place_artifact(tar_zst_from_dir(src), server.incoming)
    groups = [_group("jobs", workers, concurrency=1)]
    with server.client() as client:
        client.ok(deploy_message(name, sha, workflows={"groups": groups}))


def worker_pids(server: ServerProcess) -> set[int]:
    """Every live process started as a worker of this server (found by its API URL)."""
    url = f"TAKO_API_URL=http://127.0.0.1:{server.extra_env['TAKO_WORKFLOWS_PORT']}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if url in environ and any(v.startswith(b"TAKO_WORKER_ID=") for v in environ):
            pid = int(entry.name)
            if pid_alive(pid):
                found.add(pid)
    return found


def group_status(server: ServerProcess) -> dict[str, Any]:
    with server.client() as client:
        data = client.ok({"command": "workflows", **APP})
    group: dict[str, Any] = data["groups"][0]
    return group


def run_of(server: ServerProcess, run_id: int) -> dict[str, Any]:
    status, body = _call(server, f"/v1/runs/{run_id}")
    assert status == 200, body
    run: dict[str, Any] = body["run"]
    return run


def start_run(server: ServerProcess, sleep: float) -> int:
    status, body = _call(server, "/v1/runs", {"group": "jobs", "payload": {"sleep": sleep}})
    assert status == 201, body
    run_id: int = body["run"]["id"]
    wait_for(lambda: run_of(server, run_id)["state"] == "running", f"run {run_id} claimed", 20)
    return run_id


def finished(server: ServerProcess, run_id: int, worker: str) -> None:
    wait_for(lambda: run_of(server, run_id)["state"] == "done", f"run {run_id} done", 30)
    run = run_of(server, run_id)
    assert (run["attempts"], run["worker"]) == (1, worker), run


def settled_pids(server: ServerProcess, count: int) -> set[int]:
    """The worker pids once ``count`` run and stay so for a second (a double would show)."""
    wait_for(lambda: len(worker_pids(server)) == count, f"{count} workers", 30)
    pids = worker_pids(server)
    time.sleep(1.0)
    assert worker_pids(server) == pids
    assert group_status(server)["running"] == count
    return pids


def ticks(lines: list[str], pid: int) -> list[int]:
    pattern = re.compile(rf"\[out\] \[-\] \[jobs\] wtick {pid} (\d+)$")
    return [int(m.group(1)) for line in lines if (m := pattern.search(line))]


@pytest.fixture
def seen_pids() -> Iterator[set[int]]:
    pids: set[int] = set()
    yield pids
    kill_groups(pids)


def workflows_server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server(0, env={"TAKO_WORKFLOWS_PORT": str(free_port())})


def test_workers_survive_a_takeover_and_a_kill_9_restart_and_are_adopted(
    make_server: Callable[..., ServerProcess], tmp_path: Path, seen_pids: set[int]
) -> None:
    server = workflows_server(make_server)
    deploy(server, tmp_path, 2)
    before = settled_pids(server, 2)
    seen_pids.update(before)

    # 0. a takeover whose successor cannot start: the old server takes its workers back
    config = server.data_dir / "server-config.toml"
    config.write_text("[server]\nno_such_setting = 1\n")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "takeover failed" in server.output(), "the failed takeover", 30)
    config.unlink()
    assert settled_pids(server, 2) == before

    # 1. SIGHUP takeover while a run is in flight
    run_id = start_run(server, 3)
    worker = run_of(server, run_id)["worker"]
    assert server.proc is not None
    old = server.proc
    old.send_signal(signal.SIGHUP)
    assert old.wait(60) == 0
    server.proc = None
    seen_pids.update(worker_pids(server))
    assert settled_pids(server, 2) == before
    finished(server, run_id, worker)

    # 2. kill -9 of the daemon while a run is in flight, then a new daemon
    run_id = start_run(server, 3)
    worker = run_of(server, run_id)["worker"]
    kill_daemon(server, server_info(server)["pid"])
    time.sleep(0.5)  # the workers run (and print) with no daemon at all
    assert worker_pids(server) == before
    server.start()
    seen_pids.update(worker_pids(server))
    assert settled_pids(server, 2) == before
    finished(server, run_id, worker)

    # 3. each worker's numbered lines are in the log exactly once, across both hand-overs
    time.sleep(0.3)
    lines = app_lines(server, "web")
    for pid in before:
        assert_contiguous(ticks(lines, pid), f"worker {pid}")
    assert sum("adopted worker" in line for line in lines) == 6, "2 workers, 3 adoptions"


def test_a_dead_worker_is_replaced_a_restart_keeps_workers_and_a_stop_stops_them(
    make_server: Callable[..., ServerProcess], tmp_path: Path, seen_pids: set[int]
) -> None:
    server = workflows_server(make_server)
    deploy(server, tmp_path, 2)
    before = settled_pids(server, 2)
    seen_pids.update(before)
    run_id = start_run(server, 30)
    holder = run_of(server, run_id)["worker"]
    [victim] = [p for p in before if f"TAKO_WORKER_ID={holder}".encode()
                in Path(f"/proc/{p}/environ").read_bytes().split(b"\0")]

    kill_daemon(server, server_info(server)["pid"])
    os.killpg(victim, signal.SIGKILL)  # dies while no server watches, holding a run
    wait_for(lambda: not pid_alive(victim), "the worker to die", 10)
    server.start()
    now = settled_pids(server, 2)
    seen_pids.update(now)
    assert victim not in now and len(now & before) == 1
    lines = app_lines(server, "web")
    assert any(f"worker pid {victim} exited while no tako-server watched it" in line
               for line in lines)
    # its run went back to the queue at once (not after its 30 s lease) and runs again
    wait_for(lambda: run_of(server, run_id)["attempts"] == 2, "the run retried", 15)

    # what systemctl restart does (prepare-stop --keep-apps, SIGTERM) keeps them
    done = subprocess.run(
        [sys.executable, "-m", "tako_server.cli", "prepare-stop", "--data-dir",
         str(server.data_dir), "--keep-apps"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    server.stop()
    assert worker_pids(server) == now
    server.start()
    assert settled_pids(server, 2) == now

    server.stop()  # SIGTERM without the keep-apps marker: a stop stops the workers too
    wait_for(lambda: not worker_pids(server), "the workers to stop", 30)
