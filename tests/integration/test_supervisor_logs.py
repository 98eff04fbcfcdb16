"""App output through the supervisor: history, follow, a chatty app and rotation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.integration.supervisor_apps.harness import (
    http_get,
    make_spec,
    running_supervisor,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)
KEY = "shop/production"
MIB = 1024 * 1024


async def test_app_stdout_and_stderr_reach_history_and_followers(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), desired=1, idle_timeout=300)
        log = sup.log(KEY)
        [backend] = sup.backends(KEY)
        history = "\n".join(log.history(50))
        assert f"[out] [{backend.instance_id}] pyapp v1 listening on {backend.port}" in history
        assert f"[err] [{backend.instance_id}] pyapp stderr hello" in history
        assert f"[tako] [{backend.instance_id}] ready in" in history
        follow = log.follow()
        try:
            await http_get(backend.port, "/say?m=hello-follower")
            got: list[str] = []

            async def collect() -> None:
                async for line in follow:
                    got.append(line)
                    if sum("hello-follower" in g for g in got) == 2:
                        return

            await asyncio.wait_for(collect(), 5)
        finally:
            await follow.aclose()
        assert any("[out]" in g and g.endswith("said hello-follower") for g in got)
        assert any("[err]" in g and g.endswith("err hello-follower") for g in got)
        assert (tmp_path / "shared" / "logs" / "current.log").exists()


async def test_chatty_app_writing_50_mib_keeps_answering_and_the_log_rotates(
    tmp_path: Path,
) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1", env={"CHATTY_MB": "50"}), 1, 300)
        [backend] = sup.backends(KEY)
        logs = tmp_path / "shared" / "logs"
        slowest = 0.0
        done = False
        deadline = time.monotonic() + 60
        while not done and time.monotonic() < deadline:
            started = time.monotonic()
            status, _ = await http_get(backend.port, "/env", timeout=2)
            slowest = max(slowest, time.monotonic() - started)
            assert status == 200
            done = any("chatter done" in line for line in sup.log(KEY).history(5))
            await asyncio.sleep(0.05)
        assert done, "the app wrote its 50 MiB"
        assert slowest < 1.0, f"a request took {slowest:.2f}s while the app was chatty"
        current = (logs / "current.log").stat().st_size
        previous = (logs / "previous.log").stat().st_size
        assert current <= 10 * MIB and 9 * MIB < previous <= 10 * MIB
        [inst] = sup.status(KEY).instances  # type: ignore[union-attr]
        assert inst.state == "healthy" and inst.restarts == 0


async def test_over_long_output_line_is_truncated_in_the_log(tmp_path: Path) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(make_spec(tmp_path, "v1"), 1, 300)
        [backend] = sup.backends(KEY)
        await http_get(backend.port, "/say?m=q&n=100000")
        await wait_for(
            lambda: any("…[truncated]" in line for line in sup.log(KEY).history(5)), 5, "line"
        )
        longest = max(len(line) for line in sup.log(KEY).history(10))
        assert longest < 64 * 1024 + 200
