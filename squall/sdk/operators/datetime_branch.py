"""``BranchDateTimeOperator`` (Airflow 2's ``airflow.operators.datetime``): branch on whether
now (or the run's logical date) lies between two targets."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

import pendulum

from squall.common.errors import DagDefinitionError
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.operators.base import Context
from squall.sdk.operators.branch import BaseBranchOperator
from squall.sdk.timetables import coerce_datetime

__all__ = ["BranchDateTimeOperator", "target_times_as_dates"]

Target = datetime.datetime | datetime.time | None


class BranchDateTimeOperator(BaseBranchOperator):
    """Follow ``follow_task_ids_if_true`` when now (UTC), or with ``use_task_logical_date``
    the run's logical date, is within ``[target_lower, target_upper]``; else
    ``follow_task_ids_if_false``. A target may be a datetime or a time of day (on the date of
    the moment compared, in UTC; an upper time before the lower one means the next day);
    naive targets are wall times in the DAG's time zone. Either may be None, not both.
    The rule of Airflow 2.10's ``BranchDateTimeOperator.choose_branch``."""

    def __init__(
        self,
        *,
        follow_task_ids_if_true: str | Iterable[str],
        follow_task_ids_if_false: str | Iterable[str],
        target_lower: Target,
        target_upper: Target,
        use_task_logical_date: bool = False,
        use_task_execution_date: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if target_lower is None and target_upper is None:
            raise DagDefinitionError(
                f"task {self.task_id}: both target_upper and target_lower are None; at least "
                "one must be given to compare the current datetime with")
        self.target_lower = target_lower
        self.target_upper = target_upper
        self.follow_task_ids_if_true = follow_task_ids_if_true
        self.follow_task_ids_if_false = follow_task_ids_if_false
        self.use_task_logical_date = use_task_logical_date
        if use_task_execution_date:
            self.use_task_logical_date = True
            warn_deprecated(f"BranchDateTimeOperator({self.task_id!r}): use_task_execution_date "
                            "is deprecated; use use_task_logical_date")

    def choose_branch(self, context: Context) -> str | Iterable[str]:
        now = context["logical_date"] if self.use_task_logical_date else pendulum.now("UTC")
        lower, upper = target_times_as_dates(now, self.target_lower, self.target_upper)
        tz = self.dag.timezone if self.dag is not None else pendulum.UTC
        lower_at = coerce_datetime(lower, tz)
        upper_at = coerce_datetime(upper, tz)
        if upper_at is not None and upper_at < now:
            return self.follow_task_ids_if_false
        if lower_at is not None and lower_at > now:
            return self.follow_task_ids_if_false
        return self.follow_task_ids_if_true


def target_times_as_dates(base_date: datetime.datetime, lower: Target, upper: Target,
                          ) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """The targets as datetimes: a time of day is put on ``base_date``'s date; an upper time
    before the lower one moves to the next day."""
    if isinstance(lower, datetime.datetime) and isinstance(upper, datetime.datetime):
        return lower, upper
    low = datetime.datetime.combine(base_date, lower) if isinstance(lower, datetime.time) \
        else lower
    up = datetime.datetime.combine(base_date, upper) if isinstance(upper, datetime.time) \
        else upper
    if low is None or up is None:
        return low, up
    if up < low:
        up += datetime.timedelta(days=1)
    return low, up
