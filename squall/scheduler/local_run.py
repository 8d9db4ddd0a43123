"""``squall dags test``: one whole DAG run in this process, no broker and no worker.

It goes through the same decisions as the cluster (``decisions.update_dag_run`` for
dependencies and trigger rules, ``schedule_tis`` for try numbers, the runner for each try and
its compare-and-sets), but runs the ready task instances one after another here, and waits
out retry delays and sensor reschedules instead of handing them to a scheduler. A task that
defers has its trigger run here, inline, until its first event (Airflow 2.10's ``dags test``,
``_run_inline_trigger``), and resumes as a fired trigger resumes it in a cluster.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pendulum
from sqlalchemy import delete, select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import SquallError
from squall.common.models import (
    DagModel,
    DagRun,
    TaskInstance,
    Trigger,
    compare_and_set_state,
    utcnow,
)
from squall.common.state import (
    DAGRUN_FINISHED_STATES,
    RETRY_WAIT_STATES,
    TRIGGER_FAIL_METHOD,
    TRIGGER_TIMEOUT_ERROR,
    DagRunState,
    DagRunType,
    TaskInstanceState,
)
from squall.execution.deferral import delete_triggers, resume_of
from squall.execution.runner import TrySpec, run_try, task_log_path
from squall.execution.try_hooks import local_hooks
from squall.runs.datasets import record_try_events
from squall.runs.run_creation import create_dag_run
from squall.runs.ti_updates import schedule_tis
from squall.runs.trigger import trigger_dag_run
from squall.scheduler.decisions import update_dag_run
from squall.sdk.dag import DAG
from squall.sdk.operators.trigger_dagrun import install_dag_run_trigger
from squall.sdk.triggers import serde
from squall.sdk.triggers.metadata import install_session_factory

log = logging.getLogger(__name__)

#: The longest single wait for a retry delay or a sensor reschedule.
MAX_WAIT_SECONDS = 3600.0
#: How often a run held back by ``depends_on_past`` looks again (only a change made
#: elsewhere, to the previous run, lets it go on).
PAST_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class TaskInstanceSummary:
    task_id: str
    state: str
    try_number: int
    start_date: datetime | None
    end_date: datetime | None
    state_reason: str | None
    map_index: int = -1


@dataclass
class LocalRunResult:
    dag_id: str
    run_id: str
    state: DagRunState
    reason: str | None
    task_instances: list[TaskInstanceSummary] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "state": self.state.value,
            "reason": self.reason,
            "task_instances": [
                {"task_id": t.task_id, "map_index": t.map_index, "state": t.state,
                 "try_number": t.try_number,
                 "start_date": t.start_date.isoformat() if t.start_date else None,
                 "end_date": t.end_date.isoformat() if t.end_date else None,
                 "reason": t.state_reason}
                for t in self.task_instances
            ],
        }


def ensure_dag_row(session: Any, dag: DAG) -> None:
    """A ``dag`` row must exist before runs of it; insert a minimal one if missing."""
    if session.get(DagModel, dag.dag_id) is None:
        session.add(DagModel(dag_id=dag.dag_id, fileloc=dag.fileloc, is_paused=False,
                             is_active=True, max_active_tasks=dag.max_active_tasks,
                             max_active_runs=dag.max_active_runs,
                             schedule=dag.timetable.summary, tags=dag.tags,
                             owners=dag.owner, description=dag.description))
        session.flush()


def run_dag_locally(
    dag: DAG,
    session_factory: SessionFactory,
    *,
    logical_date: datetime | None = None,
    conf: dict[str, Any] | None = None,
    run_id: str | None = None,
    log_folder: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LocalRunResult:
    """Run every task of one DAG run of ``dag`` to a final state and report the states."""
    install_dag_run_trigger(trigger_dag_run)  # TriggerDagRunOperator creates runs here
    install_session_factory(session_factory)  # the triggers run inline read the database
    logical = pendulum.instance(logical_date) if logical_date else pendulum.now("UTC")
    hostname = socket.gethostname()
    with session_scope(session_factory) as session:
        ensure_dag_row(session, dag)
        # `dags test` for a date that already has a run replaces that run, as Airflow does.
        session.execute(delete(DagRun).where(
            DagRun.dag_id == dag.dag_id,
            (DagRun.logical_date == logical) | (DagRun.run_id == (run_id or "")),
        ))
        session.flush()
        # Airflow 2.10's `dags test` (DAG.test -> _get_or_create_dagrun -> create_dagrun)
        # makes a manual run that is *not* externally triggered: LatestOnlyOperator skips
        # for a past date, and prev_ds / next_ds are the schedule's, as in a scheduled run
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=logical,
                             data_interval=None, run_id=run_id, conf=conf,
                             state=DagRunState.RUNNING, external_trigger=False)
        run_pk = run.id
    log.info("DagRun %s %s: started by dags test", dag.dag_id, run.run_id)

    reason: str | None = None
    past_waits: dict[str, str] = {}
    while True:
        with session_scope(session_factory) as session:
            run = session.get_one(DagRun, run_pk)
            update = update_dag_run(session, dag, run, now=utcnow())
            if update.finished_now or update.state in DAGRUN_FINISHED_STATES:
                reason = update.reason
                break
            schedule_tis(session, update.schedulable, now=utcnow())
        ran = _run_scheduled(dag, run, session_factory, hostname, log_folder)
        ran += _fire_deferred_inline(session_factory, run)
        if not ran:
            wait = _seconds_until_next_wake(session_factory, run)
            if wait is None and update.waiting_on_past:
                # as Airflow's `dags test` does: say why, and wait for the previous run
                if update.waiting_on_past != past_waits:
                    past_waits = dict(update.waiting_on_past)
                    for task_id, why in sorted(past_waits.items()):
                        log.warning("DagRun %s %s: %s %s", dag.dag_id, run.run_id, task_id,
                                    why)
                wait = PAST_POLL_SECONDS
            if wait is None:
                continue  # update_dag_run decides (it detects deadlocks)
            sleep(wait)

    _run_dag_callback(dag, run, session_factory, reason)
    return _summarise(dag, session_factory, run_pk, reason)


def _run_scheduled(dag: DAG, run: DagRun, session_factory: SessionFactory, hostname: str,
                   log_folder: Path | None) -> int:
    with session_scope(session_factory) as session:
        scheduled = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id,
                TaskInstance.state == TaskInstanceState.SCHEDULED.value,
            ).order_by(TaskInstance.priority_weight.desc(), TaskInstance.task_id,
                       TaskInstance.map_index)
        ).all()
    ran = 0
    hooks = replace(local_hooks(), dataset_events=record_try_events)
    for ti in scheduled:
        start = utcnow()
        with session_scope(session_factory) as session:
            won = compare_and_set_state(
                session, ti.key, expected=TaskInstanceState.SCHEDULED,
                try_number=ti.try_number, new_state=TaskInstanceState.RUNNING,
                start_date=start, end_date=None, hostname=hostname, pid=os.getpid(),
            )
        if not won:
            continue
        path = task_log_path(log_folder, ti.key, ti.try_number) if log_folder else None
        resume = resume_of(ti.next_method, ti.next_kwargs)
        run_try(TrySpec(dag.get_task(ti.task_id), run, try_number=ti.try_number,
                        max_tries=ti.max_tries,
                        start_date=(ti.start_date or start) if resume else start,
                        hostname=hostname, log_path=path, map_index=ti.map_index,
                        resume=resume), session_factory, hooks)
        ran += 1
    return ran


def _fire_deferred_inline(session_factory: SessionFactory, run: DagRun) -> int:
    """Run the trigger of each DEFERRED task instance of ``run`` here until its first event
    (or its ``trigger_timeout``), then move the task instance on as a triggerer does:
    SCHEDULED with the event in ``next_kwargs["event"]``, or with ``__fail__`` and the
    error; how many moved."""
    with session_scope(session_factory) as session:
        waiting = session.execute(
            select(TaskInstance, Trigger).join(Trigger, Trigger.id == TaskInstance.trigger_id)
            .where(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id,
                   TaskInstance.state == TaskInstanceState.DEFERRED.value)).all()
        session.expunge_all()
    moved = 0
    for ti, trigger in waiting:
        log.info("[DAG TEST] TaskInstance %s: running trigger %s inline", ti.key,
                 trigger.classpath)
        values: dict[str, Any]
        try:
            payload = _run_trigger(trigger, ti.trigger_timeout)
            values = {"next_kwargs": serde.to_json(
                {**(serde.from_json(ti.next_kwargs or {}) or {}), "event": payload})}
        except TimeoutError:
            values = {"next_method": TRIGGER_FAIL_METHOD,
                      "next_kwargs": {"error": TRIGGER_TIMEOUT_ERROR}}
        except Exception as exc:
            values = {"next_method": TRIGGER_FAIL_METHOD, "next_kwargs": {
                "error": f"Trigger {trigger.classpath} failed: {type(exc).__name__}: {exc}",
                "traceback": traceback.format_exception(exc)}}
        with session_scope(session_factory) as session:
            if compare_and_set_state(session, ti.key, expected=TaskInstanceState.DEFERRED,
                                     try_number=ti.try_number,
                                     new_state=TaskInstanceState.SCHEDULED, trigger_id=None,
                                     **values):
                delete_triggers(session, [trigger.id])
                moved += 1
    return moved


def _run_trigger(row: Trigger, timeout_at: datetime | None) -> Any:
    """The payload of the first event of the trigger ``row`` describes; TimeoutError past
    ``timeout_at``."""
    module_name, _, class_name = row.classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module_name), class_name)(
        **serde.loads(row.kwargs))

    async def first_event() -> Any:
        async for event in trigger.run():
            return event.payload
        return None

    async def main() -> Any:
        try:
            if timeout_at is None:
                return await first_event()
            seconds = max((timeout_at - utcnow()).total_seconds(), 0.0)
            return await asyncio.wait_for(first_event(), seconds)
        finally:
            await trigger.cleanup()

    return asyncio.run(main())


def _seconds_until_next_wake(session_factory: SessionFactory, run: DagRun) -> float | None:
    with session_scope(session_factory) as session:
        wake = session.scalars(
            select(TaskInstance.next_retry_at).where(
                TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id,
                TaskInstance.state.in_(sorted(s.value for s in RETRY_WAIT_STATES)),
                TaskInstance.next_retry_at.is_not(None),
            ).order_by(TaskInstance.next_retry_at).limit(1)
        ).first()
    if wake is None:
        return None
    seconds = (wake - utcnow()).total_seconds()
    # a little past the due time so the retry period has surely elapsed
    return min(max(seconds, 0.0) + 0.01, MAX_WAIT_SECONDS)


def _run_dag_callback(dag: DAG, run: DagRun, session_factory: SessionFactory,
                      reason: str | None) -> None:
    with session_scope(session_factory) as session:
        fresh = session.get_one(DagRun, run.id)
        state = fresh.state
    callback = (dag.on_success_callback if state == DagRunState.SUCCESS
                else dag.on_failure_callback)
    if callback is None:
        return
    try:
        callback({"dag": dag, "dag_run": fresh, "run_id": fresh.run_id,
                  "reason": reason or ("success" if state == DagRunState.SUCCESS else "failed")})
    except Exception:
        log.exception("DAG %s: %s callback raised", dag.dag_id, state)


def _summarise(dag: DAG, session_factory: SessionFactory, run_pk: int,
               reason: str | None) -> LocalRunResult:
    with session_scope(session_factory) as session:
        run = session.get_one(DagRun, run_pk)
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == run.dag_id,
                                       TaskInstance.run_id == run.run_id)
        ).all()
    order = {t.task_id: i for i, t in enumerate(dag.topological_sort())}
    tis = sorted(tis, key=lambda t: (order.get(t.task_id, len(order)), t.task_id,
                                     t.map_index))
    return LocalRunResult(
        dag_id=run.dag_id, run_id=run.run_id, state=DagRunState(run.state), reason=reason,
        task_instances=[TaskInstanceSummary(t.task_id, t.state, t.try_number, t.start_date,
                                            t.end_date, t.state_reason, t.map_index)
                        for t in tis],
    )


def run_task_locally(
    dag: DAG,
    task_id: str,
    session_factory: SessionFactory,
    *,
    logical_date: datetime | None = None,
    conf: dict[str, Any] | None = None,
    log_folder: Path | None = None,
    map_index: int = -1,
) -> TaskInstanceSummary:
    """``squall tasks test``: one try of one task, its dependencies not checked.

    A fresh manual run is made for the logical date (replacing one that exists, as
    ``dags test`` does), so templates, XCom and the task's own state all work as in a run.
    A mapped task runs the instance ``map_index`` (Airflow's ``--map-index``).
    """
    install_dag_run_trigger(trigger_dag_run)
    install_session_factory(session_factory)  # the triggers run inline read the database
    task = dag.get_task(task_id)
    if map_index >= 0 and getattr(task, "mapped_spec", None) is None:
        raise SquallError(f"task {task_id} is not mapped: it has no map index {map_index}")
    logical = pendulum.instance(logical_date) if logical_date else pendulum.now("UTC")
    hostname = socket.gethostname()
    with session_scope(session_factory) as session:
        ensure_dag_row(session, dag)
        session.execute(delete(DagRun).where(DagRun.dag_id == dag.dag_id,
                                             DagRun.logical_date == logical))
        session.flush()
        # not externally triggered, as Airflow's `tasks test` run (task_command._get_dag_run)
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=logical,
                             data_interval=None, conf=conf, state=DagRunState.RUNNING,
                             external_trigger=False)
        if map_index >= 0:  # the one instance of the mapped task is this index
            session.execute(update(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.task_id == task_id,
                TaskInstance.run_id == run.run_id, TaskInstance.map_index == -1,
            ).values(map_index=map_index).execution_options(synchronize_session=False))
        ti = session.get_one(TaskInstance, (dag.dag_id, task_id, run.run_id, map_index))
        schedule_tis(session, [ti], now=utcnow())
    while True:
        with session_scope(session_factory) as session:
            ti = session.get_one(TaskInstance, (dag.dag_id, task_id, run.run_id, map_index))
            resume = resume_of(ti.next_method, ti.next_kwargs)
            start = (ti.start_date or utcnow()) if resume else utcnow()
            compare_and_set_state(session, ti.key, expected=TaskInstanceState.SCHEDULED,
                                  try_number=ti.try_number, new_state=TaskInstanceState.RUNNING,
                                  start_date=start, hostname=hostname, pid=os.getpid())
        path = task_log_path(log_folder, ti.key, ti.try_number) if log_folder else None
        result = run_try(TrySpec(task, run, try_number=ti.try_number, max_tries=ti.max_tries,
                                 start_date=start, hostname=hostname, log_path=path,
                                 test_mode=True, map_index=map_index, resume=resume),
                         session_factory,
                         replace(local_hooks(), dataset_events=record_try_events))
        # a deferred try: its trigger runs here, then it resumes (Airflow's tasks test)
        if result.state != TaskInstanceState.DEFERRED or not _fire_deferred_inline(
                session_factory, run):
            break
    with session_scope(session_factory) as session:
        ti = session.get_one(TaskInstance, (dag.dag_id, task_id, run.run_id, map_index))
    return TaskInstanceSummary(ti.task_id, ti.state, ti.try_number, ti.start_date, ti.end_date,
                               ti.state_reason, ti.map_index)
