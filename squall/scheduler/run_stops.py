"""Two DAG arguments that stop work when a run goes wrong, decided with the run's state
(:func:`squall.scheduler.decisions.update_dag_run`):

* ``fail_stop`` (Airflow 2.7): once a task instance of the run has failed, the run's other
  unfinished task instances are stopped, as Airflow's ``_stop_remaining_tasks``
  (``airflow/models/taskinstance.py``): a running one is failed (its worker sees the change
  at its next heartbeat and kills it), every other one is skipped; teardown tasks are left
  to run. Airflow does this in the failing task's process; Squall at the scheduler's next
  look at the run, before trigger rules are applied, so the failed task's downstreams end
  skipped as in Airflow, not upstream_failed.
* ``max_consecutive_failed_dag_runs`` (Airflow 2.9): when a run fails because a task
  failed and the DAG's last N runs by logical date all failed, the DAG is paused, as
  Airflow's ``DagRun._check_last_n_dagruns_failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.models import DagRun, TaskInstance
from squall.common.state import (
    FAIL_STOP_FAIL_STATES,
    FAIL_STOP_SKIP_STATES,
    DagRunState,
    TaskInstanceState,
)
from squall.execution.deferral import NO_RESUME
from squall.runs.dag_shape import DagLike
from squall.runs.pausing import set_paused
from squall.runs.ti_updates import bulk_set

log = logging.getLogger(__name__)

TI = TaskInstanceState

_RUNNING = FAIL_STOP_FAIL_STATES
_NOT_STARTED = FAIL_STOP_SKIP_STATES


def stop_remaining_tasks(session: Session, dag: DagLike, dag_run: DagRun,
                         tis: Sequence[TaskInstance], now: datetime) -> dict[str, list[str]]:
    """With ``dag.fail_stop`` and a failed task instance in the run, fail the running and
    skip the other unfinished task instances (teardowns excepted); the task ids changed, by
    new state (nothing when the DAG has no fail_stop or nothing failed)."""
    if not getattr(dag, "fail_stop", False):
        return {}
    failed = sorted({ti.task_id for ti in tis if ti.state == TI.FAILED})
    if not failed:
        return {}
    tasks: dict[str, Any] = dict(dag.task_dict)
    reason = f"stopped by the DAG's fail_stop: {', '.join(failed)} failed"
    to_fail, to_skip = [], []
    for ti in tis:
        if getattr(tasks.get(ti.task_id), "is_teardown", False):
            log.info("DagRun %s %s: not stopping teardown task %s (fail_stop)",
                     dag_run.dag_id, dag_run.run_id, ti.task_id)
            continue
        if ti.state in _RUNNING:
            to_fail.append(ti)
        elif ti.state in _NOT_STARTED:
            to_skip.append(ti)
    changed: dict[str, list[str]] = {}
    for tis_, new_state, expected in ((to_fail, TI.FAILED, _RUNNING),
                                      (to_skip, TI.SKIPPED, _NOT_STARTED)):
        if not tis_:
            continue
        for ti in tis_:
            log.info("DagRun %s %s: %s task %s due to the DAG's fail_stop setting",
                     dag_run.dag_id, dag_run.run_id,
                     "failing" if new_state == TI.FAILED else "skipping", ti.task_id)
        bulk_set(session, tis_, expected={str(s) for s in expected}, values={
            "state": new_state.value, "end_date": now, "state_reason": reason,
            **NO_RESUME}, now=now)
        changed[new_state.value] = sorted(ti.task_id for ti in tis_)
    return changed


def pause_after_failed_runs(session: Session, dag: DagLike, dag_run: DagRun) -> str | None:
    """When ``dag_run`` has just failed and the DAG's ``max_consecutive_failed_dag_runs``
    (N > 0) last runs by logical date all failed, pause the DAG; why, or None."""
    limit = int(getattr(dag, "max_consecutive_failed_dag_runs", 0) or 0)
    if limit <= 0:
        return None
    session.flush()  # this run's own new state
    states = list(session.scalars(
        select(DagRun.state).where(DagRun.dag_id == dag_run.dag_id)
        .order_by(DagRun.logical_date.desc()).limit(limit)))
    if len(states) < limit or any(s != DagRunState.FAILED.value for s in states):
        return None
    why = (f"DAG paused: its last {limit} runs failed "
           f"(max_consecutive_failed_dag_runs={limit})")
    log.warning("Pausing DAG %s because last %d DAG runs failed "
                "(max_consecutive_failed_dag_runs)", dag_run.dag_id, limit)
    set_paused(session, dag_run.dag_id, True, by="scheduler: max_consecutive_failed_dag_runs")
    return why
