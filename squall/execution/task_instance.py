"""The ``ti`` a running task sees, backed by the metadata database: its identity, XCom
push and pull, skipping downstream task instances, and a sensor's reschedule history (see
:class:`squall.sdk.runtime.RuntimeTaskInstance` for ``squall tasks test``'s)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pendulum
from sqlalchemy import func, select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import (
    DagRun,
    TaskInstance,
    TaskInstanceKey,
    TaskReschedule,
    utcnow,
)
from squall.common.state import TaskInstanceState
from squall.execution import xcom
from squall.sdk.operators.base import BaseOperator

log = logging.getLogger(__name__)


class DbTaskInstance:
    """The ``ti`` a running task sees (see :class:`squall.sdk.runtime.RuntimeTaskInstance`),
    backed by the metadata database."""

    def __init__(self, *, task: BaseOperator, dag_run: DagRun, try_number: int,
                 max_tries: int, start_date: datetime, session_factory: SessionFactory,
                 hostname: str, map_index: int = -1) -> None:
        self.task = task
        #: -1, or this instance's index when its task is mapped
        self.map_index = map_index
        self.dag_id = dag_run.dag_id
        self.task_id = task.task_id
        self.run_id = dag_run.run_id
        self.logical_date = dag_run.logical_date
        self.try_number = try_number
        self.max_tries = max_tries
        self.start_date = start_date
        self.hostname = hostname
        self._factory = session_factory

    @property
    def key(self) -> TaskInstanceKey:
        return TaskInstanceKey(self.dag_id, self.task_id, self.run_id, self.map_index)

    def __repr__(self) -> str:
        return f"<TaskInstance {self.key} try={self.try_number}>"

    def xcom_push(self, key: str, value: Any) -> None:
        with session_scope(self._factory) as session:
            xcom.push(session, dag_id=self.dag_id, run_id=self.run_id, task_id=self.task_id,
                      key=key, value=value, map_index=self.map_index)

    def xcom_pull(self, task_ids: str | Iterable[str] | None = None,
                  key: str | None = xcom.RETURN_VALUE_KEY, dag_id: str | None = None,
                  default: Any = None, include_prior_dates: bool = False,
                  map_indexes: int | Iterable[int] | None = None) -> Any:
        """As Airflow 2's: ``task_ids=None`` is any task of the run (no filter); a mapped
        task's value is the list of its instances' (``map_indexes``: one of them)."""
        with session_scope(self._factory) as session:
            return xcom.pull(session, dag_id=dag_id or self.dag_id, run_id=self.run_id,
                             task_ids=task_ids, key=key, default=default,
                             include_prior_dates=include_prior_dates,
                             logical_date=self.logical_date, map_indexes=map_indexes,
                             lazy=self._factory)

    @property
    def session_factory(self) -> SessionFactory:
        """The metadata database, for operators that read or write it (TriggerDagRunOperator,
        ExternalTaskSensor)."""
        return self._factory

    def skip_tasks(self, task_ids: Iterable[str]) -> None:
        ids = sorted(set(task_ids))
        if not ids:
            return
        now = utcnow()
        with session_scope(self._factory) as session:
            session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.dag_id == self.dag_id,
                    TaskInstance.run_id == self.run_id,
                    TaskInstance.task_id.in_(ids),
                    TaskInstance.state.in_(
                        [TaskInstanceState.NONE.value, TaskInstanceState.SCHEDULED.value]
                    ),
                )
                .values(state=TaskInstanceState.SKIPPED.value, start_date=now, end_date=now,
                        duration=0.0, state_reason=f"skipped by {self.task_id}",
                        updated_at=now)
                .execution_options(synchronize_session=False)
            )
        log.info("TaskInstance %s: skipped downstream %s", self.key, ", ".join(ids))

    def _reschedule_rows(self) -> tuple[datetime | None, int]:
        with session_scope(self._factory) as session:
            first, count = session.execute(
                select(func.min(TaskReschedule.start_date), func.count()).where(
                    TaskReschedule.dag_id == self.dag_id,
                    TaskReschedule.task_id == self.task_id,
                    TaskReschedule.run_id == self.run_id,
                    TaskReschedule.map_index == self.map_index,
                    TaskReschedule.try_number == self.try_number,
                )
            ).one()
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=pendulum.UTC)
        return first, int(count)

    @property
    def sensor_started_at(self) -> datetime:
        first, _ = self._reschedule_rows()
        return first if first is not None else self.start_date

    @property
    def reschedule_count(self) -> int:
        return self._reschedule_rows()[1]
