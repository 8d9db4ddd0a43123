"""Cron timetables: a cron expression or preset on the wall clock of the DAG's time zone.

How a cron schedule behaves around DST changes: see :mod:`squall.sdk.timetables`.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from croniter import CroniterError, croniter
from pendulum import DateTime
from pendulum.tz.timezone import FixedTimezone, Timezone

from squall.common.errors import DagDefinitionError
from squall.sdk.timetables.base import (
    DataInterval,
    TimezoneLike,
    _DataIntervalTimetable,
    _dst_margin,
    _pendulum_utc,
    _plain_utc,
    _wall,
    _wall_instants,
    resolve_timezone,
)

#: Cron presets (Airflow's, plus ``@annually``). ``@once`` and ``None`` are not crons.
CRON_PRESETS: Final[dict[str, str]] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_SECOND: Final = dt.timedelta(seconds=1)


class CronDataIntervalTimetable(_DataIntervalTimetable):
    """A cron schedule (or preset) on the wall clock of ``timezone``.

    Each run covers ``[tick, next tick)``; the first one starts at the first tick at or after
    ``start_date``. See the module docstring for what happens around DST changes.
    """

    def __init__(self, cron: str, timezone: TimezoneLike = "UTC") -> None:
        if not isinstance(cron, str):
            raise DagDefinitionError(f"a cron schedule must be a string, got {cron!r}")
        cleaned = " ".join(cron.split())
        expression = CRON_PRESETS.get(cleaned.lower(), cleaned)
        if len(expression.split()) != 5:
            raise DagDefinitionError(
                f"invalid cron expression {cron!r}: expected 5 fields "
                "(minute hour day-of-month month day-of-week) or a preset such as '@daily'"
            )
        try:
            probe = croniter(expression, dt.datetime(2000, 1, 1))
            probe.get_next(dt.datetime)
            probe.get_prev(dt.datetime)
        except (CroniterError, ValueError, KeyError) as exc:
            raise DagDefinitionError(f"invalid cron expression {cron!r}: {exc}") from exc
        try:
            self._timezone = resolve_timezone(timezone)
        except ValueError as exc:
            raise DagDefinitionError(f"invalid time zone {timezone!r}: {exc}") from exc
        self._expression = expression
        # Crons that fire every hour fire at both occurrences of a repeated wall time.
        self._every_hour = probe.expanded[1] == ["*"]
        self.summary = cleaned
        self.description = _describe_cron(expression)

    @property
    def expression(self) -> str:
        """The cron expression, presets expanded (``@daily`` -> ``0 0 * * *``)."""
        return self._expression

    @property
    def timezone(self) -> Timezone | FixedTimezone:
        return self._timezone

    def _key(self) -> tuple[object, ...]:
        return (type(self), self._expression, self._timezone.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.summary!r}, {self._timezone.name!r})"

    def _instants(self, wall: dt.datetime) -> list[dt.datetime]:
        first, second = _wall_instants(wall, self._timezone)
        if second is None:
            return [first]
        return [first, second] if self._every_hour else [second]

    def _next(self, current: dt.datetime) -> dt.datetime:
        # Iterate on the naive wall clock (croniter is unreliable with aware datetimes), from a
        # little before ``current`` when a DST change is near, since wall times repeat or jump
        # there; then keep the earliest instant after ``current``.
        tz = self._timezone
        it = croniter(self._expression, _wall(current, tz) - _dst_margin(current, tz) - _SECOND)
        best: dt.datetime | None = None
        limit: dt.datetime | None = None
        while True:
            tick: dt.datetime = it.get_next(dt.datetime)
            if limit is not None and tick > limit:
                assert best is not None
                return best
            for instant in self._instants(tick):
                if instant > current and (best is None or instant < best):
                    best = instant
            if best is not None and limit is None:
                limit = tick + _dst_margin(best, tz)

    def _prev(self, current: dt.datetime) -> dt.datetime:
        tz = self._timezone
        it = croniter(self._expression, _wall(current, tz) + _dst_margin(current, tz) + _SECOND)
        best: dt.datetime | None = None
        limit: dt.datetime | None = None
        while True:
            tick: dt.datetime = it.get_prev(dt.datetime)
            if limit is not None and tick < limit:
                assert best is not None
                return best
            for instant in self._instants(tick):
                if instant < current and (best is None or instant > best):
                    best = instant
            if best is not None and limit is None:
                limit = tick - _dst_margin(best, tz)

    def _align_to_next(self, current: dt.datetime) -> dt.datetime:
        following = self._next(current)
        return current if self._prev(following) == current else following

    def _align_to_prev(self, current: dt.datetime) -> dt.datetime:
        preceding = self._prev(current)
        return current if self._next(preceding) == current else preceding

    def _skip_to_latest(self, candidate: dt.datetime, now: dt.datetime) -> dt.datetime:
        latest_end = self._align_to_prev(now)  # the latest complete interval ends here
        return max(candidate, self._prev(latest_end))

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """The latest complete interval ending at or before ``run_after``."""
        end = self._align_to_prev(_plain_utc(run_after))
        return DataInterval(_pendulum_utc(self._prev(end)), _pendulum_utc(end))



# --------------------------------------------------------------------------- descriptions

_WEEKDAYS: Final = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_MONTHS: Final = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _names(field: str, names: list[str], modulo: int) -> str:
    """``1-5`` -> ``Monday through Friday``; tokens that are not plain numbers stay as given."""

    def name(token: str) -> str:
        return names[int(token) % modulo] if token.isdigit() else token

    words = []
    for token in field.split(","):
        low, sep, high = token.partition("-")
        if sep and low.isdigit() and high.isdigit():
            words.append(f"{name(low)} through {name(high)}")
        else:
            words.append(name(token))
    return ", ".join(words)


def _describe_cron(expression: str) -> str:
    """A short English description of a 5-field cron expression, e.g. ``At 00:00``."""
    minute, hour, dom, month, dow = expression.split()
    if minute.isdigit() and hour.isdigit():
        text = f"At {int(hour):02d}:{int(minute):02d}"
    elif minute == "*" and hour == "*":
        text = "Every minute"
    elif minute.startswith("*/") and hour == "*":
        text = f"Every {minute[2:]} minutes"
    elif minute.isdigit() and hour == "*":
        text = "Every hour" if int(minute) == 0 else f"At {int(minute)} minutes past the hour"
    elif minute.isdigit() and hour.startswith("*/"):
        text = f"At {int(minute)} minutes past the hour, every {hour[2:]} hours"
    else:
        text = f"At minute {minute} past hour {hour}"
    if dom != "*":
        text += f", on day {dom} of the month"
    if dow != "*":
        text += f", only on {_names(dow, _WEEKDAYS, 7)}"
    if month.startswith("*/"):
        text += f", every {month[2:]} months"
    elif month != "*":
        text += f", only in {_names(month, _MONTHS, 13)}"
    return text

