"""Setting a whole run's state by hand: the REST API's ``PATCH .../dagRuns/{run_id}`` and a
backfill's ``cancel --end-running`` (which marks its unfinished runs failed). One rule,
Airflow 2's ``set_dag_run_state_to_*`` (``airflow/api/common/mark_tasks.py``):

* ``success``: every task instance of the run that is not success (nor removed) is set to
  success, then the run;
* ``failed``: the running and up_for_reschedule task instances (the tries under way) are
  set to failed, the other unfinished ones (none, scheduled, queued, up_for_retry, and
  restarting: a cleared try being stopped) to skipped, then the run;
* ``queued``: only the run, with its start and end cleared (so ``dagrun_timeout`` counts
  afresh); the scheduler starts it and decides it with its usual rules.

The run's row is locked first (:func:`squall.common.models.lock_runs`, as the scheduler
does: changing task instances before the run's row deadlocks with a scheduler deciding the
run), then each task instance is changed by compare-and-set from the state and try it was
read in (one that moved on meanwhile is left as it is and logged); a running try's
supervisor sees its row change at its next heartbeat and kills the task process. The run
itself changes by compare-and-set on the state it was read in under the lock. The
schedulers are woken when the transaction commits (:func:`notify_scheduler`); nothing here
commits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from squall.common.models import (
    DagRun,
    TaskInstance,
    TaskInstanceKey,
    clip_reason,
    compare_and_set_state,
    lock_runs,
)
from squall.common.state import (
    MARK_RUN_FAILED_FAILS,
    MARK_RUN_FAILED_SKIPS,
    DagRunState,
    TaskInstanceState,
)
from squall.common.wakeup import notify_scheduler
from squall.execution.deferral import NO_RESUME, deferred_trigger_id, delete_triggers

log = logging.getLogger(__name__)

TI = TaskInstanceState


def new_ti_state(current: TaskInstanceState,
                 run_state: DagRunState) -> TaskInstanceState | None:
    """What a task instance in ``current`` becomes when its run is marked ``run_state``
    (None: it is left as it is)."""
    if run_state == DagRunState.SUCCESS:
        return None if current in (TI.SUCCESS, TI.REMOVED) else TI.SUCCESS
    if run_state == DagRunState.FAILED:
        if current in MARK_RUN_FAILED_FAILS:
            return TI.FAILED
        return TI.SKIPPED if current in MARK_RUN_FAILED_SKIPS else None
    return None


def mark_run(session: Session, dag_id: str, run_id: str, state: DagRunState, *,
             now: datetime, reason: str,
             only_from: Collection[DagRunState] | None = None) -> int | None:
    """Set the run to ``state`` and its task instances as the module docstring says.

    With ``only_from``, a run found (under its lock) in another state is left alone. Returns
    how many task instances changed, or None when the run was left alone (gone, not in
    ``only_from``, or changed meanwhile)."""
    lock_runs(session, [(dag_id, run_id)])
    in_run = (DagRun.dag_id == dag_id) & (DagRun.run_id == run_id)
    found = session.execute(select(DagRun.state, DagRun.start_date).where(in_run)).first()
    if found is None:
        return None
    was, started_at = found
    if only_from is not None and was not in {s.value for s in only_from}:
        return None
    why = clip_reason(reason)
    changed = 0
    rows = session.execute(select(TaskInstance.task_id, TaskInstance.map_index,
                                  TaskInstance.state, TaskInstance.try_number,
                                  TaskInstance.start_date)
                           .where(TaskInstance.dag_id == dag_id,
                                  TaskInstance.run_id == run_id)).all()
    for task_id, map_index, current, try_number, started in rows:
        new = new_ti_state(TI(current), state)
        if new is None:
            continue
        key = TaskInstanceKey(dag_id, task_id, run_id, map_index)
        values: dict[str, Any] = {"end_date": now, "state_reason": why, **NO_RESUME}
        if started is None:
            values["start_date"] = now
        trigger_id = deferred_trigger_id(session, key, TI(current))
        if compare_and_set_state(session, key, expected=TI(current),
                                 try_number=try_number, new_state=new, **values):
            delete_triggers(session, [trigger_id])
            log.info("TaskInstance %s: %s -> %s (%s)", key, current, new.value, why)
            changed += 1
        else:
            log.info("TaskInstance %s: changed meanwhile; not set to %s", key, new.value)
    run_values: dict[str, Any] = {"state": state.value, "last_scheduling_decision": None,
                                  "updated_at": now}
    if state == DagRunState.QUEUED:
        run_values.update(queued_at=now, start_date=None, end_date=None)
    else:
        run_values.update(start_date=started_at or now, end_date=now)
    moved = session.execute(update(DagRun).where(in_run, DagRun.state == was)
                            .values(**run_values)
                            .execution_options(synchronize_session=False))
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("DagRun %s %s: changed meanwhile; not set to %s", dag_id, run_id,
                    state.value)
        return None
    notify_scheduler(session, f"{dag_id} run {state.value}")
    log.info("DagRun %s %s: %s -> %s (%s; %d task instances changed)", dag_id, run_id, was,
             state.value, why, changed)
    return changed

