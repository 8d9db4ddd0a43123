"""DayOfWeekSensor (Airflow 2.10's ``airflow/sensors/weekday.py``); ``WeekDay`` is
:mod:`squall.sdk.operators.weekday`'s."""

from __future__ import annotations

import logging
from typing import Any

from squall.common.errors import DagDefinitionError
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.operators.base import Context
from squall.sdk.operators.weekday import WeekDay
from squall.sdk.sensors.base import BaseSensorOperator

log = logging.getLogger(__name__)

__all__ = ["DayOfWeekSensor", "WeekDay"]


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
