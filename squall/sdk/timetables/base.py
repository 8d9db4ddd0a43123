"""The parts every timetable shares: the values a timetable returns (:class:`DataInterval`,
:class:`DagRunInfo`), time-zone and instant helpers, the :class:`Timetable` base class, the
two timetables without a period (``None``, ``"@once"``) and the base of the periodic ones.

See :mod:`squall.sdk.timetables` for what a ``schedule`` becomes and how time zones count.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

import pendulum
from pendulum import DateTime
from pendulum.tz.timezone import FixedTimezone, Timezone

TimezoneLike: TypeAlias = str | Timezone | FixedTimezone | dt.tzinfo

_UTC: Final = dt.UTC
_DAY: Final = dt.timedelta(days=1)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class DataInterval:
    """The span of data a DAG run covers: ``[start, end)`` (``start == end`` for @once)."""

    start: DateTime
    end: DateTime

    @classmethod
    def exact(cls, at: DateTime) -> DataInterval:
        return cls(start=at, end=at)

    def __iter__(self) -> Iterator[DateTime]:
        """``start, end = interval``, as Airflow's (a NamedTuple there)."""
        return iter((self.start, self.end))


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

