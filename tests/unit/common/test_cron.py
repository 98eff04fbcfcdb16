"""Five-field cron: parsing (ranges, steps, lists, names) and the next tick (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tako_common.cron import CronError, parse_cron


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "now", "expected"),
    [
        ("* * * * *", "2026-01-01T00:00:00", "2026-01-01T00:01:00"),
        ("* * * * *", "2026-01-01T00:00:59", "2026-01-01T00:01:00"),
        ("*/5 * * * *", "2026-01-01T00:03:10", "2026-01-01T00:05:00"),
        ("*/5 * * * *", "2026-01-01T00:05:00", "2026-01-01T00:10:00"),
        ("0 * * * *", "2026-01-01T10:30:00", "2026-01-01T11:00:00"),
        ("30 2 * * *", "2026-01-01T03:00:00", "2026-01-02T02:30:00"),
        ("0 0 1 * *", "2026-01-15T00:00:00", "2026-02-01T00:00:00"),
        ("0 0 * * mon", "2026-01-01T00:00:00", "2026-01-05T00:00:00"),  # 2026-01-01 is a Thu
        ("0 0 * * 7", "2026-01-01T00:00:00", "2026-01-04T00:00:00"),  # 7 = Sunday
        ("0 0 * * 0", "2026-01-01T00:00:00", "2026-01-04T00:00:00"),
        ("0 12 * jun *", "2026-01-01T00:00:00", "2026-06-01T12:00:00"),
        ("15,45 9-10 * * *", "2026-01-01T09:20:00", "2026-01-01T09:45:00"),
        ("15,45 9-10 * * *", "2026-01-01T10:50:00", "2026-01-02T09:15:00"),
        ("10-30/10 * * * *", "2026-01-01T00:25:00", "2026-01-01T00:30:00"),
        ("5/20 * * * *", "2026-01-01T00:26:00", "2026-01-01T00:45:00"),
        ("0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),
        # day-of-month and day-of-week both restricted: either matches (Vixie cron)
        ("0 0 13 * fri", "2026-02-01T00:00:00", "2026-02-06T00:00:00"),
        ("0 0 31 12 *", "2026-12-31T00:00:00", "2027-12-31T00:00:00"),
    ],
)
def test_next_tick(expr: str, now: str, expected: str) -> None:
    assert parse_cron(expr).next_after(at(now)) == at(expected)


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("60 * * * *", "minute '60': values run from 0 to 59"),
        ("* 24 * * *", "hour '24'"),
        ("* * 0 * *", "day-of-month '0'"),
        ("* * * 13 *", "month '13'"),
        ("* * * * 8", "day-of-week '8'"),
        ("*/0 * * * *", "a step is a whole number of at least 1"),
        ("*/x * * * *", "a step"),
        ("5-1 * * * *", "a range runs from low to high"),
        ("a * * * *", "a value is a number"),
        ("* * * foo *", "or a name (jan"),
        ("1,,2 * * * *", "a value is a number"),
    ],
)
def test_bad_expressions_name_the_field_and_rule(expr: str, fragment: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert fragment in info.value.message


def test_an_expression_that_never_fires_says_so() -> None:
    with pytest.raises(CronError, match="never fires"):
        parse_cron("0 0 30 2 *").next_after(at("2026-01-01T00:00:00"))


def test_latest_tick_within_a_window_catches_up_after_a_restart() -> None:
    schedule = parse_cron("*/5 * * * *")
    assert schedule.latest_at_or_before(at("2026-01-01T00:07:30"), timedelta(minutes=3)) == at(
        "2026-01-01T00:05:00"
    )
    assert schedule.latest_at_or_before(at("2026-01-01T00:09:30"), timedelta(minutes=3)) is None
    assert schedule.latest_at_or_before(at("2026-01-01T00:10:00"), timedelta(minutes=1)) == at(
        "2026-01-01T00:10:00"
    )
