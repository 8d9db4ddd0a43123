"""Backfills: planning the runs of a logical date range, recording the request, and the
scheduler's step that drives it.

:func:`plan_backfill` computes the logical dates of ``[from_date, to_date]`` from the DAG's
timetable (both ends included, each date a tick of the schedule), leaves out the dates the
DAG already has a run for (they are reported, never touched) and orders the rest oldest
first, or newest first for ``run_backwards``. :func:`create_backfill` inserts the
``backfill`` row (state ``queued``) that the scheduler then drives:
:func:`drive_backfills`, a step of each scheduler loop, creates each active backfill's next
runs and ends the backfill when all its runs are finished.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pendulum
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from squall.common.db import is_postgres
from squall.common.errors import BackfillError, DagRunAlreadyExists
from squall.common.models import Backfill, DagRun, TaskInstance
from squall.common.state import (
    BACKFILL_ACTIVE_STATES,
    BACKFILL_FINISHED_STATES,
    DAGRUN_UNFINISHED_STATES,
    BackfillState,
    DagRunState,
    DagRunType,
)
from squall.scheduler.dag_runs import RunStepStats, SerializedDagCache
from squall.scheduler.dag_shape import DagLike
from squall.scheduler.run_creation import create_dag_run
from squall.sdk.operators.base import DEFAULT_QUEUE
from squall.sdk.timetables import DagRunInfo, DataInterval

log = logging.getLogger(__name__)

#: The most runs one backfill may plan (a guard against a minutely DAG over ten years).
MAX_BACKFILL_RUNS = 10_000

#: The options of ``squall dags backfill`` kept in ``backfill.options``, as Airflow names them.
OPTION_NAMES = ("mark_success", "rerun_failed_tasks", "reset_dagruns", "task_regex",
                "ignore_first_depends_on_past", "ignore_dependencies", "pool",
                "delay_on_limit")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a backfill: its logical date, data interval and run id."""

    logical_date: datetime
    data_interval: DataInterval
    run_id: str


@dataclass(frozen=True)
class ExistingRun:
    """A date of the range the DAG already has a run for: left alone."""

    logical_date: datetime
    run_id: str
    run_type: str
    state: str


@dataclass
class BackfillPlan:
    """The runs a backfill of ``dag_id`` creates, in the order it creates them, and the
    dates of the range that already have a run."""

    dag_id: str
    from_date: datetime
    to_date: datetime
    run_backwards: bool
    runs: list[PlannedRun] = field(default_factory=list)
    existing: list[ExistingRun] = field(default_factory=list)


def backfill_run_id(logical_date: datetime) -> str:
    """``backfill__<logical date in UTC, ISO 8601>``."""
    return DagRunType.BACKFILL.generate_run_id(logical_date.astimezone(UTC).isoformat())


def range_run_infos(dag: DagLike, from_date: datetime, to_date: datetime) -> list[DagRunInfo]:
    """The runs the DAG's schedule has in ``[from_date, to_date]``, oldest first.

    Raises :class:`BackfillError` when the DAG has no periodic schedule (``None``,
    ``@once``), when the range is empty or reversed, or past :data:`MAX_BACKFILL_RUNS`."""
    if from_date > to_date:
        raise BackfillError(f"backfill of {dag.dag_id}: the start {from_date.isoformat()} is "
                            f"after the end {to_date.isoformat()}")
    timetable = dag.timetable
    if not timetable.periodic:
        raise BackfillError(f"DAG {dag.dag_id} has no periodic schedule "
                            f"({timetable.summary}): there are no runs to backfill")
    start, end = pendulum.instance(from_date), pendulum.instance(to_date)
    far_future = pendulum.datetime(9999, 1, 1, tz="UTC")
    infos: list[DagRunInfo] = []
    last: DataInterval | None = None
    while True:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, start_date=start,
                                          end_date=end, catchup=True, now=far_future)
        if info is None or (infos and info.logical_date <= infos[-1].logical_date):
            break
        if len(infos) >= MAX_BACKFILL_RUNS:
            raise BackfillError(f"backfill of {dag.dag_id}: more than {MAX_BACKFILL_RUNS} "
                                "runs in the range; backfill a shorter range")
        infos.append(info)
        last = info.data_interval
    return infos


def plan_backfill(session: Session, dag: DagLike, from_date: datetime, to_date: datetime,
                  *, run_backwards: bool = False) -> BackfillPlan:
    """The runs a backfill of ``dag`` over ``[from_date, to_date]`` creates.

    Dates the DAG already has a run for (of any type) are left out and listed in
    ``existing``. Raises :class:`BackfillError` for ``run_backwards`` when a task depends on
    its past (its runs could never start), and as :func:`range_run_infos` does."""
    if run_backwards:
        depending = sorted(tid for tid, task in dag.task_dict.items() if task.depends_on_past)
        if depending:
            raise BackfillError(
                f"cannot backfill DAG {dag.dag_id} backwards: tasks depend on their past "
                f"(depends_on_past): {', '.join(depending)}")
    infos = range_run_infos(dag, from_date, to_date)
    plan = BackfillPlan(dag_id=dag.dag_id, from_date=from_date, to_date=to_date,
                        run_backwards=run_backwards)
    if not infos:
        return plan
    rows = session.execute(
        select(DagRun.logical_date, DagRun.run_id, DagRun.run_type, DagRun.state)
        .where(DagRun.dag_id == dag.dag_id,
               DagRun.logical_date >= infos[0].logical_date,
               DagRun.logical_date <= infos[-1].logical_date)
    ).all()
    by_date = {row.logical_date.timestamp(): row for row in rows}
    for info in infos:
        row = by_date.get(info.logical_date.timestamp())
        if row is not None:
            plan.existing.append(ExistingRun(logical_date=row.logical_date, run_id=row.run_id,
                                             run_type=row.run_type, state=row.state))
            continue
        plan.runs.append(PlannedRun(logical_date=info.logical_date,
                                    data_interval=info.data_interval,
                                    run_id=backfill_run_id(info.logical_date)))
    if run_backwards:
        plan.runs.reverse()
    return plan


def create_backfill(session: Session, plan: BackfillPlan, *, max_active_runs: int,
                    conf: Mapping[str, Any] | None = None,
                    options: Mapping[str, Any] | None = None) -> Backfill:
    """Insert the ``backfill`` row of ``plan`` (state ``queued``) and return it (flushed).

    ``options`` may only hold the names in :data:`OPTION_NAMES`."""
    if max_active_runs < 1:
        raise BackfillError(f"max_active_runs must be >= 1, got {max_active_runs}")
    unknown = sorted(set(options or {}) - set(OPTION_NAMES))
    if unknown:
        raise BackfillError(f"unknown backfill options: {', '.join(unknown)}")
    backfill = Backfill(
        dag_id=plan.dag_id, from_date=plan.from_date, to_date=plan.to_date,
        run_backwards=plan.run_backwards, max_active_runs=max_active_runs,
        conf=dict(conf) if conf is not None else None,
        options=dict(options) if options else None,
        state=BackfillState.QUEUED.value, total_runs=len(plan.runs),
    )
    session.add(backfill)
    session.flush()
    log.info("Backfill %s of %s created: %d runs from %s to %s%s (max %d active)",
             backfill.id, plan.dag_id, len(plan.runs), plan.from_date.isoformat(),
             plan.to_date.isoformat(), ", backwards" if plan.run_backwards else "",
             max_active_runs)
    return backfill


# --------------------------------------------------------------------------- the scheduler


#: Most active backfills driven in one loop (oldest first).
MAX_BACKFILLS_PER_LOOP = 16


def drive_backfills(session: Session, cache: SerializedDagCache, *, now: datetime,
                    default_queue: str = DEFAULT_QUEUE) -> RunStepStats:
    """The scheduler's backfill step: for each queued or running backfill (locked ``FOR
    UPDATE SKIP LOCKED`` on PostgreSQL, so two schedulers never drive the same one), create
    its next runs in plan order while it has fewer than its ``max_active_runs`` unfinished
    runs, and mark it ``success`` (or ``failed`` when one of its runs failed) once it has
    nothing left to create and every run of it is finished.

    Backfill runs are created RUNNING (the backfill's ``max_active_runs`` is their
    admission) with run type ``backfill`` and ``backfill_id``; from then on they are decided,
    queued and run like any other run, also when their DAG is paused. A date that got a run
    since the backfill was planned is left alone. The caller commits."""
    stats = RunStepStats()
    stmt = (select(Backfill)
            .where(Backfill.state.in_([s.value for s in BACKFILL_ACTIVE_STATES]))
            .order_by(Backfill.id).limit(MAX_BACKFILLS_PER_LOOP))
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    backfills = list(session.scalars(stmt))
    if not backfills:
        return stats
    dags = cache.get_many(session, {b.dag_id for b in backfills})
    states = _run_states(session, [b.id for b in backfills])
    for backfill in backfills:
        dag = dags.get(backfill.dag_id)
        if dag is None:
            log.warning("Backfill %s: DAG %s has no usable serialized DAG; waiting",
                        backfill.id, backfill.dag_id)
            stats.missing_dags.add(backfill.dag_id)
            continue
        run_states = states.get(backfill.id, [])
        try:
            plan = plan_backfill(session, dag, backfill.from_date, backfill.to_date,
                                 run_backwards=backfill.run_backwards)
        except BackfillError as exc:
            log.error("Backfill %s of %s: %s; failed", backfill.id, backfill.dag_id, exc)
            _finish(backfill, BackfillState.FAILED, now)
            continue
        unfinished = sum(1 for s in run_states if s in DAGRUN_UNFINISHED_STATES)
        for planned in plan.runs[:max(0, backfill.max_active_runs - unfinished)]:
            try:
                run = create_dag_run(session, dag, run_type=DagRunType.BACKFILL,
                                     logical_date=planned.logical_date,
                                     data_interval=planned.data_interval,
                                     run_id=planned.run_id, conf=backfill.conf,
                                     state=DagRunState.RUNNING, now=now,
                                     default_queue=default_queue)
            except DagRunAlreadyExists as exc:
                log.info("Backfill %s: run not created: %s", backfill.id, exc)
                continue
            run.backfill_id = backfill.id
            unfinished += 1
            stats.created += 1
            stats.started += 1
            run_states.append(DagRunState.RUNNING.value)
        if run_states and backfill.state == BackfillState.QUEUED:
            backfill.state = BackfillState.RUNNING.value
            log.info("Backfill %s of %s: running", backfill.id, backfill.dag_id)
        # every date of the range has a run (plan.runs was read before this loop's) and
        # none of this backfill's is unfinished: it is over
        if not plan.runs and unfinished == 0:
            failed = any(s == DagRunState.FAILED.value for s in run_states)
            _finish(backfill, BackfillState.FAILED if failed else BackfillState.SUCCESS, now)
    session.flush()
    return stats


def _run_states(session: Session, backfill_ids: list[int]) -> dict[int, list[str]]:
    """The states of each backfill's runs."""
    out: dict[int, list[str]] = {}
    for backfill_id, state in session.execute(
        select(DagRun.backfill_id, DagRun.state).where(DagRun.backfill_id.in_(backfill_ids))
    ).all():
        if backfill_id is not None:
            out.setdefault(backfill_id, []).append(state)
    return out


def _finish(backfill: Backfill, state: BackfillState, now: datetime) -> None:
    backfill.state = state.value
    backfill.completed_at = now
    log.info("Backfill %s of %s: %s", backfill.id, backfill.dag_id, state.value)


# --------------------------------------------------------------------------- following


@dataclass
class BackfillProgress:
    """Where a backfill is: its row, its runs by state, its task instances by state."""

    backfill_id: int
    dag_id: str
    state: BackfillState
    total_runs: int
    created_at: datetime
    completed_at: datetime | None
    runs_by_state: dict[str, int]
    tis_by_state: dict[str, int]
    failed_runs: list[str]

    @property
    def finished(self) -> bool:
        return self.state in BACKFILL_FINISHED_STATES

    @property
    def runs_finished(self) -> int:
        return sum(n for s, n in self.runs_by_state.items()
                   if s not in DAGRUN_UNFINISHED_STATES)


def backfill_progress(session: Session, backfill_id: int) -> BackfillProgress | None:
    """The progress of backfill ``backfill_id`` (three queries), or ``None`` when there is no
    such backfill."""
    row = session.get(Backfill, backfill_id, populate_existing=True)
    if row is None:
        return None
    runs = session.execute(select(DagRun.run_id, DagRun.state)
                           .where(DagRun.backfill_id == backfill_id)
                           .order_by(DagRun.logical_date)).all()
    by_state: dict[str, int] = {}
    for run in runs:
        by_state[run.state] = by_state.get(run.state, 0) + 1
    tis = session.execute(
        select(TaskInstance.state, func.count())
        .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
              & (DagRun.run_id == TaskInstance.run_id))
        .where(DagRun.backfill_id == backfill_id).group_by(TaskInstance.state)
    ).all()
    return BackfillProgress(
        backfill_id=row.id, dag_id=row.dag_id, state=BackfillState(row.state),
        total_runs=row.total_runs, created_at=row.created_at, completed_at=row.completed_at,
        runs_by_state=by_state, tis_by_state={state: int(n) for state, n in tis},
        failed_runs=[r.run_id for r in runs if r.state == DagRunState.FAILED.value])


def cancel_backfill(session: Session, backfill_id: int, *, now: datetime) -> bool:
    """Cancel a queued or running backfill: the scheduler creates no more of its runs (those
    already created go on to finish). Returns whether it was active."""
    changed = session.execute(
        update(Backfill)
        .where(Backfill.id == backfill_id,
               Backfill.state.in_([s.value for s in BACKFILL_ACTIVE_STATES]))
        .values(state=BackfillState.CANCELLED.value, completed_at=now)
    ).rowcount  # type: ignore[attr-defined]
    if changed:
        log.info("Backfill %s: cancelled", backfill_id)
    return bool(changed)

