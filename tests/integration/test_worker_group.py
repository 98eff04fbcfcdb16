"""A :class:`WorkerGroup` with real processes, without a daemon: stopping a worker that
ignores SIGTERM leaves nothing behind, a worker waiting to restart (or still spawning)
stops without waiting out the grace, and new worker ids never repeat a live or recorded one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tako_common.protocol import WorkflowGroupSpec, WorkflowsSpec
from tako_server.supervisor.adopt import read_worker_records
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.spec import LaunchSpec
from tako_server.workflows import workers
from tako_server.workflows.service import WorkflowService
from tako_server.workflows.workers import WORKERS_DIR, WorkerGroup, adopt_worker

DEAF = ["sh", "-c", "trap '' TERM; echo hi; sleep 30"]


def group(tmp_path: Path, command: list[str], **kw: object) -> tuple[WorkerGroup, list[str]]:
    exits: list[str] = []
    made = WorkerGroup(
        "jobs", command, tmp_path, {}, AppLog(tmp_path / "logs"), id_prefix="boot.a.e.jobs.v1",
        on_exit=exits.append, **kw,  # type: ignore[arg-type]
    )
    return made, exits


def other_tasks() -> list[str]:
    me = asyncio.current_task()
    return sorted(t.get_name() for t in asyncio.all_tasks() if t is not me)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_worker_killed_after_the_grace_leaves_no_task_fd_or_file(tmp_path: Path) -> None:
    jobs, exits = group(tmp_path, DEAF)
    jobs.log.write("before")  # the app log's own file is open from here on
    fds = open_fds()
    await jobs.scale(1, 0.5)
    await asyncio.sleep(0.5)
    pid = jobs.workers[0].pid
    assert pid is not None
    await jobs.scale(0, 0.5)  # SIGTERM is ignored: SIGKILL after the grace
    try:
        assert other_tasks() == []
        assert list((tmp_path / "logs" / WORKERS_DIR).iterdir()) == []
        assert exits == ["boot.a.e.jobs.v1-1"]
        assert open_fds() == fds
    finally:
        with_pid_gone(pid)


def with_pid_gone(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def test_a_worker_waiting_to_restart_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "BACKOFF_BASE", 20.0)
    jobs, exits = group(tmp_path, ["false"])
    await jobs.scale(1, 5.0)
    for _ in range(100):
        if exits:
            break
        await asyncio.sleep(0.05)
    assert exits, "the worker never exited"
    started = time.monotonic()
    await jobs.stop(5.0)
    assert time.monotonic() - started < 1.0
    assert other_tasks() == []


async def test_a_stop_while_the_worker_spawns_sends_sigterm(tmp_path: Path) -> None:
    jobs, _ = group(tmp_path, ["sleep", "30"])
    await jobs.scale(1, 5.0)
    worker = jobs.workers[0]
    await asyncio.sleep(0)  # the task forks and waits for the transport: no handle yet
    assert worker.handle is None
    started = time.monotonic()
    await jobs.stop(5.0)
    assert worker.handle is not None, "no process was spawned"
    try:
        assert time.monotonic() - started < 2.0
        assert worker.handle.returncode == -signal.SIGTERM
    finally:
        with_pid_gone(worker.handle.pid)


async def test_new_worker_ids_skip_adopted_and_recorded_ones_and_leave_draining(
    tmp_path: Path,
) -> None:
    owned: set[str] = set()
    draining: set[str] = set()
    first, _ = group(tmp_path, ["sleep", "30"], owned=owned, draining=draining)
    await first.scale(2, 1.0)
    await asyncio.sleep(0.3)
    await first.release()  # a takeover: both keep running, their records stay
    records = read_worker_records(tmp_path / "logs" / WORKERS_DIR)
    pids = [r.pid for r in records]
    try:
        os.killpg(records[1].pid, signal.SIGKILL)  # -2 dies meanwhile (its record stays)
        second, _ = group(tmp_path, ["sleep", "30"], owned=owned, draining=draining)
        handle = adopt_worker(records[0], second.log)
        assert handle is not None
        second.adopt(records[0].worker_id, handle)
        await second.scale(2, 1.0)
        ids = [w.worker_id for w in second.workers]
        assert ids == ["boot.a.e.jobs.v1-1", "boot.a.e.jobs.v1-3"]
        draining.update(ids)
        await second.stop(1.0)
        assert draining == set()
        assert owned == set()
    finally:
        for pid in pids:
            with_pid_gone(pid)


async def test_a_same_version_restart_gives_new_ids_that_claim_runs(tmp_path: Path) -> None:
    svc = WorkflowService(tmp_path, 1, log_for=lambda key: AppLog(tmp_path / "logs"),
                          credentials=lambda app, env: {})
    launch = LaunchSpec(app="web", env="production", version="v1", workdir=tmp_path,
                        command=[], environ={}, log_dir=tmp_path / "logs")
    spec = WorkflowsSpec(groups=[WorkflowGroupSpec(name="jobs", run=["sleep", "30"], workers=1)])
    try:
        await svc.deploy(launch, spec, 300)
        old = [w.worker_id for w in svc.apps[launch.key].groups["jobs"].workers]
        await svc.restart(launch)  # update_secrets, a rollback to this version, a start
        entry = svc.apps[launch.key]
        new = [w.worker_id for w in entry.groups["jobs"].workers]
        assert set(new).isdisjoint(old)
        await svc.enqueue(entry, "jobs", {"n": 1})
        run = await svc.claim(entry, "jobs", new[0], 2.0)
        assert run is not None, "the new worker claims nothing (its id is draining)"
        for _ in range(100):  # the old worker ends on SIGTERM: its id leaves draining
            if not svc.draining:
                break
            await asyncio.sleep(0.05)
        assert svc.draining == set()
    finally:
        await svc.shutdown()
