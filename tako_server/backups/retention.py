"""Which backups to keep, and when the next scheduled backup is due (pure: time is an argument).

Retention (the rule restic's ``--keep-daily`` / ``--keep-weekly`` use):

- ``keep_daily = N``: for the N most recent UTC days that have a backup, keep the newest
  backup of each day;
- ``keep_weekly = M``: for the M most recent ISO weeks that have a backup, keep the newest
  backup of each week;
- the newest backup is always kept; everything else may be deleted.

Schedule: a backup is due ``interval`` after the last attempt (or after backups were
enabled, before the first); after a failed attempt it is retried sooner, after
``min(interval, RETRY_AFTER)``, so a fixed bucket does not wait a day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

RETRY_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Retention:
    keep_daily: int = 7
    keep_weekly: int = 4


def _newest_per_bucket(
    backups: list[tuple[datetime, str]], bucket_of: object, count: int
) -> set[str]:
    """The newest backup of each of the ``count`` most recent buckets (days or weeks)."""
    kept: set[str] = set()
    seen: list[object] = []
    for when, backup_id in backups:  # newest first
        bucket = bucket_of(when)  # type: ignore[operator]
        if bucket in seen:
            continue
        if len(seen) == count:
            break
        seen.append(bucket)
        kept.add(backup_id)
    return kept


def _day(when: datetime) -> date:
    return when.date()


def _week(when: datetime) -> tuple[int, int]:
    iso = when.isocalendar()
    return iso.year, iso.week


def select_kept(backups: Iterable[tuple[datetime, str]], policy: Retention) -> set[str]:
    """The ids to keep among ``(created_at, id)`` pairs (UTC times)."""
    ordered = sorted(backups, reverse=True)
    if not ordered:
        return set()
    kept = {ordered[0][1]}
    kept |= _newest_per_bucket(ordered, _day, policy.keep_daily)
    kept |= _newest_per_bucket(ordered, _week, policy.keep_weekly)
    return kept


def select_pruned(backups: Iterable[tuple[datetime, str]], policy: Retention) -> list[str]:
    """The ids retention deletes, oldest first."""
    items = sorted(backups)
    kept = select_kept(items, policy)
    return [backup_id for _, backup_id in items if backup_id not in kept]


def next_due(
    interval: timedelta,
    enabled_at: datetime,
    last_attempt: datetime | None,
    last_failed: bool,
) -> datetime:
    """When the next scheduled backup should start."""
    if last_attempt is None:
        return enabled_at + interval
    return last_attempt + (min(interval, RETRY_AFTER) if last_failed else interval)
