"""Marking task instances by hand, with their relatives: what ``squall tasks set-state`` does
(and what the REST API will call), shaped like Airflow 2's ``mark_tasks.set_state``.

* :func:`select_marks` picks the task instances: the task, with ``upstream`` /
  ``downstream`` its upstream / downstream tasks (transitively, from the DAG as serialized),
  in the run, and with ``past`` / ``future`` the same tasks in the DAG's runs with an
  earlier / later logical date. Those already in the new state are left out, as in
  Airflow. (Airflow's ``past`` / ``future`` of a periodic DAG only take the runs on the
  schedule; here they take every run of the DAG, manual ones included.)
* :func:`apply_marks` changes each by compare-and-set from the state and try it was read
  in, the rows of their runs locked first (:func:`squall.common.models.lock_runs`); one
  that changed meanwhile is reported and left alone. A running try's supervisor
  sees its row change at its next heartbeat and kills the task process.
* A finished run (success / failed) of which a task instance changed is set back to
  running (``start_date`` now, ``end_date`` and ``last_scheduling_decision`` cleared), as
  Airflow's ``set_dag_run_state_to_running`` does, so that the scheduler decides it again
  with its usual rules (ADR 15): a failed run whose failed leaf is marked success succeeds
  once every leaf is done, and the DAG's run callback is requested by the scheduler as for
  any run that finishes. A cleared ``last_scheduling_decision`` makes every scheduler decide the
  run at its next loop (:class:`squall.scheduler.dag_runs.RunDecisionMemo`).
* Marked success or skipped, the failed and upstream_failed task instances downstream of
  the task (in the same runs) are cleared so that they run again, as Airflow's
  ``DAG.set_task_instance_state`` does after ``set_state``
  (:func:`squall.runs.clear.clear_task_instances`); those just marked are not
  (Airflow clears them too, and also when marking failed, which only makes the scheduler
  mark them upstream_failed again).

Nothing here commits: the caller owns the transaction; a mark that changed something
wakes the schedulers (:func:`squall.common.wakeup.notify_scheduler`) when it commits, so
no caller has to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from squall.common.errors import DagRunNotFound, TaskNotFound
from squall.common.models import (
    DagRun,
    TaskInstance,
    TaskInstanceKey,
    clip_reason,
    compare_and_set_state,
    lock_runs,
)
from squall.common.state import (
    CLEARS_FAILED_DOWNSTREAM,
    DAGRUN_FINISHED_STATES,
    FAILED_LIKE_STATES,
    DagRunState,
    TaskInstanceState,
)
from squall.common.wakeup import notify_scheduler
from squall.execution.deferral import NO_RESUME, deferred_trigger_id, delete_triggers
from squall.runs.clear import ClearResult, clear_task_instances
from squall.runs.dag_shape import DagLike, downstream_map, topological_order
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class MarkTarget:
    """One task instance to mark, as it was read."""

    key: TaskInstanceKey
    state: TaskInstanceState
    try_number: int
    logical_date: datetime
    started: bool  # it has a start_date


@dataclass
class MarkSelection:
    """What :func:`select_marks` found."""

    state: TaskInstanceState
    #: to change, by logical date then the DAG's topological order
    targets: list[MarkTarget] = field(default_factory=list)
    #: how many selected task instances are already in ``state``
    already: int = 0
    #: failed / upstream_failed task instances downstream of the task, to clear (rows as
    #: read; see the module docstring)
    to_clear: list[TaskInstance] = field(default_factory=list)


@dataclass
class RunReopened:
    """A finished run set back to running by :func:`apply_marks`."""

    dag_id: str
    run_id: str
    was: DagRunState


@dataclass
class MarkResult:
    """What :func:`apply_marks` did."""

    changed: list[MarkTarget] = field(default_factory=list)
    #: changed meanwhile (not in the state / try they were read in): left alone
    lost: list[MarkTarget] = field(default_factory=list)
    reopened: list[RunReopened] = field(default_factory=list)
    #: what clearing :attr:`MarkSelection.to_clear` did
    cleared: ClearResult = field(default_factory=ClearResult)


def relatives(dag: DagLike, task_id: str, *, upstream: bool, downstream: bool) -> set[str]:
    """``task_id`` and, as asked, its upstream and downstream tasks, transitively."""
    tasks = dag.task_dict
    if task_id not in tasks:
        raise TaskNotFound(f"DAG {dag.dag_id} has no task {task_id!r}")
    found = {task_id}
    if upstream:
        _walk(task_id, lambda t: tasks[t].upstream_task_ids if t in tasks else set(), found)
    if downstream:
        down = downstream_map(tasks)
        _walk(task_id, lambda t: down.get(t, set()), found)
    return found


def _walk(start: str, step: Callable[[str], Iterable[str]], found: set[str]) -> None:
    todo = [start]
    while todo:
        for nxt in step(todo.pop()):
            if nxt not in found:
                found.add(nxt)
                todo.append(nxt)


def select_marks(session: Session, dag: DagLike, *, task_id: str, run_id: str,
                 state: TaskInstanceState, upstream: bool = False, downstream: bool = False,
                 past: bool = False, future: bool = False,
                 map_indexes: Collection[int] | None = None) -> MarkSelection:
    """The task instances that marking ``task_id`` of ``run_id`` ``state`` (with the
    relatives asked for) would change. ``map_indexes``: only these instances of a mapped
    ``task_id`` (its relatives: all their instances, as Airflow's
    ``DAG.set_task_instance_state(map_indexes=...)``); None: every instance."""
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id,
                                              DagRun.run_id == run_id))
    if run is None:
        raise DagRunNotFound(f"DAG {dag.dag_id} has no run {run_id!r}")
    task_ids = relatives(dag, task_id, upstream=upstream, downstream=downstream)
    runs = select(DagRun.run_id, DagRun.logical_date).where(DagRun.dag_id == dag.dag_id)
    if not past:
        runs = runs.where(DagRun.logical_date >= run.logical_date)
    if not future:
        runs = runs.where(DagRun.logical_date <= run.logical_date)
    dates: dict[str, datetime] = {r: d for r, d in session.execute(runs)}
    if not past and not future:
        dates = {run.run_id: run.logical_date}
    order = {t: i for i, t in enumerate(topological_order(dag.task_dict,
                                                          downstream_map(dag.task_dict)))}
    selection = MarkSelection(state=state)
    rows = session.execute(
        select(TaskInstance.task_id, TaskInstance.run_id, TaskInstance.map_index,
               TaskInstance.state, TaskInstance.try_number, TaskInstance.start_date)
        .where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id.in_(sorted(dates)),
               TaskInstance.task_id.in_(sorted(task_ids)))
    ).all()
    for tid, rid, index, current, try_number, start in rows:
        if map_indexes is not None and tid == task_id and index not in map_indexes:
            continue
        if current == state.value:
            selection.already += 1
            continue
        selection.targets.append(MarkTarget(
            key=TaskInstanceKey(dag.dag_id, tid, rid, index), state=TaskInstanceState(current),
            try_number=try_number, logical_date=dates[rid], started=start is not None))
    selection.targets.sort(key=lambda t: (t.logical_date, order.get(t.key.task_id, -1),
                                          t.key.task_id, t.key.map_index))
    if state in CLEARS_FAILED_DOWNSTREAM:
        marked = {t.key for t in selection.targets}
        below = relatives(dag, task_id, upstream=False, downstream=True) - {task_id}
        selection.to_clear = [
            ti for ti in session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id.in_(sorted(dates)),
                TaskInstance.task_id.in_(sorted(below)),
                TaskInstance.state.in_(sorted(s.value for s in FAILED_LIKE_STATES))))
            if ti.key not in marked]
        selection.to_clear.sort(key=lambda ti: (dates[ti.run_id], order.get(ti.task_id, -1),
                                                ti.task_id, ti.map_index))
    return selection


def apply_marks(session: Session, dag: DAG, selection: MarkSelection, *, now: datetime,
                reason: str) -> MarkResult:
    """Change the selected task instances by compare-and-set, set the finished runs of
    those that changed back to running, and clear the failed ones downstream. The
    schedulers are woken when the transaction commits (the clear wakes them itself)."""
    new = selection.state
    result = MarkResult()
    why = clip_reason(reason)
    lock_runs(session, [(t.key.dag_id, t.key.run_id) for t in selection.targets]
              + [(ti.dag_id, ti.run_id) for ti in selection.to_clear])
    for target in selection.targets:
        values: dict[str, Any] = {"end_date": now, "state_reason": why, **NO_RESUME}
        if not target.started:
            values["start_date"] = now
        trigger_id = deferred_trigger_id(session, target.key, target.state)
        if compare_and_set_state(session, target.key, expected=target.state,
                                 try_number=target.try_number, new_state=new, **values):
            delete_triggers(session, [trigger_id])
            log.info("TaskInstance %s: %s -> %s (%s)", target.key, target.state.value,
                     new.value, why)
            result.changed.append(target)
        else:
            log.info("TaskInstance %s: changed meanwhile; not set to %s", target.key,
                     new.value)
            result.lost.append(target)
    result.reopened = _reopen_runs(session, {(t.key.dag_id, t.key.run_id)
                                             for t in result.changed}, now)
    if result.changed:
        notify_scheduler(session, f"{dag.dag_id} marked {new.value}")
    if selection.to_clear:
        result.cleared = clear_task_instances(
            session, selection.to_clear, dag, now,
            reason=f"cleared: an upstream task was marked {new.value}")
    return result


def _reopen_runs(session: Session, runs: set[tuple[str, str]],
                 now: datetime) -> list[RunReopened]:
    """Set the finished ones of ``runs`` back to running, by compare-and-set on their state
    (a run that changed meanwhile is being decided by a scheduler already)."""
    reopened: list[RunReopened] = []
    finished = [s.value for s in DAGRUN_FINISHED_STATES]
    for dag_id, run_id in sorted(runs):
        was = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id,
                                                        DagRun.run_id == run_id))
        if was not in finished:
            continue
        moved = session.execute(
            update(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.run_id == run_id, DagRun.state == was)
            .values(state=DagRunState.RUNNING.value, start_date=now, end_date=None,
                    last_scheduling_decision=None)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            log.info("DagRun %s %s: %s -> running (a task instance was marked; the "
                     "scheduler decides it again)", dag_id, run_id, was)
            reopened.append(RunReopened(dag_id, run_id, DagRunState(was)))
    return reopened

