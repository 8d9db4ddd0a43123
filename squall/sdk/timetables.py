"""Timetables: when a DAG runs, and which data interval each run covers (Airflow 2 semantics).

A DAG's ``schedule`` becomes a :class:`Timetable` through :func:`timetable_from_schedule`:

==============================  ===========================================================
``None``                        :class:`NullTimetable`: never scheduled, manual runs only
``"@once"``                     :class:`OnceTimetable`: one run at ``start_date``
a cron string or preset         :class:`CronDataIntervalTimetable`
``timedelta``/``relativedelta`` :class:`DeltaDataIntervalTimetable`
a :class:`Timetable`            used as it is
==============================  ===========================================================

Data intervals
    A periodic run covers ``[start, end)``; its ``logical_date`` is ``start`` and it may be
    created once ``now >= end`` (``run_after == end``). :meth:`Timetable.next_dagrun_info`
    returns the *next* run even when it is not due yet: the caller creates it only once
    ``run_after <= now``.

Time zones
    A cron schedule is evaluated on the wall clock of the DAG's time zone (the ``timezone``
    given to the timetable, which the DAG takes from its ``start_date``): ``0 2 * * *`` in
    Europe/Amsterdam runs at 02:00 local time in winter (01:00 UTC) and in summer (00:00 UTC).
    Around DST changes:

    * a wall time that does not exist (spring forward) runs at the same distance after the
      change (``30 2 * * *`` runs at 03:30 CEST that day);
    * a wall time that occurs twice (fall back) runs once, at the *second* occurrence, except
      for crons that fire every hour (hour field ``*``), which fire at both, so that an hourly
      or ``*/15 * * * *`` schedule keeps a steady pace in absolute time.

    A ``timedelta`` is a fixed duration in absolute time (as in Airflow): a daily
    ``timedelta(days=1)`` run starting at local midnight runs at 01:00 local time after the
    spring change. A ``relativedelta`` with calendar parts (years, months, weeks, days) is
    calendar arithmetic on the DAG's wall clock (its hours/minutes/seconds part is a fixed
    duration): a ``relativedelta(months=1)`` schedule starting at local midnight stays at local
    midnight. A ``relativedelta`` made only of hours/minutes/seconds is the same as the
    equivalent ``timedelta``.

Every value given and returned is a tz-aware pendulum ``DateTime``; returned values are in UTC.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, TypeAlias

import pendulum
from croniter import CroniterError, croniter
from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped, unused-ignore]
from pendulum import DateTime
from pendulum.tz.timezone import FixedTimezone, Timezone

from squall.common.errors import DagDefinitionError

__all__ = [
    "CRON_PRESETS",
    "CronDataIntervalTimetable",
    "DagRunInfo",
    "DataInterval",
    "DeltaDataIntervalTimetable",
    "NullTimetable",
    "OnceTimetable",
    "Timetable",
    "TimezoneLike",
    "coerce_datetime",
    "resolve_timezone",
    "timetable_from_schedule",
]

TimezoneLike: TypeAlias = str | Timezone | FixedTimezone | dt.tzinfo

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

_UTC: Final = dt.UTC
_DAY: Final = dt.timedelta(days=1)
_SECOND: Final = dt.timedelta(seconds=1)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class DataInterval:
    """The span of data a DAG run covers: ``[start, end)`` (``start == end`` for @once)."""

    start: DateTime
    end: DateTime

    @classmethod
    def exact(cls, at: DateTime) -> DataInterval:
        return cls(start=at, end=at)


@dataclass(frozen=True)
class DagRunInfo:
    """What the scheduler needs to create one DAG run."""

    logical_date: DateTime
    data_interval: DataInterval
    run_after: DateTime  # earliest wall time the run may be created

    @classmethod
    def exact(cls, at: DateTime) -> DagRunInfo:
        """A run at one instant: logical date, interval start and end and run_after all ``at``."""
        return cls(logical_date=at, data_interval=DataInterval.exact(at), run_after=at)

    @classmethod
    def interval(cls, start: DateTime, end: DateTime) -> DagRunInfo:
        """A run covering ``[start, end)``, due once ``end`` has passed."""
        return cls(logical_date=start, data_interval=DataInterval(start, end), run_after=end)


# --------------------------------------------------------------------------- helpers


def resolve_timezone(value: TimezoneLike) -> Timezone | FixedTimezone:
    """A pendulum time zone from a name, a pendulum/zoneinfo zone or a fixed-offset tzinfo.

    Raises ``ValueError`` for an unknown name or a tzinfo that is neither.
    """
    if isinstance(value, Timezone | FixedTimezone):
        return value
    if isinstance(value, str):
        return pendulum.timezone(value)  # InvalidTimezone is a ValueError
    if isinstance(value, zoneinfo.ZoneInfo):
        return pendulum.timezone(value.key)
    if isinstance(value, dt.tzinfo):
        offset = value.utcoffset(None)
        if offset is not None:
            seconds = int(offset.total_seconds())
            return pendulum.UTC if seconds == 0 else pendulum.FixedTimezone(seconds)
    raise ValueError(f"unsupported time zone {value!r}")


def coerce_datetime(
    value: dt.datetime | dt.date | str | None, timezone: TimezoneLike = "UTC"
) -> DateTime | None:
    """A tz-aware pendulum ``DateTime`` from a datetime, a date or an ISO 8601 string.

    A naive value (or a string without an offset, or a date) is taken as wall time in
    ``timezone``; an aware one keeps its own zone. ``None`` stays ``None``. Raises
    ``ValueError`` for a string that is not a date or date-time, ``TypeError`` for another type.
    """
    if value is None:
        return None
    tz = resolve_timezone(timezone)
    if isinstance(value, str):
        try:
            parsed = pendulum.parse(value, tz=tz, exact=True)
        except ValueError as exc:
            raise ValueError(f"cannot parse {value!r} as a date-time: {exc}") from exc
        if isinstance(parsed, DateTime):
            return parsed
        if isinstance(parsed, dt.date):
            return pendulum.datetime(parsed.year, parsed.month, parsed.day, tz=tz)
        raise ValueError(f"{value!r} is not a date-time")
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return pendulum.instance(value.replace(tzinfo=None), tz=tz)
        return pendulum.instance(value)
    if isinstance(value, dt.date):
        return pendulum.datetime(value.year, value.month, value.day, tz=tz)
    raise TypeError(f"expected a datetime, a date or a string, got {type(value).__name__}")


def _plain_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as a plain (non-pendulum) aware UTC datetime; naive counts as UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=_UTC)
    u = value.astimezone(_UTC)
    return dt.datetime(
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=_UTC
    )


def _pendulum_utc(value: dt.datetime) -> DateTime:
    u = _plain_utc(value)
    return DateTime(
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=pendulum.UTC
    )


def _wall(value: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The naive wall-clock time of the instant ``value`` in ``tz``."""
    return value.astimezone(tz).replace(tzinfo=None, fold=0)


def _wall_instants(wall: dt.datetime, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime | None]:
    """The UTC instants a naive wall time stands for in ``tz``.

    Returns ``(instant, None)`` for an ordinary time; ``(first, second)`` for a time that
    occurs twice (fall back); and ``(shifted, None)`` for a time that does not exist (spring
    forward), ``shifted`` being the same distance after the change (02:30 -> 03:30).
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(_UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(_UTC)
    if first < second:
        return first, second
    # Equal: an ordinary time. first > second: a gap, where fold=0 uses the offset from
    # before the change, which moves the time forward by the size of the gap.
    return first, None


def _dst_margin(at: dt.datetime, tz: dt.tzinfo) -> dt.timedelta:
    """How much the UTC offset of ``tz`` changes within a day either side of ``at``."""
    offsets = [(at + k * _DAY).astimezone(tz).utcoffset() or dt.timedelta() for k in (-1, 0, 1)]
    return max(offsets) - min(offsets)


# --------------------------------------------------------------------------- timetables


class Timetable(ABC):
    """When a DAG runs: the next automated run, and the data interval of a manual one."""

    summary: str = ""
    description: str = ""
    periodic: bool = False
    can_be_scheduled: bool = True

    @abstractmethod
    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        start_date: DateTime | None,
        end_date: DateTime | None,
        catchup: bool,
        now: DateTime,
    ) -> DagRunInfo | None:
        """The next automated run after the one that covered ``last_automated_data_interval``.

        ``None`` when there is none (no schedule, past ``end_date``, @once done). The run may
        not be due yet: create it only once ``run_after <= now``.
        """

    @abstractmethod
    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """The data interval of a run triggered by hand at ``run_after``."""

    def _key(self) -> tuple[object, ...]:
        return (type(self),)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timetable):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.summary!r})"


class NullTimetable(Timetable):
    """``schedule=None``: never scheduled; runs are triggered by hand only."""

    summary = "None"
    description = "Never, external triggers only"
    periodic = False
    can_be_scheduled = False

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        start_date: DateTime | None,
        end_date: DateTime | None,
        catchup: bool,
        now: DateTime,
    ) -> DagRunInfo | None:
        return None

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval.exact(_pendulum_utc(run_after))


class OnceTimetable(Timetable):
    """``"@once"``: one run, at ``start_date``, whatever ``catchup`` says."""

    summary = "@once"
    description = "Once, as soon as possible"
    periodic = False

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        start_date: DateTime | None,
        end_date: DateTime | None,
        catchup: bool,
        now: DateTime,
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None or start_date is None:
            return None
        at = _pendulum_utc(start_date)
        if end_date is not None and at > _pendulum_utc(end_date):
            return None
        return DagRunInfo.exact(at)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval.exact(_pendulum_utc(run_after))


class _DataIntervalTimetable(Timetable):
    """A periodic schedule whose runs cover consecutive intervals ``[tick, next tick)``.

    Subclasses provide the tick arithmetic on plain aware UTC datetimes.
    """

    periodic = True

    @abstractmethod
    def _next(self, current: dt.datetime) -> dt.datetime:
        """The first tick strictly after ``current``."""

    @abstractmethod
    def _prev(self, current: dt.datetime) -> dt.datetime:
        """The last tick strictly before ``current``."""

    @abstractmethod
    def _align_to_next(self, current: dt.datetime) -> dt.datetime:
        """``current`` if it is a tick, else the next tick."""

    @abstractmethod
    def _align_to_prev(self, current: dt.datetime) -> dt.datetime:
        """``current`` if it is a tick, else the previous tick."""

    @abstractmethod
    def _skip_to_latest(self, candidate: dt.datetime, now: dt.datetime) -> dt.datetime:
        """For catchup=False: the start of the latest complete interval, if after ``candidate``."""

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        start_date: DateTime | None,
        end_date: DateTime | None,
        catchup: bool,
        now: DateTime,
    ) -> DagRunInfo | None:
        earliest = None if start_date is None else self._align_to_next(_plain_utc(start_date))
        if last_automated_data_interval is None:
            if earliest is None:  # nothing to anchor the first run to
                return None
            start = earliest
        else:
            # Aligning also copes with a schedule changed since the last run.
            start = self._align_to_prev(_plain_utc(last_automated_data_interval.end))
            if earliest is not None:  # a start_date moved into the future
                start = max(start, earliest)
        if not catchup:
            start = self._skip_to_latest(start, _plain_utc(now))
        if end_date is not None and start > _plain_utc(end_date):
            return None
        return DagRunInfo.interval(_pendulum_utc(start), _pendulum_utc(self._next(start)))


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


# --------------------------------------------------------------------------- factory


def timetable_from_schedule(schedule: object, timezone: TimezoneLike = "UTC") -> Timetable:
    """The timetable of a DAG's ``schedule`` (see the module docstring for what is accepted).

    ``timezone`` is the DAG's: cron ticks are wall times there, calendar deltas count there.
    Raises :class:`DagDefinitionError` naming the value for anything invalid or unsupported.
    """
    if schedule is None:
        return NullTimetable()
    if isinstance(schedule, Timetable):
        return schedule
    if isinstance(schedule, str):
        if schedule.strip().lower() == "@once":
            return OnceTimetable()
        if schedule.strip().startswith("@") and schedule.strip().lower() not in CRON_PRESETS:
            known = ", ".join(["@once", *CRON_PRESETS])
            raise DagDefinitionError(f"unsupported schedule preset {schedule!r}; known: {known}")
        return CronDataIntervalTimetable(schedule, timezone)
    if isinstance(schedule, dt.timedelta | relativedelta):
        return DeltaDataIntervalTimetable(schedule, timezone)
    raise DagDefinitionError(
        f"unsupported schedule {schedule!r} ({type(schedule).__name__}): expected None, a cron "
        "string or preset, '@once', a timedelta, a relativedelta or a Timetable"
    )


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
