"""``tako deploy --timings``: laps close phases, the server's prepare time splits the
``deploy`` request, and the lines show every phase per server (time is an argument)."""

from __future__ import annotations

import pytest

from tako_client.timings import DeployTimings, PhaseClock


def test_each_lap_closes_the_phase_since_the_last_one() -> None:
    clock = PhaseClock(10.0)
    clock.lap("connect", 10.5)
    clock.lap("lock", 10.75)
    clock.lap("upload", 12.0)
    assert clock.phases == {"connect": 0.5, "lock": 0.25, "upload": 1.25}
    assert clock.total == 2.0


@pytest.mark.parametrize(
    ("prepare", "phases"),
    [
        (1.5, {"prepare": 1.5, "rollout": 0.5}),  # the round trip counts as rollout
        (None, {"deploy": 2.0}),  # a server that does not report it: one phase
        (3.0, {"prepare": 2.0, "rollout": 0.0}),  # clock skew never makes a phase negative
        (-1.0, {"prepare": 0.0, "rollout": 2.0}),
    ],
)
def test_the_deploy_request_is_split_where_the_server_finished_preparing(
    prepare: float | None, phases: dict[str, float]
) -> None:
    clock = PhaseClock(0.0)
    clock.lap_deploy(2.0, prepare)
    assert clock.phases == phases


def test_lines_show_build_each_server_in_order_and_the_total() -> None:
    timings = DeployTimings(started=100.0)
    timings.built(100.4)
    web = timings.server("web-1", 100.4)
    web.lap("connect", 100.7)
    web.lap("lock", 100.75)
    web.lap_deploy(102.0, 0.5)
    timings.server("web-22", 100.4).lap("connect", 101.0)
    assert timings.server("web-1", 0.0) is web  # one clock per server
    assert timings.lines(now=102.5) == [
        "build   0.40s",
        "web-1   connect 0.30s  lock 0.05s  prepare 0.50s  rollout 0.75s  = 1.60s",
        "web-22  connect 0.60s  = 0.60s",
        "total   2.50s",
    ]


def test_without_a_build_time_no_build_line() -> None:
    assert DeployTimings(started=0.0).lines(now=1.0) == ["total  1.00s"]
