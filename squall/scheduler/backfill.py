"""Backfills: planning the runs of a logical date range, recording the request, following
and cancelling it. The scheduler's step that drives a backfill is
:mod:`squall.scheduler.backfill_driver`.

:func:`plan_backfill` computes the logical dates of ``[from_date, to_date]`` from the DAG's
timetable (both ends included, each date a tick of the schedule), leaves out the dates the
DAG already has a run for and orders the rest oldest first, or newest first for
``run_backwards``. The existing runs are left alone and reported; with
``rerun_failed_tasks`` their failed and upstream_failed task instances, with
``reset_dagruns`` all their task instances, are cleared and the runs join the backfill.
An unfinished run nothing drives (its backfill ended, or it is a paused DAG's run of no
backfill) joins it as it is: a backfill's job is every run of its range, so none is left
waiting behind one that ended (ADR 16). :func:`create_backfill` inserts the ``backfill``
row (state ``queued``), does those clears and takes those runs in, in the caller's
transaction.

A run whose backfill ended while it was unfinished says so where it is shown
(:func:`ended_backfill_notes`), with the command that resumes it (:func:`resume_command`).

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pendulum
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from squall.common.errors import BackfillError
from squall.common.models import Backfill, DagModel, DagRun, TaskInstance, lock_runs
from squall.common.state import (
    BACKFILL_ACTIVE_STATES,
    BACKFILL_FINISHED_STATES,
    DAGRUN_UNFINISHED_STATES,
    FAILED_LIKE_STATES,
    BackfillState,
    DagRunState,
    DagRunType,
    TaskInstanceState,
)
from squall.common.wakeup import notify_backfill
from squall.runs.clear import clear_task_instances
from squall.runs.dag_shape import DagLike
from squall.runs.mark_run import mark_run
from squall.scheduler.backfill_scope import FIRST_DATE_KEY
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
    cleared and the run joins the backfill. An unfinished run nothing drives joins it as it
    is (``orphan`` says why nothing drives it)."""

    logical_date: datetime
    run_id: str
    run_type: str
    state: str
    to_clear: tuple[str, ...] = ()
    #: the backfill the run belongs to now (None: none)
    backfill_id: int | None = None
    #: why nothing drives this unfinished run ("backfill 3 ended (failed)", "its DAG is
    #: paused"), when nothing does: it joins the backfill
    orphan: str | None = None

    @property
    def joins(self) -> bool:
        """Whether the run joins the backfill (cleared, or taken in as it is)."""
        return bool(self.to_clear) or self.orphan is not None


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

    @property
    def taken_in(self) -> list[ExistingRun]:
        """The existing unfinished runs nothing drives, that join without a clear."""
        return [r for r in self.existing if r.orphan is not None and not r.to_clear]

    @property
    def joining(self) -> list[ExistingRun]:
        """The existing runs that join the backfill (cleared or taken in)."""
        return [r for r in self.existing if r.joins]


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
        select(DagRun.logical_date, DagRun.run_id, DagRun.run_type, DagRun.state,
               DagRun.backfill_id, Backfill.state.label("backfill_state"))
        .outerjoin(Backfill, Backfill.id == DagRun.backfill_id)
        .where(DagRun.dag_id == dag.dag_id,
               DagRun.logical_date >= infos[0].logical_date,
               DagRun.logical_date <= infos[-1].logical_date)
    ).all()
    by_date = {row.logical_date.timestamp(): row for row in rows}
    clears = (_to_clear(session, dag.dag_id, [r.run_id for r in rows], reset=reset_dagruns,
                        task_ids=task_ids)
              if rows and (rerun_failed_tasks or reset_dagruns) else {})
    paused: bool | None = None  # read when a run of no backfill is unfinished
    for info in infos:
        row = by_date.get(info.logical_date.timestamp())
        if row is not None:
            orphan = None
            if row.state in _UNFINISHED_RUN:
                if row.backfill_id is not None:
                    if row.backfill_state is None:  # (no foreign key holds it)
                        orphan = f"its backfill {row.backfill_id} no longer exists"
                    elif row.backfill_state not in _ACTIVE_BACKFILL:
                        orphan = f"backfill {row.backfill_id} ended ({row.backfill_state})"
                else:
                    if paused is None:
                        paused = bool(session.scalar(select(DagModel.is_paused).where(
                            DagModel.dag_id == dag.dag_id)))
                    orphan = "its DAG is paused" if paused else None
            plan.existing.append(ExistingRun(logical_date=row.logical_date, run_id=row.run_id,
                                             run_type=row.run_type, state=row.state,
                                             to_clear=tuple(clears.get(row.run_id, ())),
                                             backfill_id=row.backfill_id, orphan=orphan))
            continue
        plan.runs.append(PlannedRun(logical_date=info.logical_date,
                                    data_interval=info.data_interval,
                                    run_id=backfill_run_id(info.logical_date)))
    if run_backwards:
        plan.runs.reverse()
    return plan


_UNFINISHED_RUN = frozenset(s.value for s in DAGRUN_UNFINISHED_STATES)
_ACTIVE_BACKFILL = frozenset(s.value for s in BACKFILL_ACTIVE_STATES)
_FINISHED_BACKFILL = frozenset(s.value for s in BACKFILL_FINISHED_STATES)


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
    The existing runs ``plan.joining`` lists join the backfill: those of ``plan.rerun``
    have their task instances cleared (``dag`` gives the tasks' retries), those of
    ``plan.taken_in`` are taken in as they are.

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
        state=BackfillState.QUEUED.value, total_runs=len(plan.runs) + len(plan.joining),
    )
    session.add(backfill)
    session.flush()
    if plan.joining:
        _take_existing(session, backfill, plan, dag, now or datetime.now(UTC))
    # schedulers that found no backfill to drive look again when this commits
    notify_backfill(session, backfill.id, plan.dag_id)
    log.info("Backfill %s of %s created: %d runs from %s to %s%s (max %d active)",
             backfill.id, plan.dag_id, len(plan.runs), plan.from_date.isoformat(),
             plan.to_date.isoformat(), ", backwards" if plan.run_backwards else "",
             max_active_runs)
    return backfill


def _take_existing(session: Session, backfill: Backfill, plan: BackfillPlan,
                   dag: DAG | None, now: datetime) -> None:
    """Clear the task instances of ``plan.rerun`` and hand the runs of ``plan.joining`` to
    the backfill. A run is decided afresh (``last_scheduling_decision`` NULL): the
    backfill's deadlock watch waits for that decision. A run taken in as it is is taken
    only if it is still unfinished and its backfill the one the plan saw (another
    backfill created meanwhile may have taken it)."""
    for existing in plan.joining:
        tis = list(session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == plan.dag_id,
                                       TaskInstance.run_id == existing.run_id,
                                       TaskInstance.task_id.in_(existing.to_clear))
            .execution_options(populate_existing=True))) if existing.to_clear else []
        if tis:
            clear_task_instances(session, tis, dag, now,
                                 reason=f"cleared by backfill {backfill.id}")
        stmt = update(DagRun).where(DagRun.dag_id == plan.dag_id,
                                    DagRun.run_id == existing.run_id)
        if not existing.to_clear:
            stmt = stmt.where(DagRun.state.in_(sorted(_UNFINISHED_RUN)),
                              DagRun.backfill_id.is_(None) if existing.backfill_id is None
                              else DagRun.backfill_id == existing.backfill_id)
        taken = session.execute(
            stmt.values(backfill_id=backfill.id, last_scheduling_decision=None)
            .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        if not taken:
            backfill.total_runs -= 1
            log.info("Backfill %s: run %s was taken by another backfill meanwhile",
                     backfill.id, existing.run_id)
        elif tis:
            log.info("Backfill %s: run %s joins it (%d task instances cleared)", backfill.id,
                     existing.run_id, len(tis))
        else:
            log.info("Backfill %s: run %s (%s) joins it as it is: %s", backfill.id,
                     existing.run_id, existing.state, existing.orphan)


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
    #: its unfinished runs (once it ended: the runs it left without a backfill)
    unfinished_runs: list[str] = field(default_factory=list)
    #: once it ended with runs unfinished: the command that resumes them
    resume: str | None = None
    #: once it ended: the runs of its range by state, whichever backfill (or none) they
    #: belong to
    range_runs_by_state: dict[str, int] = field(default_factory=dict)

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
    """The progress of backfill ``backfill_id`` (three queries, four once it ended), or
    ``None`` when there is no such backfill."""
    row = session.get(Backfill, backfill_id, populate_existing=True)
    if row is None:
        return None
    runs = session.execute(select(DagRun.run_id, DagRun.state)
                           .where(DagRun.backfill_id == backfill_id)
                           .order_by(DagRun.logical_date)).all()
    by_state: dict[str, int] = {}
    for run in runs:
        by_state[run.state] = by_state.get(run.state, 0) + 1
    unfinished = [r.run_id for r in runs if r.state in _UNFINISHED_RUN]
    tis = session.execute(
        select(TaskInstance.state, func.count())
        .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
              & (DagRun.run_id == TaskInstance.run_id))
        .where(DagRun.backfill_id == backfill_id).group_by(TaskInstance.state)
    ).all()
    ended = row.state in _FINISHED_BACKFILL
    return BackfillProgress(
        backfill_id=row.id, dag_id=row.dag_id, state=BackfillState(row.state),
        total_runs=row.total_runs, created_at=row.created_at, completed_at=row.completed_at,
        runs_by_state=by_state, tis_by_state={state: int(n) for state, n in tis},
        failed_runs=[r.run_id for r in runs if r.state == DagRunState.FAILED.value],
        reason=row.reason, unfinished_runs=unfinished,
        resume=resume_command(row) if unfinished and ended else None,
        range_runs_by_state=range_runs_by_state(session, row) if ended else {})


#: How a deadlock report (``backfill.reason``) begins.
DEADLOCK_PREFIX = "deadlock"


def range_runs_by_state(session: Session, backfill: Backfill) -> dict[str, int]:
    """How many runs of each state the DAG has in the backfill's range, whoever made them
    (this backfill, an earlier one, the schedule, a trigger)."""
    rows = session.execute(
        select(DagRun.state, func.count())
        .where(DagRun.dag_id == backfill.dag_id, DagRun.logical_date >= backfill.from_date,
               DagRun.logical_date <= backfill.to_date)
        .group_by(DagRun.state)).all()
    return {state: int(n) for state, n in rows}


def ended_how(backfill: Backfill) -> str:
    """``deadlocked``, or the ended backfill's state."""
    if backfill.reason is not None and backfill.reason.startswith(DEADLOCK_PREFIX):
        return "deadlocked"
    return str(backfill.state)


def resume_command(backfill: Backfill) -> str:
    """The ``squall dags backfill`` that takes in the runs ``backfill`` left unfinished: its
    range and options again, with ``--rerun-failed-tasks`` when it failed (the failed task
    instance that held the others back runs again once its cause is fixed)."""
    opts = backfill.options or {}
    args = ["squall", "dags", "backfill", backfill.dag_id, "-s",
            backfill.from_date.isoformat(), "-e", backfill.to_date.isoformat()]
    if backfill.state == BackfillState.FAILED.value or opts.get("rerun_failed_tasks"):
        args.append("--rerun-failed-tasks")
    if backfill.run_backwards:
        args.append("-B")
    for key, flag in (("task_regex", "-t"), ("pool", "--pool"),
                      ("delay_on_limit", "--delay-on-limit")):
        if opts.get(key):
            args += [flag, str(opts[key])]
    for key, flag in (("ignore_dependencies", "-i"), ("ignore_first_depends_on_past", "-I"),
                      ("mark_success", "-m")):
        if opts.get(key):
            args.append(flag)
    args += ["--max-active-runs", str(backfill.max_active_runs)]
    if backfill.conf is not None:
        args += ["-c", json.dumps(backfill.conf)]
    return shlex.join(args)


def ended_backfill_note(backfill: Backfill) -> str:
    """What an unfinished run of the ended ``backfill`` shows."""
    first = ("fix what held it back, then resume"
             if backfill.state == BackfillState.FAILED.value else "resume")
    return (f"backfill {backfill.id} ended ({ended_how(backfill)}) with this run unfinished "
            f"and no backfill follows it; {first} with: {resume_command(backfill)}")


def ended_backfill_notes(session: Session, dag_id: str,
                         run_ids: Collection[str]) -> dict[str, str]:
    """run_id -> :func:`ended_backfill_note` for those of ``run_ids`` that are unfinished
    and whose backfill ended (one query)."""
    if not run_ids:
        return {}
    rows = session.execute(
        select(DagRun.run_id, Backfill)
        .join(Backfill, Backfill.id == DagRun.backfill_id)
        .where(DagRun.dag_id == dag_id, DagRun.run_id.in_(list(run_ids)),
               DagRun.state.in_(sorted(_UNFINISHED_RUN)),
               Backfill.state.in_(sorted(_FINISHED_BACKFILL)))).all()
    return {run_id: ended_backfill_note(backfill) for run_id, backfill in rows}


def cancel_backfill(session: Session, backfill_id: int, *, now: datetime,
                    end_running: bool = False) -> list[str] | None:
    """Cancel a queued or running backfill: the scheduler creates no more of its runs.
    Those already created go on to finish, or with ``end_running`` are ended now, each
    marked failed as through the API (:func:`squall.runs.mark_run.mark_run`): their running
    and up_for_reschedule task instances are set failed (their supervisors stop them, every
    process included), the other unfinished ones skipped, and the runs failed.

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
    """Fail the backfill's unfinished runs as marking each failed does
    (:func:`squall.runs.mark_run.mark_run`: their rows locked first, in id order)."""
    runs = session.execute(
        select(DagRun.dag_id, DagRun.run_id)
        .where(DagRun.backfill_id == backfill_id,
               DagRun.state.in_([s.value for s in DAGRUN_UNFINISHED_STATES]))
        .order_by(DagRun.id)).all()
    lock_runs(session, [(dag_id, run_id) for dag_id, run_id in runs])
    why = f"backfill {backfill_id} was cancelled and its runs ended"
    return [run_id for dag_id, run_id in runs
            if mark_run(session, dag_id, run_id, DagRunState.FAILED, now=now, reason=why,
                        only_from=DAGRUN_UNFINISHED_STATES) is not None]
