"""Triggering a manual run, one home for every way of asking for one: ``squall dags
trigger``, ``POST /api/v1/dags/{dag_id}/dagRuns``, the web UI's trigger button and
``TriggerDagRunOperator`` (:func:`trigger_dag_run`, which the processes that run tasks
install with :func:`squall.sdk.operators.trigger_dagrun.install_dag_run_trigger`).

:func:`trigger_run` checks what every caller must: the run id, the logical date and the
conf; the DAG is known, active and parsed into ``serialized_dag``; its params updated with
the conf validate against their schemas (as Airflow's ``DAG.create_dagrun``: the error
names the param); its file has no import
errors (Airflow 2's REST API refuses those; here every caller does). A run with that run id
or logical date is refused, or with ``reset_existing`` its task instances are cleared to
run again. It wakes the scheduler in the caller's transaction; nothing here commits.
Every refusal is a :class:`~squall.common.errors.TriggerError` whose ``kind`` each caller
turns into its own answer (an HTTP problem, a CLI error, an operator's exception).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from squall.common.errors import (
    DagNotFound,
    DagRunAlreadyExists,
    ParamValidationError,
    TriggerError,
)
from squall.common.models import DagModel, DagRun, TaskInstance, utcnow
from squall.common.state import DagRunState, DagRunType
from squall.common.wakeup import notify_scheduler
from squall.dag_processing.sync import load_serialized_dags
from squall.runs.clear import clear_task_instances
from squall.runs.run_creation import create_dag_run

log = logging.getLogger(__name__)

__all__ = ["Triggered", "trigger_dag_run", "trigger_run"]


@dataclass(frozen=True)
class Triggered:
    """A triggered run: the run, whether its DAG is paused (it starts once unpaused), and
    whether it is an existing run cleared to run again (``reset_existing``)."""

    run: DagRun
    paused: bool
    reset: bool = False


def _check_input(run_id: str | None, logical_date: datetime | None,
                 conf: Mapping[str, Any] | None) -> None:
    if run_id is not None and not run_id.strip():
        raise TriggerError("run_id must not be empty", TriggerError.INVALID)
    if logical_date is not None and logical_date.tzinfo is None:
        raise TriggerError(f"logical_date must be timezone-aware, got {logical_date!r}",
                           TriggerError.INVALID)
    if conf is not None and not isinstance(conf, Mapping):
        raise TriggerError("conf must be a JSON object", TriggerError.INVALID)


def trigger_run(session: Session, dag_id: str, *, triggered_by: str, default_queue: str,
                run_id: str | None = None, logical_date: datetime | None = None,
                conf: Mapping[str, Any] | None = None, reset_existing: bool = False,
                now: datetime | None = None) -> Triggered:
    """Create a QUEUED manual run of ``dag_id`` (at ``logical_date``, default now) from the
    DAG as last parsed into the database, and wake the scheduler; see the module docstring
    for what is refused. ``triggered_by`` is who asked, for the log."""
    _check_input(run_id, logical_date, conf)
    row = session.get(DagModel, dag_id)
    if row is None:
        raise TriggerError(f"DAG with dag_id: '{dag_id}' not found", TriggerError.NOT_FOUND)
    if row.has_import_errors:
        raise TriggerError(f"DAG with dag_id: '{dag_id}' has import errors; fix them first "
                           "(see the import errors)", TriggerError.INVALID)
    dag = load_serialized_dags(session, [dag_id], only_active=True).get(dag_id)
    if dag is None:
        raise TriggerError(f"DAG with dag_id: '{dag_id}' has no usable serialized form or "
                           "is not active", TriggerError.NOT_FOUND)
    now = now or utcnow()
    logical = logical_date or now
    reset = False
    try:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=logical,
                             data_interval=None, run_id=run_id,
                             conf=dict(conf) if conf is not None else None,
                             state=DagRunState.QUEUED, external_trigger=True, now=now,
                             default_queue=default_queue)
        log.info("DagRun %s %s: triggered by %s", dag_id, run.run_id, triggered_by)
    except ParamValidationError as exc:
        raise TriggerError(str(exc), TriggerError.INVALID) from None
    except DagRunAlreadyExists as exc:
        if not reset_existing:
            raise TriggerError(str(exc), TriggerError.EXISTS) from None
        run = _reset(session, dag, run_id, logical, now, triggered_by)
        reset = True
    notify_scheduler(session, dag_id)
    return Triggered(run=run, paused=bool(row.is_paused), reset=reset)


def _reset(session: Session, dag: Any, run_id: str | None, logical_date: datetime,
           now: datetime, triggered_by: str) -> DagRun:
    """Clear the task instances of the run with ``run_id`` or ``logical_date`` to run
    again; the run."""
    match = DagRun.logical_date == logical_date
    if run_id is not None:
        match = or_(DagRun.run_id == run_id, match)
    existing = session.scalars(select(DagRun).where(DagRun.dag_id == dag.dag_id, match)
                               ).first()
    assert existing is not None
    tis = session.scalars(select(TaskInstance).where(
        TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == existing.run_id)).all()
    clear_task_instances(session, tis, dag, now,
                         reason=f"cleared by {triggered_by} (reset_dag_run)")
    log.info("DagRun %s %s: cleared to run again by %s (reset_dag_run)", dag.dag_id,
             existing.run_id, triggered_by)
    return existing


def trigger_dag_run(session: Session, *, dag_id: str, run_id: str, logical_date: datetime,
                    conf: dict[str, Any], default_queue: str, reset_dag_run: bool,
                    triggered_by: str) -> str:
    """``TriggerDagRunOperator``'s way in (a
    :class:`~squall.sdk.operators.trigger_dagrun.DagRunTrigger`): :func:`trigger_run`; the
    run id. Refusals come as the operator knows them: :class:`DagNotFound`,
    :class:`DagRunAlreadyExists` (unless ``reset_dag_run``), else the
    :class:`TriggerError`."""
    try:
        return trigger_run(session, dag_id, triggered_by=triggered_by,
                           default_queue=default_queue, run_id=run_id,
                           logical_date=logical_date, conf=conf,
                           reset_existing=reset_dag_run).run.run_id
    except TriggerError as exc:
        if exc.kind == TriggerError.NOT_FOUND:
            raise DagNotFound(
                f"DAG {dag_id!r} to trigger is not in the metadata database (it is there "
                "once a scheduler's DAG processor, `squall dags list` or `squall dags "
                f"trigger` has parsed its file): {exc}") from None
        if exc.kind == TriggerError.EXISTS:
            raise DagRunAlreadyExists(str(exc)) from None
        raise
