"""Retention (keep N daily and M weekly, the newest always) and the backup schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tako_server.backups.retention import (
    RETRY_AFTER,
    Retention,
    next_due,
    select_kept,
    select_pruned,
)

START = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # a Monday


def daily(days: int, per_day: int = 1) -> list[tuple[datetime, str]]:
    """``per_day`` backups a day for ``days`` days; ids name the day and the slot."""
    return [
        (START + timedelta(days=d, hours=6 * n), f"d{d:02d}-{n}")
        for d in range(days)
        for n in range(per_day)
    ]


@pytest.mark.parametrize(
    ("backups", "policy", "kept"),
    [
        ([], Retention(), set()),
        (daily(1), Retention(), {"d00-0"}),
        # 7 daily: the last 7 days; 4 weekly: the newest of each of the last 4 weeks
        (daily(10), Retention(7, 0), {f"d{d:02d}-0" for d in range(3, 10)}),
        (
            daily(30),
            Retention(7, 4),
            {f"d{d:02d}-0" for d in range(23, 30)} | {"d13-0", "d20-0", "d27-0"},
        ),
        # several a day: only the newest of each day counts
        (daily(3, per_day=3), Retention(7, 0), {"d00-2", "d01-2", "d02-2"}),
        # days without backups do not use up the daily slots
        ([(START, "a"), (START + timedelta(days=20), "b")], Retention(2, 0), {"a", "b"}),
        # nothing to keep per day and week: the newest still stays
        (daily(5), Retention(0, 0), {"d04-0"}),
        # weeks only
        (daily(21), Retention(0, 2), {"d20-0", "d13-0"}),
    ],
)
def test_retention(backups: list[tuple[datetime, str]], policy: Retention, kept: set[str]) -> None:
    assert select_kept(backups, policy) == kept
    pruned = select_pruned(backups, policy)
    assert set(pruned) == {i for _, i in backups} - kept
    assert pruned == [i for _, i in sorted(backups) if i in pruned]  # oldest first


def test_the_order_of_the_input_does_not_matter() -> None:
    backups = daily(12, per_day=2)
    assert select_kept(list(reversed(backups)), Retention()) == select_kept(backups, Retention())


DAY = timedelta(hours=24)


@pytest.mark.parametrize(
    ("last", "failed", "due"),
    [
        (None, False, START + DAY),  # first one: an interval after backups were enabled
        (START + timedelta(hours=5), False, START + timedelta(hours=29)),
        (START + timedelta(hours=5), True, START + timedelta(hours=5) + RETRY_AFTER),
    ],
)
def test_next_due(last: datetime | None, failed: bool, due: datetime) -> None:
    assert next_due(DAY, START, last, failed) == due


def test_a_short_interval_retries_failures_no_later_than_the_interval() -> None:
    assert next_due(timedelta(minutes=30), START, START, True) == START + timedelta(minutes=30)
