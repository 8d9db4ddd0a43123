"""Creating dataset-triggered runs: the consumer DAGs whose condition holds over their queued
datasets (``dataset_dag_run_queue``) get a run, as Airflow 2.10's scheduler does
(``SchedulerJobRunner._create_dag_runs_dataset_triggered`` with
``DagModel.dags_needing_dagruns``).

For each active, unpaused DAG (without import errors) that has queue rows, in one
transaction (the caller's):

* its condition (``dag.dataset_expression``, see :mod:`squall.runs.dataset_conditions`) is
  evaluated over the URIs of its queued datasets; an alias is resolved through
  ``dataset_alias_dataset`` at that moment;
* when it holds and the DAG has fewer than ``max_active_runs`` QUEUED + RUNNING runs, a
  QUEUED run of type ``dataset_triggered`` is created. Its logical date is the latest
  ``created_at`` of the queue rows; its run id ``dataset_triggered__<logical date>``; its
  data interval spans the events it was created from (each event's producing run's data
  interval, or the event's timestamp for an external one: Airflow's
  ``DatasetTriggeredTimetable.data_interval_for_events``);
* the events of the DAG's datasets (named by its schedule, or resolved from an alias it
  names) recorded after the DAG's previous dataset-triggered run and up to the logical date
  are linked to the run (``dagrun_dataset_event``), and the queue rows read are deleted.

While the DAG is at ``max_active_runs``, its queue rows stay: the next run is created when
there is room, once for all the events that arrived meanwhile. A dataset's queue row keeps
its first ``created_at`` (a later event of it adds no row), so that run's logical date is
the first waiting event's time and a later event of the same dataset is linked to the run
after it (Airflow's window).

Several schedulers: every consumer's queue is first evaluated without locks (so consumers
still waiting never crowd the due ones out of the batch); then, on PostgreSQL, the due DAGs'
rows are locked ``FOR NO KEY UPDATE SKIP LOCKED`` and their queue rows read and evaluated
again, so one DAG's queue is taken by one scheduler at a time and one set of events gives
one run; SQLite serializes writers. Only the queue rows read are deleted, so a dataset
queued after the read is left for the next run.

A logical date already taken by another run of the DAG (a manual run at that very
microsecond) moves the new run's logical date past it, a microsecond at a time (at most
:data:`MAX_DATE_COLLISIONS` times), rather than leaving the queue stuck: Airflow would skip
the DAG every loop until a later event moved the date. When the run holding that date is
itself dataset-triggered, it was created from these queue rows: they are deleted and no run
is created (a second line of defence should two creators ever read the same rows).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pendulum
from sqlalchemy import and_, delete, func, insert, select, tuple_
from sqlalchemy.orm import Session

from squall.common.db import is_postgres
from squall.common.errors import (
    DagRunAlreadyExists,
    DatasetExpressionError,
    ParamValidationError,
)
from squall.common.models import (
    DagModel,
    DagRun,
    DagScheduleDatasetAliasReference,
    DagScheduleDatasetReference,
    DatasetAliasModel,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    dagrun_dataset_event,
    dataset_alias_dataset,
)
from squall.common.state import DAGRUN_UNFINISHED_STATES, DagRunState, DagRunType
from squall.runs.dataset_conditions import condition_holds, iter_aliases
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from squall.sdk.operators.base import DEFAULT_QUEUE
from squall.sdk.timetables import DataInterval

log = logging.getLogger(__name__)

#: Most consumer DAGs looked at in one call.
MAX_DAGS_PER_CALL = 64
#: How many times a run's logical date is moved on past runs of the DAG that already have it.
MAX_DATE_COLLISIONS = 5
_MICROSECOND = timedelta(microseconds=1)


@dataclass
class DatasetRunsResult:
    """What :func:`create_dataset_triggered_runs` did."""

    #: (dag_id, run_id) of each run created
    created: list[tuple[str, str]] = field(default_factory=list)
    #: DAGs whose condition holds but that are at ``max_active_runs`` (their queue waits)
    waiting: list[str] = field(default_factory=list)
    #: DAGs with queue rows but no usable serialized DAG
    missing_dags: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Queued:
    dataset_id: int
    uri: str
    created_at: datetime


def create_dataset_triggered_runs(
    session: Session,
    dags_for: Callable[[Collection[str]], Mapping[str, DAG]],
    *,
    now: datetime,
    default_queue: str = DEFAULT_QUEUE,
    limit: int = MAX_DAGS_PER_CALL,
) -> DatasetRunsResult:
    """Create the dataset-triggered runs that are due (see the module docstring). Does not
    commit. ``dags_for``: the DAGs (as the scheduler rebuilds them from ``serialized_dag``)
    of the dag_ids given.

    First, without locks, every consumer with queue rows is evaluated (as Airflow's
    ``dags_needing_dagruns`` loads every queue row), so that consumers still waiting for
    part of their condition, or at ``max_active_runs``, never crowd out the due ones; then
    at most ``limit`` due ones are locked (``SKIP LOCKED``), their queue read again and
    evaluated again, and their runs created.
    """
    result = DatasetRunsResult()
    due = _due(session, _consumers(session), dags_for, result)
    if not due:
        return result
    stmt = (select(DagModel.dag_id, DagModel.dataset_expression)
            .where(DagModel.dag_id.in_(due[:limit]), _CONSUMER).order_by(DagModel.dag_id))
    if is_postgres(session):
        # FOR NO KEY UPDATE: the producers' queue inserts (whose foreign key takes a KEY
        # SHARE lock on the dag row) never wait for this transaction
        stmt = stmt.with_for_update(of=DagModel, skip_locked=True, key_share=True)
    # the queue is read again after the lock: what another scheduler took is gone
    locked = {dag_id: expression for dag_id, expression in session.execute(stmt).all()}
    queued = _queued(session, list(locked))
    dags = dags_for(list(locked))
    for dag_id in _due(session, {d: locked[d] for d in queued}, dags_for, result,
                       queued=queued, report=True):
        run = _create_run(session, dags[dag_id], queued[dag_id], now=now,
                          default_queue=default_queue)
        if run is not None:
            result.created.append((dag_id, run.run_id))
    return result


#: a DAG whose queue is looked at: active, unpaused, its file without import errors
#: (Airflow's ``dags_needing_dagruns``)
_CONSUMER = and_(DagModel.is_active.is_(True), DagModel.is_paused.is_(False),
                 DagModel.has_import_errors.is_(False))


def _consumers(session: Session) -> dict[str, Any]:
    """The consumers with queue rows, and their conditions (no lock)."""
    return {dag_id: expression for dag_id, expression in session.execute(
        select(DagModel.dag_id, DagModel.dataset_expression)
        .where(DagModel.dag_id.in_(select(DatasetDagRunQueue.target_dag_id).distinct()),
               _CONSUMER)
        .order_by(DagModel.dag_id)).all()}


def _due(session: Session, expressions: Mapping[str, Any],
         dags_for: Callable[[Collection[str]], Mapping[str, DAG]],
         result: DatasetRunsResult, *, queued: Mapping[str, list[_Queued]] | None = None,
         report: bool = False) -> list[str]:
    """Of ``expressions`` (dag_id -> condition), the DAGs due for a run, in dag_id order:
    their condition holds over their queue (``queued``, read here when not given) and they
    have room under ``max_active_runs``. The queue of a DAG whose condition is gone is
    deleted (when ``report``, i.e. under the lock; before, the DAG counts as due so that
    it is locked). ``report``: log why a DAG is not due, and list those waiting for room in
    ``result``."""
    if not expressions:
        return []
    if queued is None:
        queued = _queued(session, list(expressions))
    aliases = _resolved_aliases(session, expressions.values())
    holding: list[str] = []
    for dag_id, expression in sorted(expressions.items()):
        if dag_id not in queued:
            continue
        if expression is None:
            # the DAG no longer waits for datasets (its schedule changed): nothing to keep
            if report:
                _dequeue(session, dag_id, queued[dag_id])
                log.info("DAG %s: dataset queue dropped (%d dataset(s)): its schedule "
                         "names no dataset any more", dag_id, len(queued[dag_id]))
            else:
                holding.append(dag_id)
            continue
        try:
            holds = condition_holds(expression, {q.uri for q in queued[dag_id]}, aliases)
        except DatasetExpressionError as exc:
            # a serialization bug, not a state: said every time it is met
            log.error("DAG %s: no dataset-triggered run: %s", dag_id, exc)
            continue
        if holds:
            holding.append(dag_id)
    if not holding:
        return []
    dags = dags_for(holding)
    active = _active_runs(session, holding)
    due: list[str] = []
    for dag_id in holding:
        dag = dags.get(dag_id)
        if expressions[dag_id] is None:
            due.append(dag_id)  # only before the lock (see above)
        elif dag is None:
            if report:
                log.warning("DAG %s: datasets queued for a run but it has no usable "
                            "serialized DAG", dag_id)
            result.missing_dags.add(dag_id)
        elif active.get(dag_id, 0) >= dag.max_active_runs:
            if report:
                log.debug("DAG %s: %d active run(s), max_active_runs %d; its datasets stay "
                          "queued", dag_id, active.get(dag_id, 0), dag.max_active_runs)
                result.waiting.append(dag_id)
        else:
            due.append(dag_id)
    return due


def _queued(session: Session, dag_ids: list[str]) -> dict[str, list[_Queued]]:
    by_dag: dict[str, list[_Queued]] = defaultdict(list)
    for dag_id, dataset_id, uri, created_at in session.execute(
        select(DatasetDagRunQueue.target_dag_id, DatasetDagRunQueue.dataset_id,
               DatasetModel.uri, DatasetDagRunQueue.created_at)
        .join(DatasetModel, DatasetModel.id == DatasetDagRunQueue.dataset_id)
        .where(DatasetDagRunQueue.target_dag_id.in_(dag_ids))
    ).all():
        by_dag[dag_id].append(_Queued(dataset_id, uri, pendulum.instance(created_at)))
    return dict(by_dag)


def _resolved_aliases(session: Session, expressions: Iterable[Any]) -> dict[str, set[str]]:
    """Each alias the expressions name -> the URIs of the datasets it has resolved to."""
    names = {name for e in expressions for name in iter_aliases(e)}
    if not names:
        return {}
    resolved: dict[str, set[str]] = defaultdict(set)
    for name, uri in session.execute(
        select(DatasetAliasModel.name, DatasetModel.uri)
        .join(dataset_alias_dataset, dataset_alias_dataset.c.alias_id == DatasetAliasModel.id)
        .join(DatasetModel, DatasetModel.id == dataset_alias_dataset.c.dataset_id)
        .where(DatasetAliasModel.name.in_(sorted(names)))
    ).all():
        resolved[name].add(uri)
    return dict(resolved)


def _active_runs(session: Session, dag_ids: list[str]) -> dict[str, int]:
    """QUEUED + RUNNING runs by DAG (Airflow counts both against ``max_active_runs``)."""
    rows = session.execute(
        select(DagRun.dag_id, func.count())
        .where(DagRun.dag_id.in_(dag_ids),
               DagRun.state.in_(sorted(s.value for s in DAGRUN_UNFINISHED_STATES)))
        .group_by(DagRun.dag_id)).all()
    return {dag_id: int(n) for dag_id, n in rows}


def _create_run(session: Session, dag: DAG, queued: list[_Queued], *, now: datetime,
                default_queue: str) -> DagRun | None:
    logical = max(q.created_at for q in queued)
    for _ in range(MAX_DATE_COLLISIONS + 1):
        events = _events_for(session, dag.dag_id, logical)
        try:
            run = create_dag_run(session, dag, run_type=DagRunType.DATASET_TRIGGERED,
                                 logical_date=logical,
                                 data_interval=data_interval_for_events(session, logical,
                                                                        events),
                                 state=DagRunState.QUEUED, now=now,
                                 default_queue=default_queue)
        except ParamValidationError as exc:
            # as Airflow's scheduler, a misconfigured DAG must not stop the loop; its
            # datasets stay queued for when its file is fixed
            log.error("DAG %s: no dataset-triggered run: %s", dag.dag_id, exc)
            return None
        except DagRunAlreadyExists as exc:
            taken_by = session.scalar(select(DagRun.run_type).where(
                DagRun.dag_id == dag.dag_id, DagRun.logical_date == logical))
            if taken_by == DagRunType.DATASET_TRIGGERED.value:
                # a run was created from these very queue rows (their latest time is its
                # logical date): they are taken, whoever left them
                log.info("DAG %s: the dataset-triggered run at %s exists; its queue rows "
                         "are taken", dag.dag_id, logical.isoformat())
                _dequeue(session, dag.dag_id, queued)
                return None
            log.warning("DAG %s: dataset-triggered run not created at %s: %s; trying a "
                        "microsecond later", dag.dag_id, logical.isoformat(), exc)
            logical = logical + _MICROSECOND
            continue
        if events:
            session.execute(insert(dagrun_dataset_event),
                            [{"dag_run_id": run.id, "event_id": e.id} for e in events])
        _dequeue(session, dag.dag_id, queued)
        log.info("DagRun %s %s: triggered by %d dataset event(s) of %s", dag.dag_id,
                 run.run_id, len(events), ", ".join(sorted({q.uri for q in queued})))
        return run
    log.error("DAG %s: no dataset-triggered run: every logical date up to %s is taken; its "
              "datasets stay queued", dag.dag_id, logical.isoformat())
    return None


def _events_for(session: Session, dag_id: str, logical: datetime) -> list[DatasetEvent]:
    """The events a run of ``dag_id`` at ``logical`` consumes (Airflow's query): those of
    the datasets its schedule names (directly, or through an alias resolved to them), later
    than its previous dataset-triggered run's logical date and not later than ``logical``."""
    previous = session.scalar(
        select(func.max(DagRun.logical_date))
        .where(DagRun.dag_id == dag_id, DagRun.logical_date < logical,
               DagRun.run_type == DagRunType.DATASET_TRIGGERED.value))
    alias_link = dataset_alias_dataset
    datasets = select(DagScheduleDatasetReference.dataset_id).where(
        DagScheduleDatasetReference.dag_id == dag_id).union(
        select(alias_link.c.dataset_id)
        .join(DagScheduleDatasetAliasReference,
              DagScheduleDatasetAliasReference.alias_id == alias_link.c.alias_id)
        .where(DagScheduleDatasetAliasReference.dag_id == dag_id))
    stmt = select(DatasetEvent).where(DatasetEvent.dataset_id.in_(datasets),
                                      DatasetEvent.timestamp <= logical)
    if previous is not None:
        stmt = stmt.where(DatasetEvent.timestamp > previous)
    return list(session.scalars(stmt.order_by(DatasetEvent.timestamp, DatasetEvent.id)))


def data_interval_for_events(session: Session, logical: datetime,
                             events: Collection[DatasetEvent]) -> DataInterval:
    """Airflow's ``DatasetTriggeredTimetable.data_interval_for_events``: from the earliest
    to the latest of the events' producing runs' data intervals (an event without a
    producing run, or whose run has no interval, counts as its timestamp); the logical
    date alone when there are no events."""
    if not events:
        return DataInterval(pendulum.instance(logical), pendulum.instance(logical))
    sources = {(e.source_dag_id, e.source_run_id) for e in events
               if e.source_dag_id is not None and e.source_run_id is not None}
    intervals: dict[tuple[str, str], tuple[datetime | None, datetime | None]] = {}
    if sources:
        for dag_id, run_id, start, end in session.execute(
            select(DagRun.dag_id, DagRun.run_id, DagRun.data_interval_start,
                   DagRun.data_interval_end)
            .where(tuple_(DagRun.dag_id, DagRun.run_id).in_(sorted(sources)))
        ).all():
            intervals[(dag_id, run_id)] = (start, end)
    starts: list[datetime] = []
    ends: list[datetime] = []
    for event in events:
        start, end = intervals.get((event.source_dag_id or "", event.source_run_id or ""),
                                   (None, None))
        starts.append(start if start is not None else event.timestamp)
        ends.append(end if end is not None else event.timestamp)
    return DataInterval(pendulum.instance(min(starts)), pendulum.instance(max(ends)))


def _dequeue(session: Session, dag_id: str, queued: list[_Queued]) -> None:
    """Delete these queue rows of ``dag_id``, as read: a dataset queued since the read is
    left for the next run (a dataset queued when read cannot have been queued again: its
    row was there, and a second event of it adds none)."""
    session.execute(
        delete(DatasetDagRunQueue)
        .where(DatasetDagRunQueue.target_dag_id == dag_id,
               DatasetDagRunQueue.dataset_id.in_(sorted({q.dataset_id for q in queued})))
        .execution_options(synchronize_session=False))
