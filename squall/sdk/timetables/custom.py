"""Timetables written against Airflow 2.2+'s timetable protocol (``airflow.timetables.base``).

An Airflow timetable implements ``next_dagrun_info(*, last_automated_data_interval,
restriction)`` and ``infer_manual_data_interval(*, run_after)``, with ``serialize()`` /
``deserialize()`` so the scheduler can rebuild it from the serialized DAG. Such a class
subclasses :class:`AirflowTimetable` (``airflow.timetables.base.Timetable`` under the
compatibility layer). A DAG given one wraps it in :class:`CustomTimetable`, the Squall
:class:`~squall.sdk.timetables.base.Timetable` that translates the calls: Squall's
``start_date`` / ``end_date`` / ``catchup`` become Airflow's :class:`TimeRestriction`
(``earliest``, ``latest``, ``catchup``), and the :class:`DagRunInfo` it returns becomes
Squall's.

Serialized, a custom timetable is its class's import path plus ``serialize()``; the class is
found again through the plugins registered in ``[core] plugins_folder``
(:mod:`squall.dag_processing.plugins`), as Airflow finds it through ``AirflowPlugin.timetables``.
Squall's own Airflow-shaped timetables (``CronTriggerTimetable``, ``EventsTimetable``) need
no plugin.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple

import pendulum
from pendulum import DateTime

from squall.sdk.timetables.base import DagRunInfo as SquallDagRunInfo
from squall.sdk.timetables.base import DataInterval, Timetable, _pendulum_utc

__all__ = ["AirflowTimetable", "CustomTimetable", "DagRunInfo", "DataInterval",
           "TimeRestriction", "class_path", "utcnow"]

_now: ContextVar[DateTime | None] = ContextVar("squall_timetable_now", default=None)


def utcnow() -> DateTime:
    """The current time as the scheduler sees it (its ``now`` while it asks a timetable)."""
    return _now.get() or pendulum.now("UTC")


@contextlib.contextmanager
def _scheduler_now(now: DateTime) -> Iterator[None]:
    token = _now.set(now)
    try:
        yield
    finally:
        _now.reset(token)


class TimeRestriction(NamedTuple):
    """Airflow's restriction on the runs a timetable may give: not before ``earliest`` (the
    DAG's start date), not after ``latest`` (its end date), and whether to catch up."""

    earliest: DateTime | None
    latest: DateTime | None
    catchup: bool


class DagRunInfo(NamedTuple):
    """Airflow's ``DagRunInfo``: when a run may be created and the interval it covers."""

    run_after: DateTime
    data_interval: DataInterval

    @classmethod
    def exact(cls, at: DateTime) -> DagRunInfo:
        return cls(run_after=at, data_interval=DataInterval.exact(at))

    @classmethod
    def interval(cls, start: DateTime, end: DateTime) -> DagRunInfo:
        return cls(run_after=end, data_interval=DataInterval(start, end))

    @property
    def logical_date(self) -> DateTime:
        return self.data_interval.start


class AirflowTimetable:
    """The base of a timetable written for Airflow (``airflow.timetables.base.Timetable``).

    Subclasses implement :meth:`next_dagrun_info` and :meth:`infer_manual_data_interval`,
    and :meth:`serialize` / :meth:`deserialize` when they hold state.
    """

    description: str = ""
    periodic: bool = True
    can_be_scheduled: bool = True
    run_ordering: tuple[str, ...] = ("data_interval_end", "execution_date")
    active_runs_limit: int | None = None

    @property
    def summary(self) -> str:
        return type(self).__name__

    @property
    def can_run(self) -> bool:  # Airflow 2.2's name for can_be_scheduled
        return self.can_be_scheduled

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> AirflowTimetable:
        return cls()

    def serialize(self) -> dict[str, Any]:
        return {}

    def validate(self) -> None:
        """Raise ``AirflowTimetableInvalid`` (a ValueError here) for a bad timetable."""

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        raise NotImplementedError(f"{type(self).__name__}.infer_manual_data_interval")

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | SquallDagRunInfo | None:
        raise NotImplementedError(f"{type(self).__name__}.next_dagrun_info")

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other) or not isinstance(other, AirflowTimetable):
            return NotImplemented
        return self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash((type(self), json.dumps(self.serialize(), sort_keys=True, default=str)))


def class_path(cls: type) -> str:
    """``module.QualName``: how a custom timetable class is named in the serialized DAG (and
    in Airflow's registry of plugin timetables)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _utc(value: dt.datetime | None) -> DateTime | None:
    return None if value is None else _pendulum_utc(value)


class CustomTimetable(Timetable):
    """A Squall timetable that asks an :class:`AirflowTimetable` (``inner``)."""

    def __init__(self, inner: AirflowTimetable) -> None:
        self.inner = inner
        self.summary = str(inner.summary)
        self.description = str(inner.description or "")
        self.periodic = bool(inner.periodic)
        self.can_be_scheduled = bool(inner.can_be_scheduled)

    def _key(self) -> tuple[object, ...]:
        return (type(self), type(self.inner),
                json.dumps(self.inner.serialize(), sort_keys=True, default=str))

    def __repr__(self) -> str:
        return f"CustomTimetable({self.inner!r})"

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        start_date: DateTime | None,
        end_date: DateTime | None,
        catchup: bool,
        now: DateTime,
    ) -> SquallDagRunInfo | None:
        restriction = TimeRestriction(_utc(start_date), _utc(end_date), catchup)
        with _scheduler_now(now):
            info = self.inner.next_dagrun_info(
                last_automated_data_interval=last_automated_data_interval,
                restriction=restriction)
        if info is None:
            return None
        interval = DataInterval(_pendulum_utc(info.data_interval.start),
                                _pendulum_utc(info.data_interval.end))
        return SquallDagRunInfo(logical_date=interval.start, data_interval=interval,
                                run_after=_pendulum_utc(info.run_after))

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        interval = self.inner.infer_manual_data_interval(run_after=run_after)
        return DataInterval(_pendulum_utc(interval.start), _pendulum_utc(interval.end))
