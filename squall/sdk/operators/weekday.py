"""``BranchDayOfWeekOperator`` and ``WeekDay`` (Airflow 2's ``airflow.operators.weekday`` and
``airflow.utils.weekday``)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from typing import Any

import pendulum

from squall.common.errors import DagDefinitionError
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.operators.base import Context
from squall.sdk.operators.branch import BaseBranchOperator

log = logging.getLogger(__name__)

__all__ = ["BranchDayOfWeekOperator", "WeekDay"]


class WeekDay(enum.IntEnum):
    """The days of the week, numbered as ISO 8601 (Monday 1 ... Sunday 7)."""

    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7

    @classmethod
    def get_weekday_number(cls, week_day_str: str) -> WeekDay:
        """The day named ``week_day_str`` (any case: ``"monday"``, ``"Monday"``)."""
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
    def validate_week_day(cls, week_day: str | WeekDay | Iterable[str] | Iterable[WeekDay],
                          ) -> set[int]:
        """The ISO day numbers of a day name, a WeekDay or an iterable of them."""
        if isinstance(week_day, WeekDay):
            return {int(week_day)}
        if isinstance(week_day, str):
            return {cls.convert(week_day)}
        if not isinstance(week_day, Iterable):
            raise TypeError(f"Unsupported Type for week_day parameter: {type(week_day)}. "
                            "Input should be iterable type: str, set, list, dict or Weekday "
                            "enum type")
        return {cls.convert(item) for item in week_day}


class BranchDayOfWeekOperator(BaseBranchOperator):
    """Follow ``follow_task_ids_if_true`` on the given day(s) of the week, else
    ``follow_task_ids_if_false``. The day is today's in the DAG's time zone, or with
    ``use_task_logical_date`` the run's logical date's (airflow/operators/weekday.py)."""

    def __init__(
        self,
        *,
        follow_task_ids_if_true: str | Iterable[str],
        follow_task_ids_if_false: str | Iterable[str],
        week_day: str | Iterable[str] | WeekDay | Iterable[WeekDay],
        use_task_logical_date: bool = False,
        use_task_execution_day: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.follow_task_ids_if_true = follow_task_ids_if_true
        self.follow_task_ids_if_false = follow_task_ids_if_false
        self.week_day = week_day
        self.use_task_logical_date = use_task_logical_date
        if use_task_execution_day:
            self.use_task_logical_date = True
            warn_deprecated(f"BranchDayOfWeekOperator({self.task_id!r}): use_task_execution_day "
                            "is deprecated; use use_task_logical_date")
        try:
            self._week_day_num = WeekDay.validate_week_day(week_day)
        except (AttributeError, TypeError) as exc:
            raise DagDefinitionError(f"task {self.task_id}: week_day: {exc}") from None

    def choose_branch(self, context: Context) -> str | Iterable[str]:
        if self.use_task_logical_date:
            now = context["logical_date"]
        else:
            tz = self.dag.timezone if self.dag is not None else pendulum.UTC
            now = pendulum.now("UTC").in_timezone(tz)
        if now.isoweekday() in self._week_day_num:
            return self.follow_task_ids_if_true
        return self.follow_task_ids_if_false
