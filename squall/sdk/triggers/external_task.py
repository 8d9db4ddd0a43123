"""Triggers that wait for another DAG (Airflow 2.10's ``airflow/triggers/external_task.py``):
``WorkflowTrigger`` (tasks, a task group or the run of another DAG, for the deferrable
``ExternalTaskSensor``), ``DagStateTrigger`` (a run's state, for the deferrable
``TriggerDagRunOperator``) and the deprecated ``TaskStateTrigger``.

They read the metadata database through :mod:`squall.sdk.triggers.metadata`: each query
runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Iterable
from datetime import datetime
from typing import Any

import pendulum
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from squall.common.errors import SquallError
from squall.common.models import DagRun, TaskInstance
from squall.common.state import TaskInstanceState
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.sensors.external_state import count_in_states, group_task_ids
from squall.sdk.triggers.base import BaseTrigger, TriggerEvent
from squall.sdk.triggers.metadata import run_query

log = logging.getLogger(__name__)

__all__ = ["DagStateTrigger", "TaskStateTrigger", "WorkflowTrigger"]


def _dates(values: Iterable[datetime]) -> list[datetime]:
    """Logical dates as stored (UTC); a naive one is read as UTC."""
    return [pendulum.instance(v, tz="UTC").in_timezone("UTC") for v in values]


def _names(states: Iterable[Any] | None) -> list[str]:
    return [str(s) for s in states or ()]


class WorkflowTrigger(BaseTrigger):
    """Waits for ``external_task_ids`` / ``external_task_group_id`` of ``external_dag_id``
    (with neither, for its runs) at the logical ``execution_dates`` to be in
    ``allowed_states``, looking every ``poke_interval`` seconds.

    Fires ``{"status": "failed"}`` as soon as any of them is in ``failed_states``,
    ``{"status": "skipped"}`` when any is in ``skipped_states``, ``{"status": "success"}``
    when all are allowed. (Airflow 2.10 fires ``success`` at once when ``failed_states`` is
    given and nothing failed yet; Squall waits, as later Airflow versions do. The deferrable
    ``ExternalTaskSensor`` passes neither, so it waits as in Airflow 2.10.) ``soft_fail`` is
    kept for the resumed task, as in Airflow.
    """

    def __init__(
        self,
        external_dag_id: str,
        execution_dates: list[datetime],
        external_task_ids: Collection[str] | None = None,
        external_task_group_id: str | None = None,
        failed_states: Iterable[str] | None = None,
        skipped_states: Iterable[str] | None = None,
        allowed_states: Iterable[str] | None = None,
        poke_interval: float = 2.0,
        soft_fail: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.external_dag_id = external_dag_id
        self.external_task_ids = list(external_task_ids) if external_task_ids else None
        self.external_task_group_id = external_task_group_id
        self.failed_states = _names(failed_states) or None
        self.skipped_states = _names(skipped_states) or None
        self.allowed_states = _names(allowed_states) or [TaskInstanceState.SUCCESS.value]
        self.execution_dates = _dates(execution_dates)
        self.poke_interval = poke_interval
        self.soft_fail = soft_fail

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("squall.sdk.triggers.external_task.WorkflowTrigger", {
            "external_dag_id": self.external_dag_id,
            "external_task_ids": self.external_task_ids,
            "external_task_group_id": self.external_task_group_id,
            "failed_states": self.failed_states,
            "skipped_states": self.skipped_states,
            "allowed_states": self.allowed_states,
            "execution_dates": self.execution_dates,
            "poke_interval": self.poke_interval,
            "soft_fail": self.soft_fail,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            if self.failed_states and await self._count(self.failed_states) > 0:
                yield TriggerEvent({"status": "failed"})
                return
            if self.skipped_states and await self._count(self.skipped_states) > 0:
                yield TriggerEvent({"status": "skipped"})
                return
            if await self._count(self.allowed_states) == len(self.execution_dates):
                yield TriggerEvent({"status": "success"})
                return
            self.log.info("Sleeping for %s seconds", self.poke_interval)
            await asyncio.sleep(self.poke_interval)

    async def _count(self, states: list[str]) -> float:
        return await run_query("WorkflowTrigger", lambda session: self._count_in(session, states))

    def _count_in(self, session: Session, states: list[str]) -> float:
        task_ids = self.external_task_ids
        if self.external_task_group_id is not None:
            try:
                task_ids = group_task_ids(session, self.external_dag_id,
                                          self.external_task_group_id)
            except SquallError:
                # no such group (yet): nothing counts, the wait goes on until its timeout,
                # as in Airflow (``_get_external_task_group_task_ids``)
                return 0.0
            if not task_ids:
                return 0.0
        return count_in_states(session, self.external_dag_id, self.execution_dates, task_ids,
                               states)


class DagStateTrigger(BaseTrigger):
    """Waits for the runs of ``dag_id`` at the logical ``execution_dates`` to be in
    ``states`` (all of them), looking every ``poll_interval`` seconds; then fires its own
    ``serialize()`` (class path and keyword arguments) as the payload, as Airflow 2.10's."""

    def __init__(self, dag_id: str, states: list[str], execution_dates: list[datetime],
                 poll_interval: float = 5.0) -> None:
        super().__init__()
        self.dag_id = dag_id
        self.states = _names(states)
        self.execution_dates = _dates(execution_dates)
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("squall.sdk.triggers.external_task.DagStateTrigger", {
            "dag_id": self.dag_id,
            "states": self.states,
            "execution_dates": self.execution_dates,
            "poll_interval": self.poll_interval,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            if await self.count_dags() == len(self.execution_dates):
                yield TriggerEvent(self.serialize())
                return
            await asyncio.sleep(self.poll_interval)

    async def count_dags(self) -> int:
        """How many runs of the DAG at the dates are in the states."""
        return await run_query("DagStateTrigger", self._count_dags)

    def _count_dags(self, session: Session) -> int:
        return int(session.scalar(
            select(func.count()).select_from(DagRun).where(
                DagRun.dag_id == self.dag_id, DagRun.state.in_(self.states),
                DagRun.logical_date.in_(self.execution_dates))) or 0)


#: how long ``TaskStateTrigger`` waits for the other DAG to show any life (Airflow 2.10's)
TASK_STATE_TRIGGER_TIMEOUT = 60.0


class TaskStateTrigger(BaseTrigger):
    """Deprecated in Airflow 2.10 (use :class:`WorkflowTrigger`); kept as it behaves there.

    Waits for ``task_id`` of ``dag_id`` at the logical ``execution_dates`` to be in
    ``states`` (default ``["success"]``), looking every ``poll_interval`` seconds:
    ``{"status": "success"}`` when it is; ``{"status": "timeout"}`` once 60 seconds have
    passed since ``trigger_start_time`` (whether the DAG is running or not, as Airflow's);
    ``{"status": "failed"}`` when reading the database fails.
    """

    def __init__(self, dag_id: str, execution_dates: list[datetime],
                 trigger_start_time: datetime, states: list[str] | None = None,
                 task_id: str | None = None, poll_interval: float = 2.0) -> None:
        warn_deprecated("TaskStateTrigger has been deprecated and will be removed in future.")
        super().__init__()
        self.dag_id = dag_id
        self.task_id = task_id
        self.states = _names(states) or [TaskInstanceState.SUCCESS.value]
        self.execution_dates = _dates(execution_dates)
        self.poll_interval = poll_interval
        self.trigger_start_time = pendulum.instance(trigger_start_time, tz="UTC")
        self._timeout_sec = TASK_STATE_TRIGGER_TIMEOUT

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("squall.sdk.triggers.external_task.TaskStateTrigger", {
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "states": self.states,
            "execution_dates": self.execution_dates,
            "poll_interval": self.poll_interval,
            "trigger_start_time": self.trigger_start_time,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            while True:
                waited = (pendulum.now("UTC") - self.trigger_start_time).total_seconds()
                if waited >= self._timeout_sec:
                    yield TriggerEvent({"status": "timeout"})
                    return
                if await self.count_running_dags() == 0:
                    self.log.info("Waiting for DAG to start execution...")
                    await asyncio.sleep(self.poll_interval)
                if await self.count_tasks() == len(self.execution_dates):
                    yield TriggerEvent({"status": "success"})
                    return
                self.log.info("Task is still running, sleeping for %s seconds...",
                              self.poll_interval)
                await asyncio.sleep(self.poll_interval)
        except Exception:
            log.exception("TaskStateTrigger for %s.%s failed", self.dag_id, self.task_id)
            yield TriggerEvent({"status": "failed"})

    async def count_running_dags(self) -> int:
        """How many task instances of the DAG at the dates are running or succeeded."""
        return await run_query("TaskStateTrigger", lambda s: self._count_tis(
            s, None, [TaskInstanceState.RUNNING.value, TaskInstanceState.SUCCESS.value]))

    async def count_tasks(self) -> int:
        """How many instances of the task at the dates are in the states (none without a
        task id, as Airflow's ``task_id == None`` matches nothing)."""
        if self.task_id is None:
            return 0
        return await run_query("TaskStateTrigger",
                               lambda s: self._count_tis(s, self.task_id, self.states))

    def _count_tis(self, session: Session, task_id: str | None, states: list[str]) -> int:
        query = (select(func.count()).select_from(TaskInstance)
                 .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
                       & (DagRun.run_id == TaskInstance.run_id))
                 .where(TaskInstance.dag_id == self.dag_id, TaskInstance.state.in_(states),
                        DagRun.logical_date.in_(self.execution_dates)))
        if task_id is not None:
            query = query.where(TaskInstance.task_id == task_id)
        return int(session.scalar(query) or 0)
