"""How the CLI reads a takeover from ``server_info``: which process answers, whether to
signal, a failure since the signal, and whether the old process has exited."""

from __future__ import annotations

from typing import Any

import pytest

from tako_client.takeover import is_old_gone, is_same_process, needs_signal, takeover_failure
from tako_common.protocol import ServerInfoData, TakeoverStatus

OLD, NEW = 100, 200
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def info(pid: int = OLD, started_at: str | None = T0, **fields: Any) -> ServerInfoData:
    base = {
        "server_version": "1.0",
        "mode": "normal",
        "pid": pid,
        "data_dir": "/d",
        "incoming_dir": "/d/incoming",
        "socket": "/run/tako/tako.sock",
        "http_port": 80,
        "https_port": 443,
        "disk_free_bytes": 1,
        "acme_enabled": False,
        "started_at": started_at,
    }
    return ServerInfoData.model_validate(base | fields)


def takeover(state: str, attempt: int = 1, error: str | None = None) -> dict[str, Any]:
    return {"state": state, "attempt": attempt, "error": error}


def test_an_old_server_without_takeover_fields_still_parses_as_idle() -> None:
    old = info(started_at=None)
    assert old.takeover == TakeoverStatus() and old.took_over_from is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (info(), info(), True),
        (info(), info(NEW), False),
        (info(), info(started_at=T1), False),  # the pid was reused by a newer process
        (info(started_at=None), info(started_at=None), True),  # a server too old to say
    ],
)
def test_a_process_is_named_by_pid_and_start_time(
    a: ServerInfoData, b: ServerInfoData, same: bool
) -> None:
    assert is_same_process(a, b) is same


@pytest.mark.parametrize(
    ("now", "signal"),
    [
        (info(), True),
        (info(takeover=takeover("failed", error="x")), True),
        (info(takeover=takeover("rolled_back", error="x")), True),
        (info(takeover=takeover("in_progress")), False),  # an installer reloads it
        (info(takeover=takeover("succeeded")), False),
        (info(NEW, T1, took_over_from=OLD), False),  # it already happened
    ],
)
def test_a_signal_is_sent_only_when_no_takeover_runs_or_happened(
    now: ServerInfoData, signal: bool
) -> None:
    assert needs_signal(info(), now) is signal


@pytest.mark.parametrize(
    ("before", "now", "reason"),
    [
        (info(), info(), None),
        (info(), info(takeover=takeover("in_progress")), None),
        (
            info(),
            info(takeover=takeover("rolled_back", error="exited with code 1")),
            "exited with code 1",
        ),
        (info(), info(takeover=takeover("failed")), "unknown reason"),
        # the failure seen before the signal is an old one
        (
            info(takeover=takeover("failed", error="old")),
            info(takeover=takeover("failed", error="old")),
            None,
        ),
        (
            info(takeover=takeover("failed", error="old")),
            info(takeover=takeover("failed", 2, "new")),
            "new",
        ),
        # an installer's takeover that was running before and failed now
        (info(takeover=takeover("in_progress")), info(takeover=takeover("failed", error="e")), "e"),
        (info(), info(NEW, T1, took_over_from=OLD), None),  # another process: it worked
    ],
)
def test_a_failure_is_one_that_ended_since_before_the_signal(
    before: ServerInfoData, now: ServerInfoData, reason: str | None
) -> None:
    assert takeover_failure(before, now) == reason


@pytest.mark.parametrize(
    ("now", "gone"),
    [
        (info(NEW, T1, took_over_from=OLD, predecessor_running=True), False),
        (info(NEW, T1, took_over_from=OLD, predecessor_running=False), True),
        (info(NEW, T1), True),  # a fresh start, not a takeover of OLD
        (info(NEW, T1, took_over_from=7, predecessor_running=True), True),
    ],
)
def test_the_old_process_is_gone_when_its_successor_says_so(
    now: ServerInfoData, gone: bool
) -> None:
    assert is_old_gone(OLD, now) is gone
