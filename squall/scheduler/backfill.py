"""Backfills: planning the runs of a logical date range, recording the request, following
and cancelling it. The scheduler's step that drives a backfill is
:mod:`squall.scheduler.backfill_driver`.

:func:`plan_backfill` computes the logical dates of ``[from_date, to_date]`` from the DAG's
timetable (both ends included, each date a tick of the schedule), leaves out the dates the
DAG already has a run for and orders the rest oldest first, or newest first for
``run_backwards``. The existing runs are left alone and reported; with
``rerun_failed_tasks`` their failed and upstream_failed task instances, with
``reset_dagruns`` all their task instances, are cleared and the runs join the backfill.
:func:`create_backfill` inserts the ``backfill`` row (state ``queued``) and does those
clears, in the caller's transaction.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pendulum
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from squall.common.errors import BackfillError
from squall.common.models import Backfill, DagRun, TaskInstance, clip_reason
from squall.common.state import (
    BACKFILL_ACTIVE_STATES,
    BACKFILL_FINISHED_STATES,
    DAGRUN_UNFINISHED_STATES,
    FAILED_LIKE_STATES,
    UNFINISHED_STATES,
    BackfillState,
    DagRunState,
    DagRunType,
    TaskInstanceState,
)
from squall.common.wakeup import notify_backfill
from squall.scheduler.backfill_scope import FIRST_DATE_KEY
from squall.scheduler.clear import clear_task_instances
from squall.scheduler.dag_shape import DagLike
from squall.sdk.dag import DAG
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
    """A date of the range the DAG already has a run for: left alone, or with
    ``--rerun-failed-tasks`` / ``--reset-dagruns`` the task instances ``to_clear`` are
    cleared and the run joins the backfill."""

    logical_date: datetime
    run_id: str
    run_type: str
    state: str
    to_clear: tuple[str, ...] = ()


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
    #: the first schedule tick of the range (``-I`` ignores depends_on_past there)
    first_logical_date: datetime | None = None

    @property
    def rerun(self) -> list[ExistingRun]:
        """The existing runs whose task instances are cleared and run again."""
        return [r for r in self.existing if r.to_clear]


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
                  *, run_backwards: bool = False, rerun_failed_tasks: bool = False,
                  reset_dagruns: bool = False,
                  task_ids: Collection[str] | None = None,
                  infos: list[DagRunInfo] | None = None) -> BackfillPlan:
    """The runs a backfill of ``dag`` over ``[from_date, to_date]`` creates.

    Dates the DAG already has a run for (of any type) are left out and listed in
    ``existing``, with the task instances ``rerun_failed_tasks`` (the failed and
    upstream_failed ones) or ``reset_dagruns`` (all) clears, of the tasks in ``task_ids``
    (all without). Raises :class:`BackfillError` for ``run_backwards`` when a task depends on
    its past (its runs could never start), and as :func:`range_run_infos` does. ``infos``
    are the range's runs when the caller has them already (the scheduler keeps them)."""
    if run_backwards:
        depending = sorted(tid for tid, task in dag.task_dict.items() if task.depends_on_past)
        if depending:
            raise BackfillError(
                f"cannot backfill DAG {dag.dag_id} backwards: tasks depend on their past "
                f"(depends_on_past): {', '.join(depending)}")
    if infos is None:
        infos = range_run_infos(dag, from_date, to_date)
    plan = BackfillPlan(dag_id=dag.dag_id, from_date=from_date, to_date=to_date,
                        run_backwards=run_backwards,
                        first_logical_date=infos[0].logical_date if infos else None)
    if not infos:
        return plan
    rows = session.execute(
        select(DagRun.logical_date, DagRun.run_id, DagRun.run_type, DagRun.state)
        .where(DagRun.dag_id == dag.dag_id,
               DagRun.logical_date >= infos[0].logical_date,
               DagRun.logical_date <= infos[-1].logical_date)
    ).all()
    by_date = {row.logical_date.timestamp(): row for row in rows}
    clears = (_to_clear(session, dag.dag_id, [r.run_id for r in rows], reset=reset_dagruns,
                        task_ids=task_ids)
              if rows and (rerun_failed_tasks or reset_dagruns) else {})
    for info in infos:
        row = by_date.get(info.logical_date.timestamp())
        if row is not None:
            plan.existing.append(ExistingRun(logical_date=row.logical_date, run_id=row.run_id,
                                             run_type=row.run_type, state=row.state,
                                             to_clear=tuple(clears.get(row.run_id, ()))))
            continue
        plan.runs.append(PlannedRun(logical_date=info.logical_date,
                                    data_interval=info.data_interval,
                                    run_id=backfill_run_id(info.logical_date)))
    if run_backwards:
        plan.runs.reverse()
    return plan


def _to_clear(session: Session, dag_id: str, run_ids: list[str], *, reset: bool,
              task_ids: Collection[str] | None) -> dict[str, list[str]]:
    """run_id -> the task ids whose task instances a rerun (failed ones) or a reset (all)
    clears."""
    stmt = select(TaskInstance.run_id, TaskInstance.task_id).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(run_ids))
    if not reset:
        stmt = stmt.where(TaskInstance.state.in_([s.value for s in FAILED_LIKE_STATES]))
    if task_ids is not None:
        stmt = stmt.where(TaskInstance.task_id.in_(sorted(task_ids)))
    out: dict[str, list[str]] = {}
    for run_id, task_id in session.execute(stmt.order_by(TaskInstance.task_id)).all():
        out.setdefault(run_id, []).append(task_id)
    return out


def create_backfill(session: Session, plan: BackfillPlan, *, max_active_runs: int,
                    conf: Mapping[str, Any] | None = None,
                    options: Mapping[str, Any] | None = None,
                    dag: DAG | None = None, now: datetime | None = None) -> Backfill:
    """Insert the ``backfill`` row of ``plan`` (state ``queued``) and return it (flushed).
    The existing runs ``plan.rerun`` lists have their task instances cleared (``dag`` gives
    the tasks' retries) and join the backfill.

    ``options`` may only hold the names in :data:`OPTION_NAMES`."""
    if max_active_runs < 1:
        raise BackfillError(f"max_active_runs must be >= 1, got {max_active_runs}")
    unknown = sorted(set(options or {}) - set(OPTION_NAMES))
    if unknown:
        raise BackfillError(f"unknown backfill options: {', '.join(unknown)}")
    stored = dict(options or {})
    if plan.first_logical_date is not None:
        stored[FIRST_DATE_KEY] = plan.first_logical_date.isoformat()
    backfill = Backfill(
        dag_id=plan.dag_id, from_date=plan.from_date, to_date=plan.to_date,
        run_backwards=plan.run_backwards, max_active_runs=max_active_runs,
        conf=dict(conf) if conf is not None else None,
        options=stored or None,
        state=BackfillState.QUEUED.value, total_runs=len(plan.runs) + len(plan.rerun),
    )
    session.add(backfill)
    session.flush()
    if plan.rerun:
        _rerun_existing(session, backfill, plan, dag, now or datetime.now(UTC))
    # schedulers that found no backfill to drive look again when this commits
    notify_backfill(session, backfill.id, plan.dag_id)
    log.info("Backfill %s of %s created: %d runs from %s to %s%s (max %d active)",
             backfill.id, plan.dag_id, len(plan.runs), plan.from_date.isoformat(),
             plan.to_date.isoformat(), ", backwards" if plan.run_backwards else "",
             max_active_runs)
    return backfill


def _rerun_existing(session: Session, backfill: Backfill, plan: BackfillPlan,
                   dag: DAG | None, now: datetime) -> None:
    """Clear the task instances of ``plan.rerun`` and hand those runs to the backfill."""
    for existing in plan.rerun:
        tis = list(session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == plan.dag_id,
                                       TaskInstance.run_id == existing.run_id,
                                       TaskInstance.task_id.in_(existing.to_clear))
            .execution_options(populate_existing=True)))
        clear_task_instances(session, tis, dag, now,
                             reason=f"cleared by backfill {backfill.id}")
        session.execute(update(DagRun)
                        .where(DagRun.dag_id == plan.dag_id, DagRun.run_id == existing.run_id)
                        .values(backfill_id=backfill.id)
                        .execution_options(synchronize_session=False))
        log.info("Backfill %s: run %s joins it (%d task instances cleared)", backfill.id,
                 existing.run_id, len(tis))


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
    #: why it ended, when it did not simply run out of runs (the deadlock report)
    reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in BACKFILL_FINISHED_STATES

    @property
    def deadlocked(self) -> bool:
        return self.reason is not None and self.reason.startswith(DEADLOCK_PREFIX)

    @property
    def not_ready(self) -> int:
        """Task instances waiting for their upstream tasks or their past (state none); once
        the backfill is deadlocked these are the blocked ones."""
        return self.tis_by_state.get(TaskInstanceState.NONE.value, 0)

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
        failed_runs=[r.run_id for r in runs if r.state == DagRunState.FAILED.value],
        reason=row.reason)


#: How a deadlock report (``backfill.reason``) begins.
DEADLOCK_PREFIX = "deadlock"


def cancel_backfill(session: Session, backfill_id: int, *, now: datetime,
                    end_running: bool = False) -> list[str] | None:
    """Cancel a queued or running backfill: the scheduler creates no more of its runs.
    Those already created go on to finish, or with ``end_running`` are ended now: their
    running task instances are set failed (their supervisors stop them, every process
    included), the other unfinished ones skipped, and the runs failed.

    A backfill that already ended (a deadlocked one) keeps its state; ``end_running`` still
    ends its unfinished runs. Returns the run ids it ended (empty without
    ``end_running``), or ``None`` when there was nothing to do."""
    changed = session.execute(
        update(Backfill)
        .where(Backfill.id == backfill_id,
               Backfill.state.in_([s.value for s in BACKFILL_ACTIVE_STATES]))
        .values(state=BackfillState.CANCELLED.value, completed_at=now,
                reason="cancelled" + (" (its unfinished runs ended)" if end_running else ""))
    ).rowcount  # type: ignore[attr-defined]
    if not changed:
        ended = _end_runs(session, backfill_id, now) if end_running else []
        return ended or None
    log.info("Backfill %s: cancelled", backfill_id)
    return _end_runs(session, backfill_id, now) if end_running else []


def _end_runs(session: Session, backfill_id: int, now: datetime) -> list[str]:
    """Fail the backfill's unfinished runs as Airflow's "mark run failed" does."""
    runs = session.execute(
        select(DagRun.dag_id, DagRun.run_id)
        .where(DagRun.backfill_id == backfill_id,
               DagRun.state.in_([s.value for s in DAGRUN_UNFINISHED_STATES]))).all()
    why = clip_reason(f"backfill {backfill_id} was cancelled and its runs ended")
    for dag_id, run_id in runs:
        in_run = (TaskInstance.dag_id == dag_id) & (TaskInstance.run_id == run_id)
        session.execute(
            update(TaskInstance)
            .where(in_run, TaskInstance.state.in_([TaskInstanceState.RUNNING.value,
                                                   TaskInstanceState.RESTARTING.value]))
            .values(state=TaskInstanceState.FAILED.value, end_date=now, state_reason=why)
            .execution_options(synchronize_session=False))
        session.execute(
            update(TaskInstance)
            .where(in_run, TaskInstance.state.in_([s.value for s in UNFINISHED_STATES]))
            .values(state=TaskInstanceState.SKIPPED.value, end_date=now, state_reason=why)
            .execution_options(synchronize_session=False))
        session.execute(
            update(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            .values(state=DagRunState.FAILED.value, end_date=now, updated_at=now)
            .execution_options(synchronize_session=False))
        log.info("DagRun %s %s: failed (backfill %s cancelled)", dag_id, run_id, backfill_id)
    return [run_id for _, run_id in runs]

