"""Creating DAG runs: :func:`create_dag_run` inserts a run and its task instances;
:func:`verify_integrity` makes a run's task instance rows match its DAG's tasks (created,
removed, restored). Shared by the scheduler, triggers and ``squall dags test``.

Nothing here commits: the caller owns the transaction. The ``dag`` given is anything shaped
like :class:`squall.sdk.dag.DAG` (see :class:`~squall.runs.dag_shape.DagLike`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pendulum
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from squall.common.errors import DagNotFound, DagRunAlreadyExists
from squall.common.models import DagModel, DagRun, TaskInstance, utcnow
from squall.common.state import DAGRUN_FINISHED_STATES, DagRunState, DagRunType, TaskInstanceState
from squall.runs.dag_shape import DagLike
from squall.runs.ti_updates import bulk_set, load_tis
from squall.sdk.operators.base import DEFAULT_QUEUE
from squall.sdk.params import params_for_run
from squall.sdk.timetables import DataInterval

log = logging.getLogger(__name__)

TI = TaskInstanceState


@dataclass
class IntegrityChanges:
    """What :func:`verify_integrity` changed (task ids)."""

    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)


def create_dag_run(
    session: Session,
    dag: DagLike,
    *,
    run_type: DagRunType | str,
    logical_date: datetime,
    data_interval: DataInterval | None,
    run_id: str | None = None,
    conf: dict[str, Any] | None = None,
    state: DagRunState = DagRunState.QUEUED,
    external_trigger: bool = False,
    now: datetime | None = None,
    default_queue: str = DEFAULT_QUEUE,
) -> DagRun:
    """Insert a DAG run of ``dag`` and its task instances, and return it (flushed).

    Task instances of tasks that name no queue go to ``default_queue`` (the deployment's
    ``[celery] default_queue``).

    ``run_id`` defaults to ``"<run_type>__<logical date in UTC, ISO 8601>"``. A manual run
    without a data interval gets the one its timetable infers. Raises
    :class:`DagRunAlreadyExists` when the DAG has a run with that run_id or logical date, and
    :class:`DagNotFound` when the DAG has no ``dag`` row yet, and
    :class:`~squall.common.errors.ParamValidationError` naming the param when the DAG's
    params updated with ``conf`` do not validate (Airflow's ``DAG.create_dagrun``).
    """
    now = now or utcnow()
    run_type = DagRunType(str(run_type))
    params_for_run(getattr(dag, "params", None), conf)
    if logical_date.tzinfo is None:
        raise ValueError(f"logical_date must be timezone-aware, got {logical_date!r}")
    if run_id is None:
        run_id = run_type.generate_run_id(logical_date.astimezone(UTC).isoformat())
    if data_interval is None and run_type is DagRunType.MANUAL:
        data_interval = dag.timetable.infer_manual_data_interval(
            run_after=pendulum.instance(logical_date)
        )
    _raise_if_run_exists(session, dag.dag_id, run_id, logical_date)
    if session.get(DagModel, dag.dag_id) is None:
        raise DagNotFound(f"DAG {dag.dag_id} has no row in the dag table; sync the DAG first")

    dag_run = DagRun(
        dag_id=dag.dag_id,
        run_id=run_id,
        run_type=run_type.value,
        logical_date=logical_date,
        data_interval_start=data_interval.start if data_interval else None,
        data_interval_end=data_interval.end if data_interval else None,
        state=DagRunState(state).value,
        conf=dict(conf) if conf is not None else None,
        external_trigger=external_trigger,
        queued_at=now,
        start_date=now if state != DagRunState.QUEUED else None,
        end_date=now if state in DAGRUN_FINISHED_STATES else None,
    )
    try:
        with session.begin_nested():
            session.add(dag_run)
            session.flush()
    except IntegrityError:
        # lost a race with another creator: report it as such; anything else is re-raised
        _raise_if_run_exists(session, dag.dag_id, run_id, logical_date)
        raise
    changes = verify_integrity(session, dag, dag_run, default_queue=default_queue)
    log.info("DagRun %s %s created (%s, %s, %d task instances)", dag.dag_id, run_id,
             run_type.value, dag_run.state, len(changes.created))
    return dag_run


def _raise_if_run_exists(session: Session, dag_id: str, run_id: str,
                         logical_date: datetime) -> None:
    existing = session.execute(
        select(DagRun.run_id, DagRun.logical_date)
        .where(DagRun.dag_id == dag_id,
               or_(DagRun.run_id == run_id, DagRun.logical_date == logical_date))
        .limit(1)
    ).first()
    if existing is not None:
        raise DagRunAlreadyExists(
            f"DAG {dag_id} already has a run with run_id {run_id!r} or logical date "
            f"{logical_date.isoformat()}: run {existing.run_id!r} at "
            f"{existing.logical_date.isoformat()}"
        )


def verify_integrity(session: Session, dag: DagLike, dag_run: DagRun, *,
                     default_queue: str = DEFAULT_QUEUE) -> IntegrityChanges:
    """Make the run's task instance rows match the DAG's tasks.

    Creates the missing ones (state ``none``, try 0, ``max_tries = retries``, the task's
    pool, slots, queue, priority weight, operator name and executor config) except for tasks
    whose ``start_date`` is after the run's logical date or whose ``end_date`` is before it;
    marks rows of tasks no longer in the DAG ``removed``; puts ``removed`` rows of tasks that
    came back to ``none``. Flushes; does not commit.
    """
    tis = load_tis(session, dag_run)
    existing = {ti.task_id: ti for ti in tis}
    changes = IntegrityChanges()
    logical = dag_run.logical_date
    new_tis: list[TaskInstance] = []
    for task_id, task in dag.task_dict.items():
        if task_id in existing:
            continue
        if task.start_date is not None and task.start_date > logical:
            continue
        if task.end_date is not None and task.end_date < logical:
            continue
        new_tis.append(TaskInstance(
            dag_id=dag_run.dag_id,
            task_id=task_id,
            run_id=dag_run.run_id,
            state=TI.NONE.value,
            try_number=0,
            max_tries=int(task.retries),
            pool=task.pool,
            pool_slots=int(task.pool_slots),
            queue=task.queue or default_queue,
            priority_weight=int(task.priority_weight_total),
            operator=task.operator_name,
            executor_config=dict(task.executor_config) if task.executor_config else None,
        ))
        changes.created.append(task_id)
    if new_tis:
        session.add_all(new_tis)
        session.flush()

    gone = [ti for ti in tis if ti.task_id not in dag.task_dict and ti.state != TI.REMOVED]
    if gone:
        bulk_set(session, gone, expected={ti.state for ti in gone}, values={
            "state": TI.REMOVED.value, "state_reason": "task is no longer in the DAG"})
        changes.removed = sorted(ti.task_id for ti in gone)
    back = [ti for ti in tis if ti.task_id in dag.task_dict and ti.state == TI.REMOVED]
    if back:
        bulk_set(session, back, expected={TI.REMOVED.value},
                  values={"state": TI.NONE.value, "state_reason": None})
        changes.restored = sorted(ti.task_id for ti in back)
    if changes.removed or changes.restored:
        log.info("DagRun %s %s: task instances removed %s, restored %s", dag_run.dag_id,
                 dag_run.run_id, changes.removed, changes.restored)
    return changes
