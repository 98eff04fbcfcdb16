"""Supervisor with real app processes: deploy, rolling update, failures, crashes, stop.

Requests go straight to the instances over loopback; timings come from small settings.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from tako_server.edge import Backend, EdgeSnapshot
from tako_server.routing import RoutingState
from tako_server.supervisor import RolloutError, Supervisor
from tests.integration.supervisor_apps.harness import (
    FAST,
    http_get,
    make_spec,
    pid_alive,
    running_supervisor,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)
KEY = "shop/production"


@pytest.mark.parametrize("node", [False, True], ids=["python", "node"])
async def test_deploy_starts_a_healthy_instance_that_sees_host_port_and_tako_vars(
    tmp_path: Path, node: bool
) -> None:
    changes: list[int] = []
    async with running_supervisor(on_change=lambda: changes.append(1)) as sup:
        result = await sup.deploy(make_spec(tmp_path, "v1", node=node), desired=1, idle_timeout=300)
        assert (result.version, result.instances, result.replaced) == ("v1", 1, 0)
        [backend] = sup.backends(KEY)
        status, env = await http_get(backend.port, "/env")
        assert status == 200
        assert env["HOST"] == "127.0.0.1" and env["PORT"] == str(backend.port)
        assert env["TAKO_INSTANCE"] == str(backend.instance_id)
        assert env["TAKO_ENV"] == "production" and env["TAKO_APP_NAME"] == "shop"
        runtime = sup.status(KEY)
        assert runtime is not None and runtime.state == "running" and runtime.version == "v1"
        [inst] = runtime.instances
        assert inst.state == "healthy" and inst.pid == env["pid"] and inst.port == backend.port
        assert changes, "on_change fires when the instance becomes routable"


async def test_rolling_update_keeps_a_healthy_instance_routable_at_every_moment(
    tmp_path: Path,
) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=2, idle_timeout=300)
        old_pids = {i.pid for i in sup.status(KEY).instances}  # type: ignore[union-attr]
        seen: list[int] = []
        served: list[str] = []
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                seen.append(len(sup.backends(KEY)))
                await asyncio.sleep(0.005)

        async def request() -> None:
            while not stop.is_set():
                backends = sup.backends(KEY)
                if backends:
                    status, env = await http_get(backends[-1].port, "/env")
                    assert status == 200
                    served.append(env["APP_VERSION"])
                await asyncio.sleep(0.01)

        watchers = [
            asyncio.create_task(watch(), name="rollout-watcher"),
            asyncio.create_task(request(), name="rollout-requests"),
        ]
        try:
            result = await sup.deploy(make_spec(tmp_path, "v2"), desired=2, idle_timeout=300)
        finally:
            stop.set()
            await asyncio.gather(*watchers)
        assert (result.version, result.instances, result.replaced) == ("v2", 2, 2)
        assert len(seen) > 10 and min(seen) >= 1, "a moment without a routable instance"
        assert served[0] == "v1" and served[-1] == "v2"
        runtime = sup.status(KEY)
        assert runtime is not None and runtime.version == "v2"
        assert {i.version for i in runtime.instances} == {"v2"}
        assert not any(pid_alive(pid) for pid in old_pids if pid)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EXIT_AT_START": "3"}, "exited during startup (exit code 3)"),
        ({"STATUS_CODE": "500"}, "not ready within 1.5s"),
    ],
    ids=["exits", "status-500"],
)
async def test_failed_update_keeps_the_old_version_serving_and_reports_the_log_tail(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    async with running_supervisor(replace(FAST, startup_timeout=1.5)) as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=1, idle_timeout=300)
        [before] = sup.backends(KEY)
        with pytest.raises(RolloutError) as caught:
            await sup.deploy(make_spec(tmp_path, "v2", env=env), desired=1, idle_timeout=300)
        assert expected in caught.value.message and "v1 keeps serving" in caught.value.message
        tail = "\n".join(caught.value.log_tail)
        assert "[tako]" in tail and expected in tail
        if "EXIT_AT_START" in env:
            assert "[err]" in tail and "refusing to start" in tail
        assert sup.backends(KEY) == [before]
        status, served = await http_get(before.port, "/env")
        assert status == 200 and served["APP_VERSION"] == "v1"
        runtime = sup.status(KEY)
        assert runtime is not None and runtime.version == "v1" and runtime.state == "running"
        await wait_for(lambda: len(sup.status(KEY).instances) == 1, 5, "new instance gone")  # type: ignore[union-attr]


async def test_failed_first_deploy_raises_and_leaves_the_app_in_error(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        with pytest.raises(RolloutError, match="nothing was running"):
            await sup.deploy(
                make_spec(tmp_path, "v1", env={"EXIT_AT_START": "1"}), desired=1, idle_timeout=300
            )
        runtime = sup.status(KEY)
        assert runtime is not None and runtime.state == "error" and runtime.version is None
        assert sup.backends(KEY) == []


async def test_kill_9_of_an_instance_is_noticed_and_replaced_within_2s(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=1, idle_timeout=300)
        [inst] = sup.status(KEY).instances  # type: ignore[union-attr]
        assert inst.pid is not None
        os.kill(inst.pid, signal.SIGKILL)
        await wait_for(lambda: not sup.backends(KEY), 0.5, "the exit to be noticed")

        def replaced() -> bool:
            backends = sup.backends(KEY)
            return bool(backends) and backends[0].instance_id != inst.id

        assert await wait_for(replaced, 2.0, "a replacement") < 2.0
        [new] = sup.status(KEY).instances  # type: ignore[union-attr]
        assert new.restarts == 1
        assert "killed by SIGKILL" in "\n".join(sup.log(KEY).history(20))


async def test_crash_loop_restarts_with_growing_intervals(tmp_path: Path) -> None:
    settings = replace(FAST, restart_backoff_base=0.1, restart_backoff_cap=5.0)
    async with running_supervisor(settings) as sup:
        await sup.restore(make_spec(tmp_path, "v1", env={"EXIT_AT_START": "4"}), 1, 300)
        log = sup.log(KEY)

        def starts() -> list[datetime]:
            stamps = []
            for line in log.history(200):
                if "[tako]" in line and "started version v1" in line:
                    stamps.append(
                        datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
                    )
            return stamps

        await wait_for(lambda: len(starts()) >= 5, 10, "five starts")
        stamps = starts()
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
        assert all(later > earlier for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps
        assert gaps[3] > 0.7  # 0.1, 0.2, 0.4, 0.8 s of backoff plus process start time
        runtime = sup.status(KEY)
        assert runtime is not None and runtime.state == "error"
        assert "exit code 4" in (runtime.last_error or "")


async def test_two_failed_probes_take_an_instance_out_and_it_returns_when_healthy(
    tmp_path: Path,
) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=1, idle_timeout=300)
        [inst] = sup.status(KEY).instances  # type: ignore[union-attr]
        assert inst.pid is not None
        os.kill(inst.pid, signal.SIGSTOP)  # frozen: probes time out, the process lives
        try:
            await wait_for(lambda: not sup.backends(KEY), 5, "instance out of rotation")
            assert sup.status(KEY).instances[0].state == "unhealthy"  # type: ignore[union-attr]
        finally:
            os.kill(inst.pid, signal.SIGCONT)
        await wait_for(lambda: sup.backends(KEY) != [], 5, "instance back in rotation")
        assert sup.backends(KEY)[0].instance_id == inst.id


async def test_stop_waits_for_in_flight_requests_then_stops_the_instance(tmp_path: Path) -> None:
    async with running_supervisor(replace(FAST, drain_timeout=10.0)) as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=1, idle_timeout=300)
        [backend] = sup.backends(KEY)
        pid = sup.status(KEY).instances[0].pid  # type: ignore[union-attr]
        slow = asyncio.create_task(http_get(backend.port, "/slow?s=1.0"), name="slow-request")
        sup.report_activity(KEY, {backend.instance_id: 1})
        stopping = asyncio.create_task(sup.stop(KEY), name="stop")
        await wait_for(lambda: sup.backends(KEY) == [], 1, "draining instance unroutable")
        status, _ = await slow
        assert status == 200, "the in-flight request finished"
        assert pid is not None and pid_alive(pid)
        sup.report_activity(KEY, {backend.instance_id: 0})
        await asyncio.wait_for(stopping, 5)
        assert not pid_alive(pid)
        runtime = sup.status(KEY)
        assert runtime is not None and runtime.state == "stopped" and runtime.instances == []


async def test_stop_kills_the_child_processes_of_an_instance(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1", env={"SPAWN_CHILD": "1"}), 1, 300)
        [backend] = sup.backends(KEY)
        _, body = await http_get(backend.port, "/child")
        child = body["child"]
        assert pid_alive(child)
        await sup.stop(KEY)
        await wait_for(lambda: not pid_alive(child), 3, "the sleep child to die")


async def test_remove_is_idempotent_and_forgets_the_app(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=2, idle_timeout=300)
        pids = [i.pid for i in sup.status(KEY).instances]  # type: ignore[union-attr]
        await sup.remove(KEY)
        await sup.remove(KEY)
        assert sup.status(KEY) is None and KEY not in sup.keys()
        assert not any(pid_alive(p) for p in pids if p)


async def test_shutdown_stops_every_instance_of_every_app(tmp_path: Path) -> None:
    sup = Supervisor(FAST)
    try:
        await sup.deploy(make_spec(tmp_path / "a", "v1", app="a"), 2, 300)
        await sup.deploy(make_spec(tmp_path / "b", "v1", app="b"), 1, 300)
        pids = [i.pid for k in sup.keys() for i in sup.status(k).instances]  # type: ignore[union-attr]
        assert len(pids) == 3
    finally:
        await asyncio.wait_for(sup.shutdown(), 15)
    assert not any(pid_alive(p) for p in pids if p)
    assert sup.keys() == []


async def test_backend_changes_reach_the_routing_state_as_they_happen(tmp_path: Path) -> None:
    """The supervisor feeds the routing state its backends (the very values it routes
    with); the app service's half makes them visible, a stop takes them away."""
    pushed: list[EdgeSnapshot] = []
    routing = RoutingState(on_change=pushed.append)
    routing.set_app(KEY, ["shop.example.com"], None)
    async with running_supervisor(routing=routing) as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=1, idle_timeout=300)
        [backend] = sup.backends(KEY)
        assert routing.snapshot.apps[KEY].backends == (backend,)
        assert pushed[-1] is routing.snapshot
        await sup.stop(KEY)
        assert routing.snapshot.apps[KEY].backends == ()
        assert not routing.snapshot.apps[KEY].cold_start
        await sup.remove(KEY)
    assert "live=[]" in repr(routing)


def test_backend_is_a_plain_value() -> None:
    assert Backend(1, "127.0.0.1", 8000) == Backend(1, "127.0.0.1", 8000)
    assert re.match(r"Supervisor\(apps=\[\]\)", repr(Supervisor(FAST)))
