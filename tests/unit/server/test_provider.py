"""The daemon's edge hooks: supervisor cold-start errors become the edge's kinds, activity
reports reach the supervisor per app with their reporter (a fake supervisor, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from tako_server.edge import Backend, ColdStartError, ColdStartKind
from tako_server.provider import DaemonEdgeHooks
from tako_server.supervisor import (
    ColdStartFailed,
    ColdStartRejected,
    ColdStartTimeout,
    UnknownApp,
)
from tako_server.tls import ChallengeStore

B1 = Backend(1, "127.0.0.1", 9001)


@dataclass
class FakeSupervisor:
    error: Exception | None = None
    reports: list[tuple[str, dict[int, int], str]] = field(default_factory=list)

    async def cold_start(self, key: str) -> list[Backend]:
        if self.error is not None:
            raise self.error
        return [B1]

    def report_activity(self, key: str, in_flight: Mapping[int, int], reporter: str) -> None:
        self.reports.append((key, dict(in_flight), reporter))

    def keys(self) -> list[str]:
        return []


def hooks_over(supervisor: FakeSupervisor, challenges: Any = None) -> DaemonEdgeHooks:
    return DaemonEdgeHooks(supervisor, challenges)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ColdStartRejected("queue of a/prod is full", hint="retry in a second"), "REJECTED"),
        (ColdStartTimeout("not ready in 30s"), "TIMEOUT"),
        (TimeoutError(), "TIMEOUT"),
        (ColdStartFailed("exited during startup"), "FAILED"),
        (UnknownApp("a/prod"), "FAILED"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
async def test_supervisor_cold_start_errors_become_the_edges_kinds(
    error: Exception, kind: str
) -> None:
    with pytest.raises(ColdStartError) as caught:
        await hooks_over(FakeSupervisor(error)).cold_start("a/prod")
    assert caught.value.kind is ColdStartKind[kind]
    assert caught.value.code == f"cold_start_{ColdStartKind[kind].value}"
    assert str(caught.value)  # the edge logs it into the app's log
    assert caught.value.__cause__ is error


async def test_a_cold_start_gives_the_supervisors_backends_as_they_are() -> None:
    assert await hooks_over(FakeSupervisor()).cold_start("a/prod") == [B1]


def test_activity_reaches_the_supervisor_per_app_with_its_reporter() -> None:
    supervisor = FakeSupervisor()
    hooks_over(supervisor).report("edge-1", {"a/prod": {1: 2}, "b/prod": {}})
    assert supervisor.reports == [("a/prod", {1: 2}, "edge-1"), ("b/prod", {}, "edge-1")]


async def test_challenges_come_from_the_store() -> None:
    store = ChallengeStore()
    store.put("tok", "tok.auth")
    assert await hooks_over(FakeSupervisor(), store).challenge("tok") == "tok.auth"
    assert await hooks_over(FakeSupervisor(), store).challenge("other") is None
    assert await hooks_over(FakeSupervisor()).challenge("tok") is None
