"""The scheduler's backfill step: :func:`drive_backfills`, in each scheduler loop.

For each queued or running backfill (locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
two schedulers never drive the same one):

* it starts its queued runs (finished runs cleared when they joined it), oldest first,
  while it has fewer than ``max_active_runs`` running, and its oldest unfinished run
  whatever the limit, since later runs may wait for it (``depends_on_past``); the DAG's
  ``max_active_runs`` is not looked at (:func:`_start_queued`);
* it creates the next runs of its plan (:func:`squall.runs.backfill.plan_backfill`,
  computed afresh from the timetable and the runs the DAG has, only in a loop where it has
  room for a run or nothing unfinished) while it has fewer than
  ``max_active_runs`` unfinished runs; with ``delay_on_limit`` it waits that long after
  reaching the limit before creating the next one. The runs are created RUNNING with run
  type ``backfill`` and ``backfill_id``, shaped by the backfill's options
  (:class:`~squall.runs.backfill_scope.BackfillScope`: task selection, pool,
  ``mark_success``); from then on they are decided, queued and run like any other run,
  also when their DAG is paused;
* it marks the backfill ``success`` (or ``failed`` when one of its runs failed) once it has
  nothing left to create and every run of it is finished;
* it ends the backfill as ``failed`` with a deadlock report when it can make no more
  progress (:func:`blocked_task_instances`) for :data:`DEADLOCK_GRACE_SECONDS`: nothing of
  the DAG in flight, and each unfinished task instance of its runs waiting for something
  that cannot happen by itself (a failed past, a pool that does not exist). Its runs are
  left as they are: clearing or marking the blocking task instances lets them go on.

The caller commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from squall.common.db import is_postgres
from squall.common.errors import BackfillError, DagRunAlreadyExists, ParamValidationError
from squall.common.models import Backfill, DagRun, Pool, TaskInstance
from squall.common.state import (
    BACKFILL_ACTIVE_STATES,
    DAGRUN_UNFINISHED_STATES,
    BackfillState,
    DagRunState,
    DagRunType,
    TaskInstanceState,
)
from squall.runs.backfill import (
    PlannedRun,
    plan_backfill,
    range_run_infos,
)
from squall.runs.backfill_progress import DEADLOCK_PREFIX
from squall.runs.backfill_scope import BackfillScope
from squall.runs.run_creation import create_dag_run
from squall.scheduler.dag_runs import RunStepStats, SerializedDagCache
from squall.sdk.dag import DAG
from squall.sdk.operators.base import DEFAULT_QUEUE
from squall.sdk.params import params_for_run
from squall.sdk.timetables import DagRunInfo

log = logging.getLogger(__name__)

TI = TaskInstanceState

#: Most active backfills driven in one loop (oldest first).
MAX_BACKFILLS_PER_LOOP = 16
#: How long a backfill must have been unable to make progress before it is called
#: deadlocked (a few scheduler loops: a just-cleared run is decided within one).
DEADLOCK_GRACE_SECONDS = 5.0
#: How many blocked task instances a deadlock report names, and its longest length.
REPORT_LIMIT = 20
MAX_REPORT = 4000

_UNFINISHED = frozenset(s.value for s in DAGRUN_UNFINISHED_STATES)
#: States in which a task instance moves on by itself (a worker, a retry, a reschedule).
_MOVING_STATES = [s.value for s in (TI.QUEUED, TI.RUNNING, TI.RESTARTING, TI.UP_FOR_RETRY,
                                    TI.UP_FOR_RESCHEDULE)]


class RangeCache:
    """Each active backfill's schedule ticks (``range_run_infos``), kept by the scheduler
    between loops: walking a timetable over a long range costs milliseconds a tick, and a
    backfill's range and its DAG's schedule do not change (a new DAG version is a new
    key)."""

    def __init__(self) -> None:
        self._infos: dict[tuple[int, str | None], list[DagRunInfo]] = {}

    def get(self, backfill: Backfill, dag: DAG, dag_hash: str | None) -> list[DagRunInfo]:
        key = (backfill.id, dag_hash)
        infos = self._infos.get(key)
        if infos is None:
            infos = range_run_infos(dag, backfill.from_date, backfill.to_date)
            self._infos[key] = infos
        return infos

    def keep_only(self, backfill_ids: set[int]) -> None:
        """Forget the backfills that are no longer active."""
        for key in [k for k in self._infos if k[0] not in backfill_ids]:
            del self._infos[key]


def drive_backfills(session: Session, cache: SerializedDagCache, *, now: datetime,
                    default_queue: str = DEFAULT_QUEUE,
                    only_backfill_id: int | None = None,
                    ranges: RangeCache | None = None,
                    look_for_held: bool = False) -> RunStepStats:
    """The backfill step (see the module docstring); ``only_backfill_id`` limits it to one
    backfill (``squall dags backfill --local``); ``ranges`` keeps the backfills' ticks
    between calls. ``backfills_active`` in the result: a backfill was found, or, with
    ``look_for_held`` when none was free, another scheduler holds one (PostgreSQL: one
    more query, for a caller that skips the step while there is none)."""
    stats = RunStepStats()
    postgres = is_postgres(session)
    backfills = list(session.scalars(
        _active_backfills(postgres, only_backfill_id is not None),
        {"only_backfill_id": only_backfill_id} if only_backfill_id is not None else None))
    if ranges is not None and only_backfill_id is None:
        ranges.keep_only({b.id for b in backfills})
    if not backfills:
        if postgres and look_for_held and only_backfill_id is None:
            # none free: there may be some another scheduler holds (SKIP LOCKED)
            stats.backfills_active = bool(session.scalar(_ANY_ACTIVE))
        return stats
    stats.backfills_active = True
    dags = cache.get_many(session, {b.dag_id for b in backfills})
    all_runs = _runs_of(session, [b.id for b in backfills])
    for backfill in backfills:
        dag = dags.get(backfill.dag_id)
        if dag is None:
            log.warning("Backfill %s: DAG %s has no usable serialized DAG; waiting",
                        backfill.id, backfill.dag_id)
            stats.missing_dags.add(backfill.dag_id)
            continue
        runs = _start_queued(session, backfill, all_runs.get(backfill.id, []), now)
        run_states = [r.state for r in runs]
        unfinished = sum(1 for s in run_states if s in DAGRUN_UNFINISHED_STATES)
        room = _room(backfill, unfinished, now)
        planned_runs: list[PlannedRun] | None = None  # not planned: at its limit
        if room > 0 or unfinished == 0:
            try:
                infos = (ranges.get(backfill, dag, cache.hash_of(dag.dag_id))
                         if ranges is not None else None)
                planned_runs = plan_backfill(session, dag, backfill.from_date,
                                             backfill.to_date, infos=infos,
                                             run_backwards=backfill.run_backwards).runs
            except BackfillError as exc:
                _finish(backfill, BackfillState.FAILED, now, reason=str(exc))
                continue
        scope = BackfillScope.of(backfill.id, backfill.options)
        run_dag = scope.dag_for(dag)
        if planned_runs and room > 0:
            try:  # checked when it was asked for; the DAG's params may have changed since
                params_for_run(run_dag.params, backfill.conf)
            except ParamValidationError as exc:
                _finish(backfill, BackfillState.FAILED, now, reason=str(exc))
                continue
        created = 0
        for planned in (planned_runs or [])[:room]:
            try:
                run = create_dag_run(session, run_dag, run_type=DagRunType.BACKFILL,
                                     logical_date=planned.logical_date,
                                     data_interval=planned.data_interval,
                                     run_id=planned.run_id, conf=backfill.conf,
                                     state=DagRunState.RUNNING, now=now,
                                     default_queue=default_queue)
            except DagRunAlreadyExists as exc:
                log.info("Backfill %s: run not created: %s", backfill.id, exc)
                continue
            run.backfill_id = backfill.id
            if scope.mark_success:
                _mark_success(session, run, backfill.id, now)
            unfinished += 1
            created += 1
            stats.created += 1
            stats.started += 1
            run_states.append(DagRunState.RUNNING.value)
        if run_states and backfill.state == BackfillState.QUEUED:
            backfill.state = BackfillState.RUNNING.value
            log.info("Backfill %s of %s: running", backfill.id, backfill.dag_id)
        # every date of the range has a run (plan.runs was read before this loop's) and
        # none of this backfill's is unfinished: it is over
        if planned_runs == [] and unfinished == 0:
            failed = any(s == DagRunState.FAILED.value for s in run_states)
            _finish(backfill, BackfillState.FAILED if failed else BackfillState.SUCCESS, now)
        elif created:
            backfill.stalled_since = None
        else:
            _watch_for_deadlock(session, backfill, now, runs)
    session.flush()
    return stats


_ACTIVE_STATES = sorted(s.value for s in BACKFILL_ACTIVE_STATES)
#: whether any backfill is active, locked or not
_ANY_ACTIVE = select(exists().where(Backfill.state.in_(_ACTIVE_STATES)))
#: drive_backfills' query by (PostgreSQL, one backfill only), built on first use
_ACTIVE: dict[tuple[bool, bool], Any] = {}


def _active_backfills(postgres: bool, one: bool) -> Any:
    stmt = _ACTIVE.get((postgres, one))
    if stmt is None:
        stmt = (select(Backfill).where(Backfill.state.in_(_ACTIVE_STATES))
                .order_by(Backfill.id).limit(MAX_BACKFILLS_PER_LOOP)
                .execution_options(populate_existing=True))
        if one:
            stmt = stmt.where(Backfill.id == bindparam("only_backfill_id"))
        if postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        _ACTIVE[(postgres, one)] = stmt
    return stmt


def _start_queued(session: Session, backfill: Backfill, runs: list[BackfillRun],
                  now: datetime) -> list[BackfillRun]:
    """Start the backfill's queued runs (finished runs cleared when they joined it), oldest
    first, while it has fewer than ``max_active_runs`` running; its oldest unfinished run
    starts whatever the limit, since the later ones may wait for it (``depends_on_past``)
    and a run taken in may hold the limit. The DAG's ``max_active_runs`` is not looked at,
    as for the runs the backfill creates. ``runs`` as they are now."""
    unfinished = sorted((r for r in runs if r.state in _UNFINISHED),
                        key=lambda r: r.logical_date)
    if not any(r.state == DagRunState.QUEUED.value for r in unfinished):
        return runs
    running = sum(1 for r in unfinished if r.state == DagRunState.RUNNING.value)
    started: set[int] = set()
    for i, run in enumerate(unfinished):
        if run.state != DagRunState.QUEUED.value or (
                i > 0 and running >= backfill.max_active_runs):
            continue
        if session.execute(
            update(DagRun).where(DagRun.id == run.id,
                                 DagRun.state == DagRunState.QUEUED.value)
            .values(state=DagRunState.RUNNING.value, start_date=now, end_date=None,
                    last_scheduling_decision=None)
            .execution_options(synchronize_session=False)
        ).rowcount:  # type: ignore[attr-defined]
            log.info("Backfill %s: run %s started", backfill.id, run.run_id)
            started.add(run.id)
            running += 1
    return [replace(r, state=DagRunState.RUNNING.value, last_scheduling_decision=None)
            if r.id in started else r for r in runs]


def _room(backfill: Backfill, unfinished: int, now: datetime) -> int:
    """How many runs the backfill may create now: up to its ``max_active_runs``; none
    for ``delay_on_limit`` seconds after it last reached that limit."""
    room = backfill.max_active_runs - unfinished
    if room <= 0:
        if backfill.limit_reached_at is None:
            backfill.limit_reached_at = now
        return 0
    if backfill.limit_reached_at is not None:
        delay = float((backfill.options or {}).get("delay_on_limit") or 0)
        if now < backfill.limit_reached_at + timedelta(seconds=delay):
            return 0
        backfill.limit_reached_at = None
    return room


def _mark_success(session: Session, run: DagRun, backfill_id: int, now: datetime) -> None:
    """``--mark-success``: the new run's task instances are SUCCESS without running."""
    session.execute(
        update(TaskInstance)
        .where(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id,
               TaskInstance.state == TI.NONE.value)
        .values(state=TI.SUCCESS.value, start_date=now, end_date=now, duration=0.0,
                state_reason=f"marked success by backfill {backfill_id} (--mark-success); "
                "not run", updated_at=now)
        .execution_options(synchronize_session=False))


# --------------------------------------------------------------------------- deadlock


@dataclass(frozen=True)
class Blocked:
    """A task instance of a backfill run that cannot move on, and why."""

    run_id: str
    task_id: str
    state: str
    why: str

    def describe(self) -> str:
        return f"{self.task_id} in {self.run_id} ({self.state}): {self.why}"


@dataclass(frozen=True)
class BackfillRun:
    """What the backfill step reads of each run of a backfill."""

    run_id: str
    state: str
    last_scheduling_decision: datetime | None
    id: int
    logical_date: datetime


def blocked_task_instances(session: Session, backfill: Backfill,
                           runs: Sequence[BackfillRun] | None = None) -> list[Blocked] | None:
    """The backfill's blocked task instances when it can make no progress by itself, else
    ``None``.

    It can, when a running run of it is not yet decided, when any task instance of the DAG
    (of any run) is queued, running, waiting for a retry or a reschedule, or when one of
    its running runs has a scheduled task instance in a pool that exists (the critical
    section will queue it). Its queued runs are not looked at: they wait for a place
    under its ``max_active_runs``, which only its running runs can free
    (:func:`_start_queued` starts them, its oldest unfinished run at once). ``runs``: the
    backfill's runs as the caller read them (read here when not given)."""
    if runs is None:
        runs = _runs_of(session, [backfill.id]).get(backfill.id, [])
    runs = [r for r in runs if r.state == DagRunState.RUNNING.value]
    if not runs or any(r.last_scheduling_decision is None for r in runs):
        return None
    moving = session.scalar(
        select(func.count()).select_from(TaskInstance)
        .where(TaskInstance.dag_id == backfill.dag_id,
               TaskInstance.state.in_(_MOVING_STATES)))
    if moving:
        return None
    waiting = session.execute(
        select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.state,
               TaskInstance.pool, TaskInstance.state_reason)
        .where(TaskInstance.dag_id == backfill.dag_id,
               TaskInstance.run_id.in_([r.run_id for r in runs]),
               TaskInstance.state.in_([TI.NONE.value, TI.SCHEDULED.value]))
        .order_by(TaskInstance.run_id, TaskInstance.task_id)).all()
    if not waiting:
        return None  # every task instance finished: the next decision ends the run
    pools = set(session.scalars(select(Pool.pool)))
    if any(t.state == TI.SCHEDULED.value and t.pool in pools for t in waiting):
        return None
    return [Blocked(run_id=t.run_id, task_id=t.task_id, state=t.state,
                    why=t.state_reason or "waits for its upstream tasks") for t in waiting]


def _watch_for_deadlock(session: Session, backfill: Backfill, now: datetime,
                        runs: Sequence[BackfillRun]) -> None:
    blocked = blocked_task_instances(session, backfill, runs)
    if blocked is None:
        backfill.stalled_since = None
        return
    if backfill.stalled_since is None:
        backfill.stalled_since = now
        return
    if (now - backfill.stalled_since).total_seconds() < DEADLOCK_GRACE_SECONDS:
        return
    lines = [f"  - {b.describe()}" for b in blocked[:REPORT_LIMIT]]
    if len(blocked) > REPORT_LIMIT:
        lines.append(f"  - and {len(blocked) - REPORT_LIMIT} more")
    _finish(backfill, BackfillState.FAILED, now, reason=_clip(
        f"{DEADLOCK_PREFIX}: {len(blocked)} task instance(s) can never run:\n"
        + "\n".join(lines), limit=MAX_REPORT))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _runs_of(session: Session, backfill_ids: list[int]) -> dict[int, list[BackfillRun]]:
    """Each backfill's runs: one query serves the step and its deadlock watch."""
    out: dict[int, list[BackfillRun]] = {}
    for backfill_id, run_id, state, decided, pk, logical_date in session.execute(
        _RUNS_OF, {"backfill_ids": backfill_ids}).all():
        if backfill_id is not None:
            out.setdefault(backfill_id, []).append(
                BackfillRun(run_id, state, decided, pk, logical_date))
    return out


_RUNS_OF = (select(DagRun.backfill_id, DagRun.run_id, DagRun.state,
                   DagRun.last_scheduling_decision, DagRun.id, DagRun.logical_date)
            .where(DagRun.backfill_id.in_(bindparam("backfill_ids", expanding=True))))


def _finish(backfill: Backfill, state: BackfillState, now: datetime, *,
            reason: str | None = None) -> None:
    backfill.state = state.value
    backfill.completed_at = now
    backfill.stalled_since = None
    if reason is not None:
        backfill.reason = reason
        log.error("Backfill %s of %s: %s: %s", backfill.id, backfill.dag_id, state.value,
                  reason)
    else:
        log.info("Backfill %s of %s: %s", backfill.id, backfill.dag_id, state.value)
