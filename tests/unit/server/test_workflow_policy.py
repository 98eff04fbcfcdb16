"""Retry backoff with jitter, the last attempt, and the scale-to-zero decision."""

from __future__ import annotations

import pytest

from tako_server.workflows.policy import (
    IdleState,
    is_final_attempt,
    retry_delay,
    scale_to_zero,
)
from tako_server.workflows.workers import restart_delay


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 0.5),
        (1, 0.999, 0.9995),
        (2, 0.0, 1.0),
        (3, 0.0, 2.0),
        (4, 0.5, 6.0),
        (20, 0.0, 150.0),  # capped at 300 before jitter
        (1000, 0.0, 150.0),
    ],
)
def test_retry_delay_doubles_with_jitter_and_a_cap(
    attempt: int, rand: float, expected: float
) -> None:
    assert retry_delay(attempt, rand) == pytest.approx(expected)


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_retry_delay_refuses_bad_arguments(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        retry_delay(attempt, rand)


@pytest.mark.parametrize(
    ("attempt", "retries", "final"),
    [(1, 2, False), (2, 2, False), (3, 2, True), (1, 0, True)],
)
def test_final_attempt(attempt: int, retries: int, final: bool) -> None:
    assert is_final_attempt(attempt, retries) is final


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        (IdleState(0, 3, 0, 0.0), 1.0, 1),  # runs waiting, nobody working: start
        (IdleState(1, 3, 0, 0.0), 1.0, None),  # already started
        (IdleState(0, 0, 0, 0.0), 1000.0, None),  # nothing to do, nothing running
        (IdleState(1, 0, 0, 0.0), 299.0, None),  # idle, but not long enough
        (IdleState(1, 0, 0, 0.0), 300.0, 0),  # idle for idle_timeout: stop
        (IdleState(1, 0, 1, 0.0), 1000.0, None),  # a run in progress keeps it
    ],
)
def test_scale_to_zero(state: IdleState, now: float, expected: int | None) -> None:
    assert scale_to_zero(state, now, idle_timeout=300) == expected


@pytest.mark.parametrize(
    ("crashes", "delay"), [(1, 0.5), (2, 1.0), (4, 4.0), (7, 30.0), (99, 30.0)]
)
def test_worker_restart_backoff_doubles_up_to_30_seconds(crashes: int, delay: float) -> None:
    assert restart_delay(crashes) == delay
