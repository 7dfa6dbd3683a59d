"""Cron entries: parse and check schedules (croniter), and compute fire times (UTC)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from ..models import CronEntry, freeze
from .errors import CronScheduleError
from .records import to_datetime

__all__ = ["SHORTCUTS", "CronSchedule", "ScheduledEntry", "parse_schedule"]

SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The standard shortcuts and the five-field expressions they stand for (UTC)."""

_FIVE = ("minute", "hour", "day of month", "month", "day of week")
_SIX = ("second", *_FIVE)
_NEUTRAL = {
    "second": "*",
    "minute": "*",
    "hour": "*",
    "day of month": "*",
    "month": "*",
    "day of week": "*",
}


@dataclass(frozen=True)
class CronSchedule:
    """A checked cron expression: five fields, six with a leading seconds field, or a
    shortcut such as ``@hourly``.

    Attributes:
        expression: As given (whitespace normalised).
        with_seconds: Whether the first field is seconds.
        fields: The fields croniter reads (a shortcut's expansion).
    """

    expression: str
    with_seconds: bool
    fields: str = ""

    def next_after(self, when: float) -> float:
        """The first fire time strictly after ``when`` (POSIX seconds, UTC)."""
        start = dt.datetime.fromtimestamp(when, dt.timezone.utc)
        fields = self.fields or self.expression
        it = croniter(fields, start, second_at_beginning=self.with_seconds)
        return float(it.get_next(float))


def parse_schedule(entry: str, expression: str) -> CronSchedule:
    """Check ``expression`` and return its schedule.

    Raises:
        CronScheduleError: naming the entry and, when one field is at fault, the field.
    """
    if not isinstance(expression, str):
        raise CronScheduleError(
            f"cron entry {entry!r}: the schedule must be a string such as '*/5 * * * *', "
            f"got {type(expression).__name__}"
        )
    shortcut = expression.strip().lower()
    if shortcut.startswith("@"):
        expanded = SHORTCUTS.get(shortcut)
        if expanded is None:
            raise CronScheduleError(
                f"cron entry {entry!r}: unknown shortcut {expression.strip()!r}; the "
                f"shortcuts are {', '.join(SHORTCUTS)}"
            )
        return CronSchedule(shortcut, False, expanded)
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise CronScheduleError(
            f"cron entry {entry!r}: {expression!r} has {len(fields)} field(s); expected 5 "
            "(minute hour day-of-month month day-of-week), 6 with the seconds field first "
            "(second minute hour day-of-month month day-of-week), or a shortcut such as "
            "@hourly or @daily"
        )
    names = _SIX if len(fields) == 6 else _FIVE
    with_seconds = len(fields) == 6
    normal = " ".join(fields)
    for name, value in zip(names, fields, strict=True):
        probe = [value if n == name else _NEUTRAL[n] for n in names]
        if not croniter.is_valid(" ".join(probe), second_at_beginning=with_seconds):
            raise CronScheduleError(
                f"cron entry {entry!r}: the {name} field {value!r} of {expression!r} is not "
                f"valid ({_hint(name)})"
            )
    if not croniter.is_valid(normal, second_at_beginning=with_seconds):
        raise CronScheduleError(
            f"cron entry {entry!r}: {expression!r} is not a valid cron expression"
        )
    schedule = CronSchedule(normal, with_seconds, normal)
    try:  # an expression such as "0 0 31 2 *" is well-formed but never fires
        schedule.next_after(0.0)
    except Exception as exc:
        raise CronScheduleError(
            f"cron entry {entry!r}: {expression!r} never fires ({exc})"
        ) from None
    return schedule


def _hint(field_name: str) -> str:
    ranges = {
        "second": "0-59",
        "minute": "0-59",
        "hour": "0-23",
        "day of month": "1-31",
        "month": "1-12 or jan-dec",
        "day of week": "0-6 or sun-sat",
    }
    return f"use *, a number in {ranges[field_name]}, a range a-b, a list a,b or a step */n"


@dataclass
class ScheduledEntry:
    """A registered cron entry and its next fire time (set when it is registered, and
    moved on each time the scheduler passes a fire time)."""

    name: str
    schedule: CronSchedule
    job_name: str
    payload: Any
    payload_json: str
    next_run_at: float = 0.0
    _frozen: Any = field(default=None, repr=False)

    def snapshot(self) -> CronEntry:
        if self._frozen is None:
            self._frozen = freeze(self.payload)
        return CronEntry(
            name=self.name,
            schedule=self.schedule.expression,
            job_name=self.job_name,
            payload=self._frozen,
            next_run_at=to_datetime(self.next_run_at),
        )
