"""Data-aware schedules (Airflow 2.4-2.10): ``schedule=`` a dataset condition, or
``DatasetOrTimeSchedule(timetable=..., datasets=...)`` (``airflow.timetables.datasets``).

Both carry ``dataset_condition`` (a :class:`~squall.sdk.datasets.BaseDataset`), whose
``as_expression()`` the DAG processor stores in ``dag.dataset_expression`` for the
scheduler's dataset step. :class:`DatasetTriggeredTimetable` never gives a time-based run;
:class:`DatasetOrTimeSchedule` gives the runs of its timetable, as that timetable would.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pendulum import DateTime

from squall.common.errors import DagDefinitionError
from squall.sdk.datasets import BaseDataset, Dataset, DatasetAlias, DatasetAll
from squall.sdk.timetables.base import (
    DagRunInfo,
    DataInterval,
    Timetable,
    _pendulum_utc,
)

__all__ = ["DatasetOrTimeSchedule", "DatasetTriggeredTimetable", "dataset_condition_of"]


def dataset_condition_of(schedule: object) -> BaseDataset | None:
    """The condition a DAG's ``schedule`` stands for when it is data-aware (a condition, or a
    list of datasets and aliases: all of them), else None. Raises
    :class:`DagDefinitionError` for a list holding anything else, as Airflow 2.10."""
    if isinstance(schedule, BaseDataset):
        return schedule
    if isinstance(schedule, list | tuple | set | frozenset):
        items = list(schedule)
        if not all(isinstance(x, Dataset | DatasetAlias) for x in items):
            raise DagDefinitionError(
                f"All elements in 'schedule' should be datasets or dataset aliases, got "
                f"{schedule!r}")
        return DatasetAll(*items)
    return None


def _summary(condition: BaseDataset) -> str:
    # Airflow: an alias that resolves to no dataset yet is shown as unresolved
    return "Dataset" if next(condition.iter_datasets(), None) else "Unresolved DatasetAlias"


class DatasetTriggeredTimetable(Timetable):
    """``schedule=`` a dataset condition: runs are created by the scheduler when the
    condition holds, never by time."""

    description = "Triggered by datasets"
    periodic = False
    can_be_scheduled = True  # as Airflow: its params must validate without a conf

    def __init__(self, condition: BaseDataset) -> None:
        self.dataset_condition = condition
        self.summary = _summary(condition)

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         start_date: DateTime | None, end_date: DateTime | None,
                         catchup: bool, now: DateTime) -> DagRunInfo | None:
        return None

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval.exact(_pendulum_utc(run_after))

    def _key(self) -> tuple[object, ...]:
        return (type(self), repr(self.dataset_condition.as_expression()))


class DatasetOrTimeSchedule(Timetable):
    """Runs when the datasets say so *and* as ``timetable`` says (Airflow 2.9's
    ``DatasetOrTimeSchedule``): the time-based runs, manual runs' intervals and summary
    are the timetable's."""

    def __init__(self, *, timetable: Any, datasets: Collection[Dataset] | BaseDataset) -> None:
        from squall.sdk.timetables import timetable_from_schedule

        if isinstance(timetable, DatasetTriggeredTimetable | DatasetOrTimeSchedule):
            raise DagDefinitionError("cannot nest dataset timetables")
        if not isinstance(timetable, Timetable) and not hasattr(timetable, "next_dagrun_info"):
            raise DagDefinitionError(
                f"DatasetOrTimeSchedule: timetable must be a Timetable, got {timetable!r}")
        self.timetable: Timetable = timetable_from_schedule(timetable)
        condition = datasets if isinstance(datasets, BaseDataset) else \
            dataset_condition_of(list(datasets))
        if condition is None:
            raise DagDefinitionError("all elements in 'datasets' must be datasets")
        self.dataset_condition = condition
        self.description = f"Triggered by datasets or {self.timetable.description}"
        self.summary = f"Dataset or {self.timetable.summary}"
        self.periodic = self.timetable.periodic
        self.can_be_scheduled = self.timetable.can_be_scheduled
        limit = getattr(self.timetable, "active_runs_limit", None)
        if limit is not None:
            self.active_runs_limit = limit

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         start_date: DateTime | None, end_date: DateTime | None,
                         catchup: bool, now: DateTime) -> DagRunInfo | None:
        return self.timetable.next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, start_date=start_date,
            end_date=end_date, catchup=catchup, now=now)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return self.timetable.infer_manual_data_interval(run_after=run_after)

    def _key(self) -> tuple[object, ...]:
        return (type(self), self.timetable._key(),
                repr(self.dataset_condition.as_expression()))
