"""Runs created by a task: what ``TriggerDagRunOperator`` calls to create (or reset) a run
of another DAG, installed by the processes that run tasks (the worker's task processes,
``squall dags test`` / ``tasks test``) with
:func:`squall.sdk.operators.trigger_dagrun.install_dag_run_trigger`.

It lives here, not in the operator, because creating a run is the scheduler's business
(:mod:`squall.scheduler.run_creation`) and the authoring API sits below it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from squall.common.errors import DagNotFound, DagRunAlreadyExists
from squall.common.models import DagRun, TaskInstance, utcnow
from squall.common.state import DagRunState, DagRunType
from squall.common.wakeup import notify_scheduler
from squall.dag_processing.sync import load_serialized_dags
from squall.runs.clear import clear_task_instances
from squall.scheduler.run_creation import create_dag_run

log = logging.getLogger(__name__)

__all__ = ["trigger_dag_run"]


def trigger_dag_run(session: Session, *, dag_id: str, run_id: str, logical_date: datetime,
                    conf: dict[str, Any], default_queue: str, reset_dag_run: bool,
                    triggered_by: str) -> str:
    """Create a QUEUED manual run of ``dag_id`` (as ``squall dags trigger`` does) and wake
    the scheduler; the run id. When the DAG has a run with that run id or logical date,
    :class:`DagRunAlreadyExists`, unless ``reset_dag_run``: then that run's task instances
    are cleared to run again and its run id is returned."""
    dag = load_serialized_dags(session, [dag_id]).get(dag_id)
    if dag is None:
        raise DagNotFound(
            f"DAG {dag_id!r} to trigger is not in the metadata database (it is there once a "
            "scheduler's DAG processor, `squall dags list` or `squall dags trigger` has "
            "parsed its file)")
    try:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=logical_date, data_interval=None, run_id=run_id,
                             conf=conf, state=DagRunState.QUEUED, external_trigger=True,
                             default_queue=default_queue)
        created = run.run_id
        log.info("DagRun %s %s: triggered by %s", dag_id, created, triggered_by)
    except DagRunAlreadyExists:
        if not reset_dag_run:
            raise
        existing = session.scalars(select(DagRun).where(
            DagRun.dag_id == dag_id,
            or_(DagRun.run_id == run_id, DagRun.logical_date == logical_date))).first()
        assert existing is not None
        tis = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == existing.run_id)).all()
        clear_task_instances(session, tis, dag, utcnow(),
                             reason=f"cleared by {triggered_by} (reset_dag_run)")
        created = existing.run_id
        log.info("DagRun %s %s: cleared to run again by %s (reset_dag_run)", dag_id, created,
                 triggered_by)
    notify_scheduler(session, dag_id)
    return created
