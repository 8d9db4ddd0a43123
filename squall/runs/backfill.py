"""Backfills: checking what is asked for (:class:`BackfillOptions`), planning the runs of a
logical date range, recording the request and cancelling it. Following one is
:mod:`squall.runs.backfill_progress`; the scheduler's step that drives a backfill is
:mod:`squall.scheduler.backfill_driver`.

``squall dags backfill`` and ``POST /api/v1/backfills`` both hand a
:class:`BackfillOptions` to :func:`plan_requested` (which checks it, in one place, and
plans) and then to :func:`create_requested`: the same bad option gets the same error.

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

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pendulum
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from squall.common.errors import BackfillError, ParamValidationError
from squall.common.models import (
    Backfill,
    DagModel,
    DagRun,
    Pool,
    TaskInstance,
    lock_runs,
)
from squall.common.state import (
    BACKFILL_ACTIVE_STATES,
    DAGRUN_UNFINISHED_STATES,
    FAILED_LIKE_STATES,
    BackfillState,
    DagRunState,
    DagRunType,
)
from squall.common.wakeup import notify_backfill
from squall.runs.backfill_scope import FIRST_DATE_KEY, BackfillScope
from squall.runs.clear import clear_task_instances
from squall.runs.dag_shape import DagLike
from squall.runs.mark_run import mark_run
from squall.sdk.dag import DAG
from squall.sdk.params import params_for_run
from squall.sdk.timetables import DagRunInfo, DataInterval

log = logging.getLogger(__name__)

#: The most runs one backfill may plan (a guard against a minutely DAG over ten years).
MAX_BACKFILL_RUNS = 10_000

#: The options of ``squall dags backfill`` kept in ``backfill.options``, as Airflow names them.
OPTION_NAMES = ("mark_success", "rerun_failed_tasks", "reset_dagruns", "task_regex",
                "ignore_first_depends_on_past", "ignore_dependencies", "pool",
                "delay_on_limit")


@dataclass(frozen=True)
class BackfillOptions:
    """What a backfill is asked for, however it is asked (``squall dags backfill``,
    ``POST /api/v1/backfills``); :meth:`check` is the one place it is checked. The dates
    are timezone-aware; ``max_active_runs`` None is the DAG's."""

    from_date: datetime
    to_date: datetime
    run_backwards: bool = False
    max_active_runs: int | None = None
    conf: Mapping[str, Any] | None = None
    task_regex: str | None = None
    ignore_dependencies: bool = False
    ignore_first_depends_on_past: bool = False
    mark_success: bool = False
    pool: str | None = None
    delay_on_limit: float = 0.0
    rerun_failed_tasks: bool = False
    reset_dagruns: bool = False

    def check(self, session: Session, dag: DagLike) -> None:
        """Raise :class:`BackfillError` naming the first bad option (the range itself is
        checked by :func:`range_run_infos` when planning)."""
        if self.max_active_runs is not None and self.max_active_runs < 1:
            raise BackfillError(f"max_active_runs must be >= 1, got {self.max_active_runs}")
        if self.delay_on_limit < 0:
            raise BackfillError(f"delay_on_limit must be >= 0, got {self.delay_on_limit:g}")
        if self.conf is not None and not isinstance(self.conf, Mapping):
            raise BackfillError("conf must be a JSON object")
        try:  # each run validates them (create_dag_run), as Airflow's backfill does
            params_for_run(getattr(dag, "params", None), self.conf)
        except ParamValidationError as exc:
            raise BackfillError(str(exc)) from None
        if self.ignore_dependencies and not self.task_regex:
            raise BackfillError("ignore_dependencies needs task_regex (it leaves out the "
                                "upstream tasks of the selected ones)")
        if self.task_regex:
            try:
                pattern = re.compile(self.task_regex)
            except re.error as exc:
                raise BackfillError(f"task_regex {self.task_regex!r} is not a regular "
                                    f"expression: {exc}") from None
            if not any(pattern.search(tid) for tid in dag.task_dict):
                raise BackfillError(f"task_regex {self.task_regex!r} matches no task of DAG "
                                    f"{dag.dag_id} (tasks: {', '.join(sorted(dag.task_dict))})")
        if self.pool and session.scalar(select(Pool.id).where(Pool.pool == self.pool)) is None:
            raise BackfillError(f"pool {self.pool!r} does not exist (create it with `squall "
                                f"pools set {self.pool} SLOTS`)")

    @property
    def stored(self) -> dict[str, Any]:
        """The options kept in ``backfill.options`` (those set; :data:`OPTION_NAMES`)."""
        return {name: getattr(self, name) for name in OPTION_NAMES if getattr(self, name)}

    def task_ids(self, dag: DAG) -> set[str]:
        """The tasks of ``dag`` the backfill's runs hold."""
        return BackfillScope.of(0, self.stored).task_ids(dag)


def plan_requested(session: Session, dag: DAG, options: BackfillOptions) -> BackfillPlan:
    """Check ``options`` (:meth:`BackfillOptions.check`) and plan the backfill they ask for
    (:func:`plan_backfill`); :class:`BackfillError` for anything refused."""
    options.check(session, dag)
    return plan_backfill(session, dag, options.from_date, options.to_date,
                         run_backwards=options.run_backwards,
                         rerun_failed_tasks=options.rerun_failed_tasks,
                         reset_dagruns=options.reset_dagruns, task_ids=options.task_ids(dag))


def create_requested(session: Session, dag: DAG, options: BackfillOptions,
                     plan: BackfillPlan, *, now: datetime) -> Backfill:
    """Record the backfill ``plan`` (from :func:`plan_requested`) with ``options``
    (:func:`create_backfill`: it wakes the schedulers)."""
    return create_backfill(session, plan,
                           max_active_runs=options.max_active_runs or dag.max_active_runs,
                           conf=options.conf, options=options.stored, dag=dag, now=now)


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


# --------------------------------------------------------------------------- cancelling


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
