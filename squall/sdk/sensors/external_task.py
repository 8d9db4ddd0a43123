"""ExternalTaskSensor: wait for a task (or a whole run) of another DAG; ExternalTaskMarker.

Airflow 2's semantics: the other DAG's task instances (or, with no task given, its runs) at
this run's logical date, shifted back by ``execution_delta`` or mapped by
``execution_date_fn``, must all be in ``allowed_states``. Any of them in ``failed_states``
fails the sensor (skips it with ``soft_fail``); any in ``skipped_states`` skips it. Poke and
reschedule modes are :class:`~squall.sdk.sensors.base.BaseSensorOperator`'s; with
``deferrable=True`` the wait is a :class:`~squall.sdk.triggers.external_task.WorkflowTrigger`
in a triggerer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from squall.common.db import session_scope
from squall.common.errors import DagDefinitionError, SquallError, TaskSkipped
from squall.common.models import DagModel
from squall.common.state import DagRunState, TaskInstanceState
from squall.sdk.operators.base import BaseOperator, Context, session_factory_of
from squall.sdk.operators.python import determine_kwargs
from squall.sdk.sensors.base import BaseSensorOperator
from squall.sdk.sensors.external_state import (
    count_in_states,
    group_task_ids,
    serialized_dag,
)
from squall.sdk.triggers.external_task import WorkflowTrigger

log = logging.getLogger(__name__)

__all__ = ["ExternalTaskMarker", "ExternalTaskSensor"]

_TASK_STATES = frozenset(s.value for s in TaskInstanceState)
_DAG_STATES = frozenset(s.value for s in DagRunState)


def _state_names(states: Iterable[Any] | None, default: Sequence[str]) -> list[str]:
    """State values as stored (Airflow's ``State.NONE``, None, is ``"none"`` here)."""
    if states is None:
        return list(default)
    if isinstance(states, str):
        states = [states]
    return ["none" if s is None else str(s) for s in states]


class ExternalTaskSensor(BaseSensorOperator):
    """Waits for ``external_task_id`` / ``external_task_ids`` / ``external_task_group_id`` of
    ``external_dag_id`` (or, with none of them, for the DAG's run) to reach
    ``allowed_states`` at the logical date(s) given by ``execution_delta`` or
    ``execution_date_fn`` (default: this run's logical date)."""

    template_fields: Sequence[str] = ("external_dag_id", "external_task_id",
                                      "external_task_ids", "external_task_group_id")
    ui_color = "#4db7db"

    def __init__(
        self,
        *,
        external_dag_id: str,
        external_task_id: str | None = None,
        external_task_ids: Iterable[str] | None = None,
        external_task_group_id: str | None = None,
        allowed_states: Iterable[Any] | None = None,
        skipped_states: Iterable[Any] | None = None,
        failed_states: Iterable[Any] | None = None,
        execution_delta: timedelta | None = None,
        execution_date_fn: Callable[..., Any] | None = None,
        check_existence: bool = False,
        poll_interval: float = 2.0,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        if external_task_id is not None and external_task_ids is not None:
            raise DagDefinitionError(
                f"task {task_id}: give external_task_id or external_task_ids, not both")
        if external_task_id is not None:
            external_task_ids = [external_task_id]
        ids = list(external_task_ids) if external_task_ids is not None else None
        if ids is not None and len(set(ids)) != len(ids):
            raise DagDefinitionError(
                f"task {task_id}: external_task_ids has duplicates: {ids}")
        if external_task_group_id is not None and ids:
            raise DagDefinitionError(
                f"task {task_id}: give external_task_group_id or external task ids, not both")
        if execution_delta is not None and execution_date_fn is not None:
            raise DagDefinitionError(
                f"task {task_id}: only one of execution_delta or execution_date_fn may be "
                "given to ExternalTaskSensor, not both")
        allowed = _state_names(allowed_states, [TaskInstanceState.SUCCESS.value])
        skipped = _state_names(skipped_states, [])
        failed = _state_names(failed_states, [])
        of_tasks = bool(ids) or external_task_group_id is not None
        valid = _TASK_STATES if of_tasks else _DAG_STATES
        unknown = sorted(set(allowed + skipped + failed) - valid)
        if unknown:
            raise DagDefinitionError(
                f"task {task_id}: {', '.join(unknown)} not valid "
                f"{'task instance' if of_tasks else 'DAG run'} state(s) for "
                f"ExternalTaskSensor (one of {', '.join(sorted(valid))})")
        overlap = sorted(set(allowed) & (set(failed) | set(skipped)))
        if overlap:
            raise DagDefinitionError(
                f"task {task_id}: state(s) {', '.join(overlap)} given both as allowed and as "
                "failed or skipped states")
        super().__init__(**kwargs)
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        self.external_task_ids = ids
        self.external_task_group_id = external_task_group_id
        self.allowed_states = allowed
        self.skipped_states = skipped
        self.failed_states = failed
        self.execution_delta = execution_delta
        self.execution_date_fn = execution_date_fn
        self.check_existence = check_existence
        self._has_checked_existence = False
        self.poll_interval = poll_interval
        self.deferrable = deferrable

    # ------------------------------------------------------------------------------

    def logical_dates(self, context: Context) -> list[datetime]:
        """The other DAG's logical dates to look at, in UTC."""
        logical: datetime = context["logical_date"]
        if self.execution_delta is not None:
            found: Any = logical - self.execution_delta
        elif self.execution_date_fn is not None:
            fn = self.execution_date_fn
            found = fn(logical, **determine_kwargs(fn, [logical], context))
        else:
            found = logical
        dates = list(found) if isinstance(found, list | tuple) else [found]
        for value in dates:
            if not isinstance(value, datetime):
                raise SquallError(
                    f"task {self.task_id}: execution_date_fn must return a datetime or a list "
                    f"of them, got {value!r}")
        return [d.astimezone(UTC) if d.tzinfo else d.replace(tzinfo=UTC) for d in dates]

    def poke(self, context: Context) -> bool:
        dates = self.logical_dates(context)
        shown = ", ".join(d.isoformat() for d in dates)
        factory = session_factory_of(context, "ExternalTaskSensor")
        with session_scope(factory) as session:
            task_ids = self._task_ids(session)
            if task_ids is not None:
                log.info("Poking for tasks %s in DAG %s on %s ...", task_ids,
                         self.external_dag_id, shown)
            else:
                log.info("Poking for DAG %s on %s ...", self.external_dag_id, shown)
            if self.check_existence and not self._has_checked_existence:
                self._check_existence(session, task_ids)
            if self.failed_states and self._count(session, dates, task_ids,
                                                  self.failed_states) > 0:
                self._fail(task_ids)
            if self.skipped_states and self._count(session, dates, task_ids,
                                                   self.skipped_states) > 0:
                raise TaskSkipped(
                    f"{self._what(task_ids)} reached a state in the states to skip on "
                    f"({', '.join(self.skipped_states)}); skipping")
            allowed = self._count(session, dates, task_ids, self.allowed_states)
        return allowed == len(dates)

    def execute(self, context: Context) -> Any:
        """Poke (see :class:`BaseSensorOperator`), or with ``deferrable`` hand the wait to a
        :class:`WorkflowTrigger` at once, as Airflow 2.10's: the trigger waits only for
        ``allowed_states`` (``failed_states``, ``skipped_states`` and ``check_existence``
        are not looked at while deferred), for at most ``execution_timeout`` (no limit when
        None; ``timeout`` does not apply), looking every ``poll_interval`` seconds."""
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=WorkflowTrigger(
                external_dag_id=self.external_dag_id,
                execution_dates=self.logical_dates(context),
                external_task_ids=self.external_task_ids,
                external_task_group_id=self.external_task_group_id,
                allowed_states=self.allowed_states,
                poke_interval=self.poll_interval,
                soft_fail=self.soft_fail),
            method_name="execute_complete",
            timeout=self.execution_timeout)

    def execute_complete(self, context: Context, event: Any = None) -> None:
        """The deferred wait is over: ``event`` is the trigger's ``{"status": ...}``.
        ``success`` succeeds, ``skipped`` skips, anything else fails (skips with
        ``soft_fail``), with Airflow 2.10's messages."""
        status = event.get("status") if isinstance(event, dict) else None
        if status == "success":
            log.info("External tasks %s has executed successfully.", self.external_task_ids)
            return
        if status == "skipped":
            raise TaskSkipped("External job has skipped skipping.")
        if self.soft_fail:
            raise TaskSkipped("External job has failed skipping.")
        raise SquallError("Error occurred while trying to retrieve task status. Please, check "
                          "the name of executed task and Dag.")

    def _what(self, task_ids: list[str] | None) -> str:
        if self.external_task_group_id is not None:
            return (f"the external task group {self.external_task_group_id!r} in DAG "
                    f"{self.external_dag_id!r}")
        if task_ids:
            return f"some of the external tasks {task_ids} in DAG {self.external_dag_id}"
        return f"the external DAG {self.external_dag_id}"

    def _fail(self, task_ids: list[str] | None) -> None:
        if self.external_task_group_id is not None:
            message = (f"The external task_group '{self.external_task_group_id}' in DAG "
                       f"'{self.external_dag_id}' failed.")
        elif task_ids:
            message = (f"Some of the external tasks {task_ids} in DAG {self.external_dag_id} "
                       "failed.")
        else:
            message = f"The external DAG {self.external_dag_id} failed."
        if self.soft_fail:
            raise TaskSkipped(f"{message} Skipping due to soft_fail.")
        raise SquallError(message)

    def _task_ids(self, session: Session) -> list[str] | None:
        if self.external_task_group_id is None:
            return self.external_task_ids or None
        return group_task_ids(session, self.external_dag_id, self.external_task_group_id)

    def _check_existence(self, session: Session, task_ids: list[str] | None) -> None:
        if session.get(DagModel, self.external_dag_id) is None:
            raise SquallError(f"The external DAG {self.external_dag_id} does not exist.")
        if task_ids:
            known = {t.get("task_id") for t in
                     serialized_dag(session, self.external_dag_id).get("tasks") or []}
            missing = [t for t in task_ids if t not in known]
            if missing:
                raise SquallError(f"The external task(s) {missing} in DAG "
                                  f"{self.external_dag_id} do not exist.")
        self._has_checked_existence = True

    def _count(self, session: Session, dates: list[datetime], task_ids: list[str] | None,
               states: list[str]) -> float:
        return count_in_states(session, self.external_dag_id, dates, task_ids, states)


class ExternalTaskMarker(BaseOperator):
    """Airflow's marker for clearing a task of another DAG along with this one. Running it
    does nothing; clearing it clears ``external_task_id`` of ``external_dag_id`` at
    ``execution_date`` (a template) and what follows it there, up to ``recursion_depth``
    markers deep (:mod:`squall.runs.external_clear`)."""

    template_fields: Sequence[str] = ("external_dag_id", "external_task_id", "execution_date")
    ui_color = "#4db7db"

    def __init__(self, *, external_dag_id: str, external_task_id: str,
                 execution_date: str | datetime | None = "{{ logical_date.isoformat() }}",
                 recursion_depth: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        self.execution_date = (execution_date.isoformat() if isinstance(execution_date, datetime)
                               else execution_date)
        if recursion_depth <= 0:
            raise DagDefinitionError(
                f"task {self.task_id}: recursion_depth must be a positive integer")
        self.recursion_depth = recursion_depth

    def execute(self, context: Context) -> None:
        return None
