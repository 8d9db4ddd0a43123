"""Airflow 2.10's core timetables that are not data-interval ones: ``CronTriggerTimetable``
(``airflow.timetables.trigger``) and ``EventsTimetable`` (``airflow.timetables.events``).

Both follow Airflow's timetable protocol (:class:`~squall.sdk.timetables.custom.AirflowTimetable`)
and its rules (airflow/timetables/trigger.py, events.py), and serialize as Airflow does; they
are built in, so no plugin has to register them.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from typing import Any

import pendulum
from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped, unused-ignore]
from pendulum import DateTime

from squall.common.errors import DagDefinitionError
from squall.sdk.timetables.base import (
    DataInterval,
    TimezoneLike,
    _pendulum_utc,
    _plain_utc,
    coerce_datetime,
)
from squall.sdk.timetables.cron import CronDataIntervalTimetable
from squall.sdk.timetables.custom import AirflowTimetable, DagRunInfo, TimeRestriction, utcnow

__all__ = ["CronTriggerTimetable", "EventsTimetable"]

_RELATIVEDELTA_FIELDS = ("years", "months", "days", "hours", "minutes", "seconds",
                         "microseconds")


class CronTriggerTimetable(AirflowTimetable):
    """A run at each cron tick (as POSIX cron), not after its interval has passed.

    The run at tick ``T`` covers ``[T - interval, T]`` and its logical date is ``T -
    interval`` (``T`` with the default zero interval). Without catchup the first run is at
    the latest tick at or before now (or the next after the last run / the start date,
    whichever is later), as Airflow 2.10's ``CronTriggerTimetable.next_dagrun_info``.
    """

    def __init__(self, cron: str, *, timezone: TimezoneLike,
                 interval: dt.timedelta | relativedelta = dt.timedelta()) -> None:
        if not isinstance(interval, dt.timedelta | relativedelta):
            raise DagDefinitionError(
                f"CronTriggerTimetable: interval must be a timedelta or relativedelta, "
                f"got {interval!r}")
        self._cron = CronDataIntervalTimetable(cron, timezone)
        self._interval = interval
        self.description = self._cron.description

    @property
    def summary(self) -> str:
        return self._cron.summary

    def __repr__(self) -> str:
        return f"CronTriggerTimetable({self._cron.summary!r})"

    def serialize(self) -> dict[str, Any]:
        interval: float | dict[str, Any]
        if isinstance(self._interval, dt.timedelta):
            interval = self._interval.total_seconds()
        else:
            interval = {f: getattr(self._interval, f) for f in _RELATIVEDELTA_FIELDS}
        tz = self._cron.timezone
        offset = getattr(tz, "offset", None)
        return {"expression": self._cron.expression,
                "timezone": tz.name if offset is None else int(offset),
                "interval": interval}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> CronTriggerTimetable:
        raw = data.get("interval", 0)
        interval: dt.timedelta | relativedelta = (
            relativedelta(**raw) if isinstance(raw, dict) else dt.timedelta(seconds=float(raw)))
        tz = data.get("timezone", "UTC")
        timezone: TimezoneLike = pendulum.FixedTimezone(tz) if isinstance(tz, int) else str(tz)
        return cls(data["expression"], timezone=timezone, interval=interval)

    def _start_of(self, tick: dt.datetime) -> DateTime:
        return _pendulum_utc(tick - self._interval)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        end = _plain_utc(run_after)
        return DataInterval(_pendulum_utc(end - self._interval), _pendulum_utc(end))

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: TimeRestriction) -> DagRunInfo | None:
        cron = self._cron
        if restriction.catchup:
            if last_automated_data_interval is not None:
                tick = cron._next(_plain_utc(last_automated_data_interval.end))
            elif restriction.earliest is None:
                return None
            else:
                tick = cron._align_to_next(_plain_utc(restriction.earliest))
        else:
            candidates = [cron._align_to_prev(_plain_utc(utcnow()))]
            if last_automated_data_interval is not None:
                candidates.append(cron._next(_plain_utc(last_automated_data_interval.end)))
            if restriction.earliest is not None:
                candidates.append(cron._align_to_next(_plain_utc(restriction.earliest)))
            tick = max(candidates)
        if restriction.latest is not None and _plain_utc(restriction.latest) < tick:
            return None
        return DagRunInfo.interval(self._start_of(tick), _pendulum_utc(tick))


class EventsTimetable(AirflowTimetable):
    """A run at each of the given instants (an exact interval each), as Airflow 2.10's
    ``EventsTimetable``; a manual run's interval is its own time, or with
    ``restrict_to_events`` the latest event at or before it (the first event if none)."""

    def __init__(self, event_dates: Iterable[dt.datetime], restrict_to_events: bool = False,
                 presorted: bool = False, description: str | None = None) -> None:
        dates: list[DateTime] = []
        for value in event_dates:
            when = coerce_datetime(value, "UTC")
            if when is None:
                raise DagDefinitionError("EventsTimetable: an event date is None")
            dates.append(_pendulum_utc(when))
        self.event_dates = dates if presorted else sorted(dates)
        self.restrict_to_events = restrict_to_events
        if description is None:
            if self.event_dates:
                self.description = (f"{len(self.event_dates)} events between "
                                    f"{self.event_dates[0]} and {self.event_dates[-1]}")
            else:
                self.description = "No events"
            self._summary = f"{len(self.event_dates)} events"
        else:
            self._summary = description
            self.description = description
        self.periodic = False

    @property
    def summary(self) -> str:
        return self._summary

    def __repr__(self) -> str:
        return self._summary

    def serialize(self) -> dict[str, Any]:
        return {"event_dates": [d.isoformat() for d in self.event_dates],
                "restrict_to_events": self.restrict_to_events,
                "description": self.description, "summary": self._summary}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> EventsTimetable:
        timetable = cls([pendulum.parse(x) for x in data["event_dates"]],  # type: ignore[misc]
                        bool(data.get("restrict_to_events")), presorted=True)
        if "description" in data:
            timetable.description = data["description"]
            timetable._summary = data.get("summary", timetable._summary)
        return timetable

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: TimeRestriction) -> DagRunInfo | None:
        earliest = restriction.earliest
        if not restriction.catchup:
            current = utcnow()
            if earliest is None or current > earliest:
                earliest = current
        for event in self.event_dates:
            if earliest is not None and event < earliest:
                continue
            if last_automated_data_interval is not None and \
                    event <= last_automated_data_interval.end:
                continue
            break
        else:
            return None
        if restriction.latest is not None and event > restriction.latest:
            return None
        return DagRunInfo.exact(event)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        at = _pendulum_utc(run_after)
        if not self.restrict_to_events or not self.event_dates:
            return DataInterval.exact(at)
        if at < self.event_dates[0]:
            return DataInterval.exact(self.event_dates[0])
        past = itertools.dropwhile(lambda when: when > at, reversed(self.event_dates))
        return DataInterval.exact(next(past))
