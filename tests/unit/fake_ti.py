"""A small in-memory stand-in for the runtime ``ti`` (squall.sdk.runtime) in unit tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pendulum

from squall.sdk.operators.base import BaseOperator, Context
from squall.sdk.templating import build_context


class FakeTI:
    """Records XComs in a dict keyed by (task_id, key) and skipped task ids in a list."""

    def __init__(
        self,
        task: BaseOperator | None = None,
        *,
        run_id: str = "manual__2024-01-01",
        try_number: int = 1,
        sensor_started_at: datetime | None = None,
        reschedule_count: int = 0,
        xcoms: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        self.task = task
        self.task_id = task.task_id if task is not None else "t"
        self.dag_id = task.dag_id if task is not None else "d"
        self.run_id = run_id
        self.try_number = try_number
        self.max_tries = 1
        self.map_index = -1
        self.start_date = pendulum.now("UTC")
        self.hostname = "localhost"
        self.sensor_started_at = sensor_started_at or pendulum.now("UTC")
        self.reschedule_count = reschedule_count
        self.xcoms: dict[tuple[str, str], Any] = dict(xcoms or {})
        self.skipped: list[str] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(
        self,
        task_ids: str | Iterable[str] | None = None,
        key: str = "return_value",
        dag_id: str | None = None,
        default: Any = None,
    ) -> Any:
        if task_ids is None:
            task_ids = self.task_id
        if isinstance(task_ids, str):
            return self.xcoms.get((task_ids, key), default)
        return [self.xcoms.get((t, key), default) for t in task_ids]

    def skip_tasks(self, task_ids: Iterable[str]) -> None:
        self.skipped.extend(task_ids)


LOGICAL_DATE = pendulum.datetime(2024, 3, 5, 6, 7, 8, tz="UTC")


def make_context(task: BaseOperator, ti: FakeTI | None = None, **kwargs: Any) -> Context:
    """The template context of ``task`` for a run at LOGICAL_DATE (daily interval)."""
    ti = ti if ti is not None else FakeTI(task)
    kwargs.setdefault("logical_date", LOGICAL_DATE)
    start = kwargs.pop("data_interval_start", kwargs["logical_date"])
    end = kwargs.pop("data_interval_end", kwargs["logical_date"].add(days=1))
    return build_context(dag=task.dag, task=task, ti=ti, data_interval=(start, end), **kwargs)


def run_task(task: BaseOperator, ti: FakeTI | None = None, **kwargs: Any) -> Any:
    """Render ``task``'s templated fields and execute it, as the runner does."""
    ti = ti if ti is not None else FakeTI(task)
    context = make_context(task, ti, **kwargs)
    task.render_template_fields(context)
    return task.execute(context)
