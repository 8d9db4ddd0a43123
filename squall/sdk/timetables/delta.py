"""Delta timetables: a run every ``timedelta`` (absolute time) or ``relativedelta`` (calendar
arithmetic on the wall clock of the DAG's time zone), anchored at ``start_date``.
"""

from __future__ import annotations

import datetime as dt

from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped, unused-ignore]
from pendulum import DateTime
from pendulum.tz.timezone import FixedTimezone, Timezone

from squall.common.errors import DagDefinitionError
from squall.sdk.timetables.base import (
    DataInterval,
    TimezoneLike,
    _DataIntervalTimetable,
    _pendulum_utc,
    _plain_utc,
    _wall,
    _wall_instants,
    resolve_timezone,
)


class DeltaDataIntervalTimetable(_DataIntervalTimetable):
    """Runs every ``delta``, anchored at ``start_date``: ``[start, start + delta)``, ...

    A ``timedelta`` is a fixed duration in absolute time. A ``relativedelta`` is calendar
    arithmetic on the wall clock of ``timezone`` (see the module docstring); it must be a
    positive, purely relative offset (no ``day=``/``weekday=``-style absolute fields).
    """

    def __init__(self, delta: dt.timedelta | relativedelta, timezone: TimezoneLike = "UTC") -> None:
        try:
            self._timezone = resolve_timezone(timezone)
        except ValueError as exc:
            raise DagDefinitionError(f"invalid time zone {timezone!r}: {exc}") from exc
        self._delta = delta
        self._fixed: dt.timedelta | None
        self._calendar: relativedelta | None
        if isinstance(delta, dt.timedelta):
            if delta <= dt.timedelta(0):
                raise DagDefinitionError(f"a timedelta schedule must be positive, got {delta!r}")
            self._fixed, self._calendar = delta, None
            self.summary = str(delta)
        elif isinstance(delta, relativedelta):
            self._fixed, self._calendar = _split_relativedelta(delta)
            self.summary = repr(delta)
        else:
            raise DagDefinitionError(
                f"expected a timedelta or a relativedelta, got {type(delta).__name__}: {delta!r}"
            )
        self.description = f"every {_describe_delta(delta)}"

    @property
    def delta(self) -> dt.timedelta | relativedelta:
        return self._delta

    @property
    def timezone(self) -> Timezone | FixedTimezone:
        return self._timezone

    def _key(self) -> tuple[object, ...]:
        return (type(self), self._fixed, repr(self._calendar), self._timezone.name)

    def _shift(self, current: dt.datetime, sign: int) -> dt.datetime:
        if self._calendar is None:
            assert self._fixed is not None
            return current + sign * self._fixed
        if sign < 0 and self._fixed is not None:  # undo in the reverse order of forwards
            current = current - self._fixed
        wall = _wall(current, self._timezone) + (self._calendar if sign > 0 else -self._calendar)
        first, second = _wall_instants(wall, self._timezone)
        shifted = first if second is None else second  # a repeated time: its second occurrence
        if sign > 0 and self._fixed is not None:
            shifted = shifted + self._fixed
        return shifted

    def _next(self, current: dt.datetime) -> dt.datetime:
        return self._shift(current, 1)

    def _prev(self, current: dt.datetime) -> dt.datetime:
        return self._shift(current, -1)

    # Every instant may start an interval: runs chain from start_date / the previous run.
    def _align_to_next(self, current: dt.datetime) -> dt.datetime:
        return current

    def _align_to_prev(self, current: dt.datetime) -> dt.datetime:
        return current

    def _skip_to_latest(self, candidate: dt.datetime, now: dt.datetime) -> dt.datetime:
        """The start of the latest complete interval of the chain that starts at ``candidate``."""
        start, end = candidate, self._next(candidate)
        if end > now:
            return candidate
        if self._calendar is None:
            assert self._fixed is not None
            complete = (now - candidate) // self._fixed  # >= 1
            return candidate + (complete - 1) * self._fixed
        while True:  # calendar steps are at least a day long: this is quick enough
            following = self._next(end)
            if following > now:
                return start
            start, end = end, following

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """``[run_after - delta, run_after]``."""
        end = _plain_utc(run_after)
        return DataInterval(_pendulum_utc(self._prev(end)), _pendulum_utc(end))


def _split_relativedelta(delta: relativedelta) -> tuple[dt.timedelta | None, relativedelta | None]:
    """Split into a fixed part (hours and less) and a calendar part (days and more)."""
    absolute = {
        name: getattr(delta, name)
        for name in ("year", "month", "day", "weekday", "hour", "minute", "second", "microsecond")
        if getattr(delta, name) is not None
    }
    if absolute or delta.leapdays:
        raise DagDefinitionError(
            f"a relativedelta schedule must be purely relative, got {delta!r}; "
            "use a cron expression to pin a day or a time"
        )
    parts = [delta.years, delta.months, delta.days, delta.hours, delta.minutes, delta.seconds]
    parts.append(delta.microseconds)
    if any(p < 0 for p in parts) or not any(parts):
        raise DagDefinitionError(f"a relativedelta schedule must be positive, got {delta!r}")
    fixed = dt.timedelta(
        hours=delta.hours,
        minutes=delta.minutes,
        seconds=delta.seconds,
        microseconds=delta.microseconds,
    )
    calendar = relativedelta(years=delta.years, months=delta.months, days=delta.days)
    return (fixed or None), (calendar or None)



def _describe_delta(delta: dt.timedelta | relativedelta) -> str:
    if isinstance(delta, dt.timedelta):
        return str(delta)
    units = ["years", "months", "days", "hours", "minutes", "seconds", "microseconds"]
    words = []
    for unit in units:
        count = getattr(delta, unit)
        if count:
            words.append(f"{count} {unit[:-1] if count == 1 else unit}")
    return ", ".join(words) or repr(delta)
