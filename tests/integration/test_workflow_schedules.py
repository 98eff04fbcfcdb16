"""Schedules with a controlled clock: one run per tick, whatever the number of services
enqueueing it (two servers on one queue, a restart in between), on a real SQLite queue."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tako_common.protocol import WorkflowGroupSpec, WorkflowsSpec
from tako_server.supervisor.logs import AppLog
from tako_server.workflows.service import AppWorkflows, WorkflowService


class Clock:
    def __init__(self, start: str) -> None:
        self.now = datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def service(data_dir: Path, clock: Clock) -> WorkflowService:
    made = WorkflowService(
        data_dir, 1, log_for=lambda key: AppLog(data_dir / "logs"),
        credentials=lambda app, env: {}, clock=clock,
    )
    group = WorkflowGroupSpec(name="report", run=["true"], schedule="*/5 * * * *")
    spec = WorkflowsSpec(groups=[group])
    made.apps["web/production"] = AppWorkflows("web", "production", spec, 300, made.local)
    return made


async def keys(svc: WorkflowService) -> list[str | None]:
    runs = await svc.local.runs("web", "production", "report", None, 100)
    return sorted(run.key for run in runs)


async def test_each_tick_is_enqueued_once_by_two_servers_and_across_a_restart(
    tmp_path: Path,
) -> None:
    clock = Clock("2026-01-01T00:04:50")
    first, second = service(tmp_path, clock), service(tmp_path, clock)
    try:
        await first.tick()
        await second.tick()
        assert await keys(first) == []  # 00:00 is more than 90 s ago: not caught up
        for now in ("2026-01-01T00:05:00", "2026-01-01T00:05:01", "2026-01-01T00:06:00"):
            clock.now = datetime.fromisoformat(now).replace(tzinfo=UTC).timestamp()
            await first.tick()
            await second.tick()
        assert await keys(first) == ["schedule:2026-01-01T00:05:00Z"]
        await first.shutdown()  # a restart: the new process has no memory of fired ticks
        clock.now = datetime.fromisoformat("2026-01-01T00:10:30").replace(tzinfo=UTC).timestamp()
        first = service(tmp_path, clock)
        await first.tick()
        await second.tick()
        await first.tick()
        assert await keys(first) == [
            "schedule:2026-01-01T00:05:00Z", "schedule:2026-01-01T00:10:00Z"
        ]
        runs = await first.local.runs("web", "production", "report", None, 10)
        assert runs[0].to_json()["payload"] == {"scheduled_at": "2026-01-01T00:10:00Z"}
    finally:
        await first.shutdown()
        await second.shutdown()
