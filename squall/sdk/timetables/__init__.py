"""Timetables: when a DAG runs, and which data interval each run covers (Airflow 2 semantics).

A DAG's ``schedule`` becomes a :class:`Timetable` through :func:`timetable_from_schedule`:

==============================  ===========================================================
``None``                        :class:`NullTimetable`: never scheduled, manual runs only
``"@once"``                     :class:`OnceTimetable`: one run at ``start_date``
``"@continuous"``               :class:`ContinuousTimetable`: a run as soon as the last ends
a cron string or preset         :class:`CronDataIntervalTimetable`
``timedelta``/``relativedelta`` :class:`DeltaDataIntervalTimetable`
a :class:`Timetable`            used as it is
an Airflow-style timetable      wrapped in :class:`CustomTimetable` (:mod:`.custom`)
a dataset condition, or a list  :class:`DatasetTriggeredTimetable` (:mod:`.datasets`): runs
of datasets and aliases         only when the datasets are updated (a list: all of them)
``DatasetOrTimeSchedule``       a timetable's runs and the datasets' (:mod:`.datasets`)
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

Where they live: the values, the time-zone helpers, the base class and the ``None`` and
``"@once"`` timetables in :mod:`~squall.sdk.timetables.base`; cron in
:mod:`~squall.sdk.timetables.cron`; ``timedelta``/``relativedelta`` in
:mod:`~squall.sdk.timetables.delta`. Import them from here.
"""

from __future__ import annotations

import datetime as dt

from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped, unused-ignore]

from squall.common.errors import DagDefinitionError
from squall.sdk.timetables.base import (
    DagRunInfo,
    DataInterval,
    NullTimetable,
    OnceTimetable,
    Timetable,
    TimezoneLike,
    coerce_datetime,
    resolve_timezone,
)
from squall.sdk.timetables.continuous import ContinuousTimetable
from squall.sdk.timetables.cron import CRON_PRESETS, CronDataIntervalTimetable
from squall.sdk.timetables.custom import AirflowTimetable, CustomTimetable
from squall.sdk.timetables.datasets import (
    DatasetOrTimeSchedule,
    DatasetTriggeredTimetable,
    dataset_condition_of,
)
from squall.sdk.timetables.delta import DeltaDataIntervalTimetable

__all__ = [
    "CRON_PRESETS",
    "AirflowTimetable",
    "ContinuousTimetable",
    "CronDataIntervalTimetable",
    "CustomTimetable",
    "DagRunInfo",
    "DataInterval",
    "DatasetOrTimeSchedule",
    "DatasetTriggeredTimetable",
    "DeltaDataIntervalTimetable",
    "NullTimetable",
    "OnceTimetable",
    "Timetable",
    "TimezoneLike",
    "coerce_datetime",
    "resolve_timezone",
    "timetable_from_schedule",
]


def timetable_from_schedule(schedule: object, timezone: TimezoneLike = "UTC") -> Timetable:
    """The timetable of a DAG's ``schedule`` (see the module docstring for what is accepted).

    ``timezone`` is the DAG's: cron ticks are wall times there, calendar deltas count there.
    Raises :class:`DagDefinitionError` naming the value for anything invalid or unsupported.
    """
    if schedule is None:
        return NullTimetable()
    if isinstance(schedule, Timetable):
        return schedule
    if isinstance(schedule, AirflowTimetable):
        try:
            schedule.validate()
        except Exception as exc:
            raise DagDefinitionError(
                f"invalid timetable {type(schedule).__name__}: {exc}") from exc
        return CustomTimetable(schedule)
    if isinstance(schedule, str):
        if schedule.strip().lower() == "@once":
            return OnceTimetable()
        if schedule.strip().lower() == "@continuous":
            return ContinuousTimetable()
        if schedule.strip().startswith("@") and schedule.strip().lower() not in CRON_PRESETS:
            known = ", ".join(["@once", "@continuous", *CRON_PRESETS])
            raise DagDefinitionError(f"unsupported schedule preset {schedule!r}; known: {known}")
        return CronDataIntervalTimetable(schedule, timezone)
    if isinstance(schedule, dt.timedelta | relativedelta):
        return DeltaDataIntervalTimetable(schedule, timezone)
    condition = dataset_condition_of(schedule)
    if condition is not None:
        return DatasetTriggeredTimetable(condition)
    raise DagDefinitionError(
        f"unsupported schedule {schedule!r} ({type(schedule).__name__}): expected None, a cron "
        "string or preset, '@once', a timedelta, a relativedelta, a Timetable, or datasets"
    )
