"""Supervisor scaling with real processes: scale up/down, scale to zero, cold starts."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from tako_server.supervisor import (
    ColdStartFailed,
    ColdStartRejected,
    ColdStartTimeout,
    SupervisorError,
)
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


async def test_scale_up_then_down_stops_the_newest_instances(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=1, idle_timeout=300)
        await sup.scale(KEY, 3)
        backends = sup.backends(KEY)
        assert len(backends) == 3
        for backend in backends:
            assert (await http_get(backend.port, "/status"))[0] == 200
        await sup.scale(KEY, 1)
        assert [b.instance_id for b in sup.backends(KEY)] == [backends[0].instance_id]
        runtime = sup.status(KEY)
        assert runtime is not None and runtime.desired == 1 and len(runtime.instances) == 1


async def test_scale_up_that_cannot_start_raises(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        await sup.restore(make_spec(tmp_path, "v1", env={"EXIT_AT_START": "1"}), 0, 300)
        with pytest.raises(SupervisorError, match="failed to scale"):
            await sup.scale(KEY, 1)


async def test_scale_to_zero_stops_the_last_instance_after_idle_and_cold_start_brings_it_back(
    tmp_path: Path,
) -> None:
    async with running_supervisor() as sup:
        # idle_timeout 4 s: scaling down drains the stopped instance for drain_min (1 s) and
        # more on a loaded machine; the last one must still be warm when scale() returns
        result = await sup.deploy(make_spec(tmp_path, "v1"), desired=2, idle_timeout=4)
        assert result.instances == 2
        await sup.scale(KEY, 0)
        [warm] = sup.backends(KEY)
        assert not sup.wants_cold_start(KEY)
        took = await wait_for(lambda: sup.status(KEY).state == "idle", 10, "idle")  # type: ignore[union-attr]
        assert took >= 0.5
        assert sup.backends(KEY) == [] and sup.wants_cold_start(KEY)
        backends = await sup.cold_start(KEY)
        assert len(backends) == 1 and backends[0].instance_id != warm.instance_id
        status, env = await http_get(backends[0].port, "/env")
        assert status == 200 and env["APP_VERSION"] == "v1"
        assert sup.status(KEY).state == "running"  # type: ignore[union-attr]


async def test_desired_zero_deploy_keeps_one_warm_instance_while_requests_are_in_flight(
    tmp_path: Path,
) -> None:
    async with running_supervisor() as sup:
        result = await sup.deploy(make_spec(tmp_path, "v1"), desired=0, idle_timeout=1)
        assert result.warm and result.instances == 1
        [backend] = sup.backends(KEY)
        sup.report_activity(KEY, {backend.instance_id: 1})
        with pytest.raises(AssertionError):  # idle_timeout passes, the instance stays
            await wait_for(lambda: sup.backends(KEY) == [], 1.8, "stop while serving")
        sup.report_activity(KEY, {backend.instance_id: 0})
        await wait_for(lambda: sup.backends(KEY) == [], 3, "idle stop after the request")


async def test_cold_start_queue_admits_waiters_up_to_the_limit_and_rejects_the_next(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"  # the instance cannot become ready before the rejection
    async with running_supervisor(replace(FAST, cold_start_queue=3)) as sup:
        await sup.restore(make_spec(tmp_path, "v1", env={"START_GATE": str(gate)}), 0, 300)
        assert sup.wants_cold_start(KEY)
        waiters = [asyncio.create_task(sup.cold_start(KEY), name=f"waiter-{i}") for i in range(3)]
        await wait_for(lambda: len(sup.status(KEY).instances) == 1, 5, "one start")  # type: ignore[union-attr]
        with pytest.raises(ColdStartRejected):
            await sup.cold_start(KEY)
        gate.touch()
        results = await asyncio.gather(*waiters)
        assert all(r == results[0] and len(r) == 1 for r in results)
        assert len(sup.status(KEY).instances) == 1  # type: ignore[union-attr]


async def test_cold_start_failure_fails_every_waiter(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        await sup.restore(make_spec(tmp_path, "v1", env={"EXIT_AT_START": "2"}), 0, 300)
        results = await asyncio.gather(
            *(sup.cold_start(KEY) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, ColdStartFailed) for r in results), results
        assert "exit code 2" in str(results[0])
        assert sup.status(KEY).state == "error"  # type: ignore[union-attr]


async def test_cold_start_that_is_not_ready_in_time_times_out(tmp_path: Path) -> None:
    async with running_supervisor(replace(FAST, cold_start_timeout=0.5)) as sup:
        await sup.restore(make_spec(tmp_path, "v1", env={"START_DELAY": "3"}), 0, 300)
        with pytest.raises(ColdStartTimeout):
            await sup.cold_start(KEY)
        # the start goes on: a later request finds the instance ready
        backends = await asyncio.wait_for(_retry_cold_start(sup), 6)
        assert len(backends) == 1


async def _retry_cold_start(sup) -> list:  # type: ignore[no-untyped-def, type-arg]
    for _ in range(20):
        try:
            return await sup.cold_start(KEY)  # type: ignore[no-any-return]
        except ColdStartTimeout:
            continue
    raise AssertionError("cold start never became ready")


async def test_cancelled_cold_start_waiter_leaves_the_queue(tmp_path: Path) -> None:
    gate = tmp_path / "gate"  # the instance cannot become ready before the cancel
    async with running_supervisor(replace(FAST, cold_start_queue=1)) as sup:
        await sup.restore(make_spec(tmp_path, "v1", env={"START_GATE": str(gate)}), 0, 300)
        first = asyncio.create_task(sup.cold_start(KEY), name="first")
        await wait_for(lambda: len(sup.status(KEY).instances) == 1, 5, "start")  # type: ignore[union-attr]
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.touch()
        backends = await sup.cold_start(KEY)  # room again for one waiter
        assert len(backends) == 1
        pid = sup.status(KEY).instances[0].pid  # type: ignore[union-attr]
        assert pid is not None and pid_alive(pid)
