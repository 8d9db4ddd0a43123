"""TriggerDagRunOperator: create a manual run of another DAG, optionally wait for its end.

As Airflow 2's: the run is created QUEUED in the metadata database (the scheduler starts it,
as it does a run made by ``squall dags trigger``), with ``conf`` and the logical date given
(default: now) and run id ``trigger_run_id`` (default ``manual__<logical date>``). The
operator pushes ``trigger_run_id`` and ``trigger_execution_date_iso`` to XCom. With
``wait_for_completion`` it checks the run every ``poke_interval`` seconds until it is in
``allowed_states`` (success by default) or fails in ``failed_states`` (failed by default),
in its worker slot, or with ``deferrable=True`` in a triggerer (a :class:`DagStateTrigger`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pendulum
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.db import session_scope
from squall.common.errors import DagDefinitionError, DagRunAlreadyExists, SquallError, TaskSkipped
from squall.common.models import DagRun, utcnow
from squall.common.state import DagRunState, DagRunType
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.operators.base import BaseOperator, Context, session_factory_of
from squall.sdk.sensors.base import SYSTEM_CLOCK, SensorClock
from squall.sdk.triggers.external_task import DagStateTrigger

log = logging.getLogger(__name__)

__all__ = [
    "XCOM_EXECUTION_DATE_ISO",
    "XCOM_RUN_ID",
    "DagRunTrigger",
    "TriggerDagRunOperator",
    "install_dag_run_trigger",
]

XCOM_EXECUTION_DATE_ISO = "trigger_execution_date_iso"
XCOM_RUN_ID = "trigger_run_id"


class DagRunTrigger(Protocol):
    """Creates (or with ``reset_dag_run`` clears) a manual run of another DAG; the run id.
    :func:`squall.runs.trigger.trigger_dag_run` is the one processes install."""

    def __call__(self, session: Session, *, dag_id: str, run_id: str,
                 logical_date: datetime, conf: dict[str, Any], default_queue: str,
                 reset_dag_run: bool, triggered_by: str) -> str: ...


#: the process's DagRunTrigger, installed where tasks are run (the authoring API sits
#: below the scheduler, so it cannot import run creation itself)
_TRIGGER: dict[str, DagRunTrigger] = {}


def install_dag_run_trigger(trigger: DagRunTrigger | None) -> None:
    """Let ``TriggerDagRunOperator`` create runs in this process with ``trigger`` (None:
    not any more)."""
    if trigger is None:
        _TRIGGER.pop("trigger", None)
    else:
        _TRIGGER["trigger"] = trigger


def _states(values: Iterable[Any] | None, default: DagRunState) -> list[str]:
    if values is None:
        return [default.value]
    if isinstance(values, str):
        values = [values]
    return [str(v) for v in values]


class TriggerDagRunOperator(BaseOperator):
    """Triggers a run of ``trigger_dag_id`` (see the module docstring).

    ``reset_dag_run``: when the DAG already has a run with that run id or logical date, clear
    its task instances so it runs again (else the try fails, or is skipped with
    ``skip_when_already_exists``).
    """

    template_fields: Sequence[str] = ("trigger_dag_id", "trigger_run_id", "execution_date",
                                      "logical_date", "conf")
    template_fields_renderers = {"conf": "py"}
    ui_color = "#ffefeb"
    #: where the operator reads the time and sleeps while it waits (set on an instance in tests)
    clock: SensorClock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        trigger_dag_id: str,
        trigger_run_id: str | None = None,
        conf: dict[str, Any] | None = None,
        execution_date: str | datetime | None = None,
        logical_date: str | datetime | None = None,
        reset_dag_run: bool = False,
        wait_for_completion: bool = False,
        poke_interval: float | timedelta = 60,
        allowed_states: Iterable[Any] | None = None,
        failed_states: Iterable[Any] | None = None,
        skip_when_already_exists: bool = False,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if execution_date is not None:
            # Airflow 2.10: deprecated, and it wins over logical_date
            warn_deprecated(f"{type(self).__name__}({self.task_id!r}): execution_date is "
                            "deprecated; use logical_date")
            logical_date = execution_date
        if not isinstance(execution_date, str | datetime | None) or not isinstance(
                logical_date, str | datetime | None):
            raise DagDefinitionError(
                f"task {self.task_id}: execution_date / logical_date must be a str or a "
                "datetime")
        self.trigger_dag_id = trigger_dag_id
        self.trigger_run_id = trigger_run_id
        self.conf = conf
        self.execution_date = execution_date
        self.logical_date = logical_date
        self.reset_dag_run = reset_dag_run
        self.wait_for_completion = wait_for_completion
        self.poke_interval = (poke_interval.total_seconds()
                              if isinstance(poke_interval, timedelta) else float(poke_interval))
        self.allowed_states = _states(allowed_states, DagRunState.SUCCESS)
        self.failed_states = _states(failed_states, DagRunState.FAILED)
        self.skip_when_already_exists = skip_when_already_exists
        self.deferrable = deferrable

    def _parsed_logical_date(self) -> datetime:
        value = self.logical_date if self.logical_date is not None else self.execution_date
        if value is None or value == "":
            return utcnow()
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        parsed = pendulum.parse(str(value))
        if not isinstance(parsed, datetime):
            raise SquallError(f"task {self.task_id}: not a date-time: {value!r}")
        return parsed.astimezone(UTC)

    def execute(self, context: Context) -> None:
        logical = self._parsed_logical_date()
        conf = dict(self.conf or {})
        try:
            json.dumps(conf)
        except (TypeError, ValueError) as exc:
            raise SquallError(f"task {self.task_id}: conf is not JSON-serialisable: {exc}") \
                from None
        run_id = self.trigger_run_id or DagRunType.MANUAL.generate_run_id(logical.isoformat())
        factory = session_factory_of(context, "TriggerDagRunOperator")
        run_id = self._create_run(factory, context, logical, run_id, conf)
        ti = context["ti"]
        ti.xcom_push(key=XCOM_EXECUTION_DATE_ISO, value=logical.isoformat())
        ti.xcom_push(key=XCOM_RUN_ID, value=run_id)
        if not self.wait_for_completion:
            return
        if self.deferrable:
            self.defer(
                trigger=DagStateTrigger(dag_id=self.trigger_dag_id,
                                        states=self.allowed_states + self.failed_states,
                                        execution_dates=[self._run_logical_date(
                                            factory, run_id, logical)],
                                        poll_interval=self.poke_interval),
                method_name="execute_complete")
        self._wait(factory, run_id)

    def _run_logical_date(self, factory: Any, run_id: str, default: datetime) -> datetime:
        """The logical date of the run ``run_id`` of the triggered DAG (``default`` when it
        cannot be read)."""
        with session_scope(factory) as session:
            found = session.scalar(select(DagRun.logical_date).where(
                DagRun.dag_id == self.trigger_dag_id, DagRun.run_id == run_id))
        if found is None:
            return default
        return found if found.tzinfo else found.replace(tzinfo=UTC)

    def execute_complete(self, context: Context, event: Any = None) -> None:
        """The deferred wait is over (Airflow 2.10's ``execute_complete``): ``event`` is the
        :class:`DagStateTrigger`'s ``serialize()``; the run at its logical date is read
        again, and the task fails when it is in ``failed_states``, succeeds when it is in
        ``allowed_states``, and fails otherwise."""
        try:
            logical = event[1]["execution_dates"][0]
        except (TypeError, KeyError, IndexError):
            raise SquallError(f"task {self.task_id}: the trigger's event {event!r} names no "
                              "logical date") from None
        if isinstance(logical, str):
            logical = pendulum.parse(logical)
        factory = session_factory_of(context, "TriggerDagRunOperator")
        with session_scope(factory) as session:
            state = session.scalar(select(DagRun.state).where(
                DagRun.dag_id == self.trigger_dag_id, DagRun.logical_date == logical))
        if state is None:
            raise SquallError(f"No DAG run found for DAG {self.trigger_dag_id} and logical "
                              f"date {self.logical_date}")
        if state in self.failed_states:
            raise SquallError(f"{self.trigger_dag_id} failed with failed state {state}")
        if state in self.allowed_states:
            log.info("%s finished with allowed state %s", self.trigger_dag_id, state)
            return
        raise SquallError(f"{self.trigger_dag_id} return {state} which is not in "
                          f"{self.failed_states} or {self.allowed_states}")

    def _create_run(self, factory: Any, context: Context, logical: datetime, run_id: str,
                    conf: dict[str, Any]) -> str:
        trigger = _TRIGGER.get("trigger")
        if trigger is None:
            raise SquallError(
                "TriggerDagRunOperator: this process cannot create DAG runs (it runs in a "
                "Squall worker's task process or under squall dags test / tasks test)")
        with session_scope(factory) as session:
            try:
                return trigger(session, dag_id=self.trigger_dag_id, run_id=run_id,
                               logical_date=logical, conf=conf,
                               default_queue=self._default_queue(context),
                               reset_dag_run=self.reset_dag_run,
                               triggered_by=f"{self.dag_id}.{self.task_id}")
            except DagRunAlreadyExists as exc:
                if self.skip_when_already_exists:
                    raise TaskSkipped(f"{exc}; skipping (skip_when_already_exists)") from None
                raise

    def _default_queue(self, context: Context) -> str:
        conf = context.get("conf")
        getter = getattr(conf, "get", None)
        if getter is None:
            return "default"
        try:
            return str(getter("celery", "default_queue") or "default")
        except SquallError:
            return "default"

    def _wait(self, factory: Any, run_id: str) -> None:
        while True:
            log.info("Waiting for DAG %s run %s to reach one of %s ...", self.trigger_dag_id,
                     run_id, ", ".join(self.allowed_states))
            self.clock.sleep(self.poke_interval)
            with session_scope(factory) as session:
                state = session.scalar(select(DagRun.state).where(
                    DagRun.dag_id == self.trigger_dag_id, DagRun.run_id == run_id))
            if state is None:
                raise SquallError(f"DAG {self.trigger_dag_id} run {run_id} is gone")
            if state in self.failed_states:
                raise SquallError(f"{self.trigger_dag_id} failed with failed states {state}")
            if state in self.allowed_states:
                log.info("%s finished with allowed state %s", self.trigger_dag_id, state)
                return
