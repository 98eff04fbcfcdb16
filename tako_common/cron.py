"""Five-field cron expressions (UTC): parse once, then ask for the next tick.

Rules:

- fields are ``minute hour day-of-month month day-of-week``; each is ``*``, a number, a
  range ``a-b``, a step ``*/n`` or ``a-b/n`` (``a/n`` means ``a-max/n``), or a comma list
  of those; months may be ``jan``..``dec`` and weekdays ``sun``..``sat`` (``0`` and ``7``
  are both Sunday);
- as in Vixie cron, when both day-of-month and day-of-week are restricted (neither is
  ``*``), a day matches if either matches;
- a bad expression raises :class:`CronError` naming the field and the rule it broke;
- times are UTC: :meth:`CronSchedule.next_after` takes and returns aware UTC
  datetimes; a tick is always on a whole minute.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tako_common.errors import ValidationError

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: (name, min, max, names) per field
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
#: the search for a next tick stops after this many days (e.g. ``0 0 30 2 *`` never fires)
_HORIZON_DAYS = 366 * 5


class CronError(ValidationError):
    code = "invalid_schedule"


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression: the allowed values of each field."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_any: bool
    weekdays_any: bool

    def matches_day(self, day: datetime) -> bool:
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_any or self.weekdays_any:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def next_after(self, now: datetime) -> datetime:
        """The first tick strictly after ``now`` (UTC); CronError if there is none."""
        if now.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        start = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for offset in range(_HORIZON_DAYS):
            current = day + timedelta(days=offset)
            if current.month not in self.months or not self.matches_day(current):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    tick = current.replace(hour=hour, minute=minute)
                    if tick >= start:
                        return tick
        raise CronError(f"schedule {self.text!r} never fires")

    def latest_at_or_before(self, now: datetime, window: timedelta) -> datetime | None:
        """The last tick in ``(now - window, now]``, if any (for catching up after a restart)."""
        tick = self.next_after(now - window)
        if tick > now:
            return None
        while True:
            following = self.next_after(tick)
            if following > now:
                return tick
            tick = following

    def __repr__(self) -> str:
        return f"CronSchedule({self.text!r})"


def parse_cron(text: str) -> CronSchedule:
    """Parse a five-field expression; CronError names what is wrong."""
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"invalid schedule {text!r}: a cron expression has 5 fields"
            f" (minute hour day-of-month month day-of-week), got {len(fields)}",
            hint='e.g. "*/5 * * * *" (every 5 minutes, UTC)',
        )
    values = [_parse_field(text, field, spec) for field, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(v % 7 for v in values[4])
    return CronSchedule(
        text=text,
        minutes=frozenset(values[0]),
        hours=frozenset(values[1]),
        days=frozenset(values[2]),
        months=frozenset(values[3]),
        weekdays=weekdays,
        days_any=fields[2] == "*",
        weekdays_any=fields[4] == "*",
    )


def _parse_field(text: str, field: str, spec: tuple[str, int, int, tuple[str, ...]]) -> set[int]:
    name, low, high, names = spec
    found: set[int] = set()
    for part in field.split(","):
        found.update(_parse_part(text, part, name, low, high, names))
    return found


def _parse_part(
    text: str, part: str, name: str, low: int, high: int, names: tuple[str, ...]
) -> range:
    def bad(rule: str) -> CronError:
        return CronError(f"invalid schedule {text!r}: {name} {part!r}: {rule}")

    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise bad("a step is a whole number of at least 1")
        step = int(step_text)
    if base == "*":
        first, last = low, high
    elif "-" in base:
        left, _, right = base.partition("-")
        first, last = _value(left, names, low, bad), _value(right, names, low, bad)
    else:
        first = _value(base, names, low, bad)
        last = high if slash else first
    if not (low <= first <= high and low <= last <= high):
        raise bad(f"values run from {low} to {high}")
    if first > last:
        raise bad(f"a range runs from low to high ({first} > {last})")
    return range(first, last + 1, step)


def _value(word: str, names: tuple[str, ...], low: int, bad: Callable[[str], CronError]) -> int:
    lowered = word.lower()
    if lowered in names:
        return names.index(lowered) + low
    if not word.isdigit():
        allowed = f" or a name ({', '.join(names)})" if names else ""
        raise bad(f"a value is a number{allowed}")
    return int(word)
