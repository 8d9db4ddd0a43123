"""Clearing task instances: what ``squall tasks clear`` (and later backfill) writes.

Airflow 2's ``clear_task_instances``, by compare-and-set on each row as it was read (a row
that moved on meanwhile is reported and left alone), with the rows of the runs locked first
(:func:`squall.common.models.lock_runs`: a scheduler deciding one of the runs is waited for,
so it cannot finish the run from states read before the clear):

* a RUNNING try is stopped: it becomes RESTARTING; its supervisor kills every process of
  the try at its next heartbeat and moves the row to ``none``
  (:func:`squall.execution.restart.end_restart`; the watchdog does it when the supervisor
  is gone), and the scheduler schedules the next try;
* any other task instance (finished, waiting for a retry or a reschedule, scheduled or
  queued) goes back to ``none``; a queued message of its old try is refused by the
  worker's compare-and-set;
* either way ``max_tries = try_number + retries`` (the task's, from the serialized DAG), so
  its retries are granted again; the try number is kept and counts on at scheduling (ADR 2);
* the ``task_reschedule`` rows of the cleared task instances are deleted;
* their DAG runs become active again: a finished run goes back to QUEUED (start and end
  cleared, so ``dagrun_timeout`` counts afresh), which the scheduler starts and decides.

:func:`select_task_instances` is the selection of the ``clear`` command.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from squall.common.models import (
    DagRun,
    TaskInstance,
    TaskInstanceKey,
    TaskReschedule,
    compare_and_set_state,
    lock_runs,
)
from squall.common.state import (
    DAGRUN_FINISHED_STATES,
    DagRunState,
    TaskInstanceState,
)
from squall.common.wakeup import notify_scheduler
from squall.dag_processing.sync import load_serialized_dags
from squall.execution.deferral import NO_RESUME, delete_triggers
from squall.runs import external_clear
from squall.runs.dag_shape import (
    downstream_map,
    flat_relatives,
    relevant_setups_and_teardowns,
    upstreams_follow_setups,
)
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)

TI = TaskInstanceState

REASON_CLEARED = "cleared"
REASON_CLEARED_RUNNING = "cleared while running: the try is being stopped"


@dataclass(frozen=True)
class Cleared:
    """One task instance a clear changed: its old and new state."""

    key: TaskInstanceKey
    try_number: int
    old_state: TaskInstanceState
    new_state: TaskInstanceState


@dataclass
class ClearResult:
    cleared: list[Cleared] = field(default_factory=list)
    #: task instances that moved on between the read and the compare-and-set (left alone)
    changed: list[TaskInstanceKey] = field(default_factory=list)
    #: the ``(dag_id, run_id)`` of the finished runs put back to QUEUED
    reactivated_runs: list[tuple[str, str]] = field(default_factory=list)


def cleared_state(old: TaskInstanceState) -> TaskInstanceState | None:
    """What a clear makes of a task instance in ``old`` (what the UI's preview shows): a
    running try is stopped (RESTARTING), a RESTARTING one is already being cleared (None:
    left as it is), any other goes back to ``none``."""
    if old == TI.RESTARTING:
        return None
    return TI.RESTARTING if old == TI.RUNNING else TI.NONE


def clear_task_instances(session: Session, tis: Iterable[TaskInstance], dag: DAG | None,
                         now: datetime, *, reason: str = REASON_CLEARED) -> ClearResult:
    """Clear ``tis`` (rows as read, of ``dag``; see the module docstring) in the caller's
    session (the caller commits). Without ``dag`` (not serialized) a task's retries count
    as 0. RESTARTING task instances are already being cleared and are left as they are."""
    result = ClearResult()
    tis = list(tis)
    lock_runs(session, ((ti.dag_id, ti.run_id) for ti in tis))
    runs: set[tuple[str, str]] = set()
    # task instances of other DAGs (reached through ExternalTaskMarker) count their own
    # DAG's retries
    others = {ti.dag_id for ti in tis} - {dag.dag_id if dag is not None else ""}
    dags = load_serialized_dags(session, others) if others else {}
    if dag is not None:
        dags[dag.dag_id] = dag
    for ti in tis:
        old = TI(ti.state)
        new_state = cleared_state(old)
        if new_state is None:
            continue
        ti_dag = dags.get(ti.dag_id)
        task = ti_dag.task_dict.get(ti.task_id) if ti_dag is not None else None
        retries = int(task.retries) if task is not None else 0
        max_tries = ti.try_number + retries
        # the next try starts in execute, and a deferred one's trigger goes (Airflow's
        # clear_next_method_args, and Trigger.clean_unused)
        new = new_state
        if new == TI.RESTARTING:
            values: dict[str, Any] = {"state_reason": REASON_CLEARED_RUNNING, **NO_RESUME}
        else:
            values = {"state_reason": reason, "start_date": None, "end_date": None,
                      "duration": None, "next_retry_at": None, "queued_dttm": None,
                      "external_executor_id": None, **NO_RESUME}
        if not compare_and_set_state(session, ti.key, expected=old, try_number=ti.try_number,
                                     new_state=new, expected_job_id=ti.job_id if (
                                         old == TI.RUNNING and ti.job_id is not None) else None,
                                     max_tries=max_tries, **values):
            log.warning("TaskInstance %s: try %d: changed while being cleared; left alone",
                        ti.key, ti.try_number)
            result.changed.append(ti.key)
            continue
        log.info("TaskInstance %s: try %d: cleared, %s -> %s (max_tries %d)", ti.key,
                 ti.try_number, old.value, new.value, max_tries)
        result.cleared.append(Cleared(ti.key, ti.try_number, old, new))
        delete_triggers(session, [ti.trigger_id])
        session.execute(delete(TaskReschedule).where(
            TaskReschedule.dag_id == ti.dag_id, TaskReschedule.task_id == ti.task_id,
            TaskReschedule.run_id == ti.run_id,
            TaskReschedule.map_index == ti.map_index).execution_options(synchronize_session=False))
        runs.add((ti.dag_id, ti.run_id))
    for dag_id, run_id in sorted(runs):
        changed = session.execute(
            update(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id,
                                 DagRun.state.in_([s.value for s in DAGRUN_FINISHED_STATES]))
            .values(state=DagRunState.QUEUED.value, start_date=None, end_date=None,
                    queued_at=now, last_scheduling_decision=None, updated_at=now)
            .execution_options(synchronize_session=False))
        if changed.rowcount:  # type: ignore[attr-defined]
            log.info("DagRun %s %s: cleared tasks; finished -> queued", dag_id, run_id)
            result.reactivated_runs.append((dag_id, run_id))
    if result.cleared:
        notify_scheduler(session, "clear")
    return result


def select_task_instances(session: Session, dag: DAG, *, task_regex: str | None = None,
                          upstream: bool = False, downstream: bool = False,
                          start: datetime | None = None, end: datetime | None = None,
                          run_id: str | None = None,
                          states: Sequence[TaskInstanceState] | None = None,
                          map_indexes: Mapping[str, Collection[int]] | None = None,
                          ) -> list[TaskInstance]:
    """The task instances of ``dag`` to clear: of the tasks whose id matches ``task_regex``
    (``re.search``; all without one), with their upstream / downstream tasks; of the runs
    with a logical date in ``[start, end]`` or of ``run_id``; in ``states`` (any without).
    ``map_indexes``: for a task id in it, only those instances of the (mapped) task (as
    Airflow's ``DAG.clear(task_ids=[(task_id, map_index), ...])``); every other selected
    task: all of its instances. :func:`follow_markers` adds those of other DAGs that the
    ExternalTaskMarkers among them reach."""
    task_ids = matching_task_ids(dag, task_regex, upstream=upstream, downstream=downstream)
    if not task_ids:
        return []
    stmt = (select(TaskInstance)
            .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
                  & (DagRun.run_id == TaskInstance.run_id))
            .where(TaskInstance.dag_id == dag.dag_id, TaskInstance.task_id.in_(task_ids)))
    if run_id is not None:
        stmt = stmt.where(DagRun.run_id == run_id)
    if start is not None:
        stmt = stmt.where(DagRun.logical_date >= start)
    if end is not None:
        stmt = stmt.where(DagRun.logical_date <= end)
    if states is not None:
        stmt = stmt.where(TaskInstance.state.in_([s.value for s in states]))
    tis = list(session.scalars(
        stmt.order_by(DagRun.logical_date, TaskInstance.task_id, TaskInstance.map_index)
        .execution_options(populate_existing=True)).all())
    if map_indexes:
        tis = [ti for ti in tis if ti.task_id not in map_indexes
               or ti.map_index in map_indexes[ti.task_id]]
    return tis


def follow_markers(session: Session, dag: DAG, tis: list[TaskInstance],
                   states: Sequence[TaskInstanceState] | None = None) -> list[TaskInstance]:
    """``tis`` and the task instances of other DAGs that the ExternalTaskMarkers among them
    reach (:mod:`squall.runs.external_clear`; raises its ``ClearError``)."""
    return external_clear.follow_markers(session, dag, tis, states=states,
                                         select=select_task_instances)


def matching_task_ids(dag: DAG, task_regex: str | None, *, upstream: bool = False,
                      downstream: bool = False) -> list[str]:
    """The ids of ``dag``'s tasks matching ``task_regex`` (all without one), with every
    task upstream / downstream of them, sorted.

    With setup tasks in the DAG, Airflow 2.7+'s ``DAG.partial_subset`` rules add more: a
    matched work task brings its relevant setups and their teardowns
    (:func:`~squall.runs.dag_shape.relevant_setups_and_teardowns`), and so does each work
    task only brought in as a downstream; with ``upstream`` every upstream setup brings its
    teardowns; a matched setup brings its teardowns.
    """
    pattern = re.compile(task_regex) if task_regex else None
    tasks = dag.task_dict
    matched = {tid for tid in tasks if pattern is None or pattern.search(tid)}
    selected = set(matched)
    if not any(t.is_setup for t in tasks.values()):
        for tid in matched:
            if upstream:
                selected |= tasks[tid].get_flat_relative_ids(upstream=True)
            if downstream:
                selected |= tasks[tid].get_flat_relative_ids(upstream=False)
        return sorted(selected)
    below = downstream_map(tasks)
    for tid in matched:
        task = tasks[tid]
        if downstream:
            for rel in flat_relatives(tasks, below, tid, upstream=False):
                selected.add(rel)
                if rel not in matched and not (tasks[rel].is_setup or tasks[rel].is_teardown):
                    selected |= relevant_setups_and_teardowns(tasks, below, rel)
        if upstream:
            selected |= upstreams_follow_setups(tasks, below, tid)
        elif not (task.is_setup or task.is_teardown):
            selected |= relevant_setups_and_teardowns(tasks, below, tid)
        if task.is_setup and not downstream:
            selected |= {d for d in below[tid] if tasks[d].is_teardown}
    return sorted(selected)
