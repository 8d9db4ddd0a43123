"""DayOfWeekSensor and WeekDay (Airflow 2.10's ``airflow/sensors/weekday.py`` and
``airflow/utils/weekday.py``)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from typing import Any

from squall.common.errors import DagDefinitionError
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator

log = logging.getLogger(__name__)


class WeekDay(enum.IntEnum):
    """The days of the week, ISO numbered (Monday = 1)."""

    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7

    @classmethod
    def get_weekday_number(cls, week_day_str: str) -> WeekDay:
        """The day named ``week_day_str`` (any case: "Sunday")."""
        name = week_day_str.upper()
        if name not in cls.__members__:
            raise AttributeError(f'Invalid Week Day passed: "{week_day_str}"')
        return cls[name]

    @classmethod
    def convert(cls, day: str | WeekDay) -> int:
        if isinstance(day, WeekDay):
            return day
        return cls.get_weekday_number(week_day_str=day)

    @classmethod
    def validate_week_day(cls, week_day: Any) -> set[int]:
        """A day or days (names or members) as the set of their numbers."""
        if not isinstance(week_day, Iterable):
            if isinstance(week_day, WeekDay):
                week_day = {week_day}
            else:
                raise TypeError(f"Unsupported Type for week_day parameter: {type(week_day)}. "
                                "Input should be iterable type: str, set, list, dict or "
                                "Weekday enum type")
        if isinstance(week_day, str):
            week_day = {week_day}
        return {cls.convert(item) for item in week_day}


class DayOfWeekSensor(BaseSensorOperator):
    """True once the day of the week is one of ``week_day``: the run's logical date's day
    with ``use_task_logical_date``, else today's (UTC), as Airflow's."""

    def __init__(self, *, week_day: Any, use_task_logical_date: bool = False,
                 use_task_execution_day: bool = False, **kwargs: Any) -> None:
        task_id = kwargs.get("task_id")
        if use_task_execution_day:
            warn_deprecated(f"DayOfWeekSensor({task_id!r}): use_task_execution_day is "
                            "deprecated; use use_task_logical_date")
            use_task_logical_date = True
        try:
            days = WeekDay.validate_week_day(week_day)
        except (AttributeError, TypeError) as exc:
            raise DagDefinitionError(f"task {task_id}: week_day: {exc}") from None
        super().__init__(**kwargs)
        self.week_day = week_day
        self.use_task_logical_date = use_task_logical_date
        self._week_day_num = days

    def poke(self, context: Context) -> bool:
        today = self.clock.now().isoweekday()
        log.info("Poking until weekday is in %s, Today is %s", self.week_day,
                 WeekDay(today).name)
        if self.use_task_logical_date:
            return context["logical_date"].isoweekday() in self._week_day_num
        return today in self._week_day_num
