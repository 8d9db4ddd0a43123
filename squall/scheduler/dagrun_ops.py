"""DAG run bookkeeping on a database session, shared by the scheduler and ``squall dags test``.

* :func:`create_dag_run` inserts a run and its task instances (:func:`verify_integrity`);
* :func:`update_dag_run` applies trigger rules (marking ``skipped`` / ``upstream_failed``),
  lists the task instances that may be scheduled, and decides the run's state;
* :func:`schedule_tis` moves task instances to ``scheduled`` (compare-and-set, in bulk);
* :func:`handle_failure_state` / :func:`next_retry_at` decide what a failed try becomes.

Nothing here commits: the caller owns the transaction. The caller is also expected to be the
only one deciding for a given run at a time (the scheduler holds the run's row lock); the
state guards on every bulk UPDATE protect the changes of *other* writers (workers, the API)
from being overwritten, they do not make two deciders safe.

The ``dag`` given is anything shaped like :class:`squall.sdk.dag.DAG` (see
:class:`DagLike`): the DAG itself, or a stand-in rebuilt from its serialised form.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import pendulum
from sqlalchemy import ColumnElement, CursorResult, and_, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from squall.common.errors import DagNotFound, DagRunAlreadyExists
from squall.common.models import DagModel, DagRun, TaskInstance, utcnow
from squall.common.state import (
    DAGRUN_FINISHED_STATES,
    FAILED_LIKE_STATES,
    UNFINISHED_STATES,
    DagRunState,
    DagRunType,
    TaskInstanceState,
)
from squall.scheduler.readiness import (
    PreviousInstance,
    TriggerDecision,
    UpstreamCounts,
    evaluate_trigger_rule,
    past_wait_reason,
    retry_period_elapsed,
)
from squall.sdk.operators.base import DEFAULT_QUEUE
from squall.sdk.timetables import DataInterval, Timetable

log = logging.getLogger(__name__)

TI = TaskInstanceState

#: States from which a task instance can be moved to SCHEDULED.
SCHEDULABLE_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.NONE, TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE}
)
#: Unfinished states in which a task instance will move on without the scheduler deciding
#: anything more for it (handed out, running, or waiting for its retry / reschedule time).
IN_FLIGHT_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.SCHEDULED, TI.QUEUED, TI.RUNNING, TI.RESTARTING, TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE}
)
#: Unfinished states a timed-out run's task instances are skipped from (not the running ones).
TIMEOUT_SKIP_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.NONE, TI.SCHEDULED, TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE}
)
#: Leaf states that make a finished run a success (removed leaves are not looked at).
_LEAF_SUCCESS_STATES: frozenset[TaskInstanceState] = frozenset({TI.SUCCESS, TI.SKIPPED})

#: Most keys in one ``IN`` list (up to 3 bind parameters each; SQLite allows 32766 since
#: 3.32, 999 before).
_MAX_KEYS_PER_STATEMENT = 2000
_MAX_KEYS_OLD_SQLITE = 300
#: How often update_dag_run re-reads and re-decides after a racing writer won a guard.
_MAX_DECISION_ROUNDS = 3
#: The ``state_reason`` column's length.
_MAX_REASON = 2000


# --------------------------------------------------------------------------- DAG shape


class TaskLike(Protocol):
    """What this module reads of a task (a BaseOperator or its deserialised stand-in)."""

    @property
    def task_id(self) -> str: ...
    @property
    def upstream_task_ids(self) -> AbstractSet[str]: ...
    @property
    def trigger_rule(self) -> str: ...
    @property
    def retries(self) -> int: ...
    @property
    def depends_on_past(self) -> bool: ...
    @property
    def wait_for_downstream(self) -> bool: ...
    @property
    def priority_weight_total(self) -> int: ...
    @property
    def pool(self) -> str: ...
    @property
    def pool_slots(self) -> int: ...
    @property
    def queue(self) -> str | None: ...
    @property
    def executor_config(self) -> Mapping[str, Any] | None: ...
    @property
    def start_date(self) -> datetime | None: ...
    @property
    def end_date(self) -> datetime | None: ...
    @property
    def operator_name(self) -> str: ...


class RetryableTask(Protocol):
    def retry_delay_for(self, try_number: int) -> timedelta: ...


class DagLike(Protocol):
    """What this module reads of a DAG."""

    @property
    def dag_id(self) -> str: ...
    @property
    def task_dict(self) -> Mapping[str, TaskLike]: ...
    @property
    def dagrun_timeout(self) -> timedelta | None: ...
    @property
    def timetable(self) -> Timetable: ...
    @property
    def catchup(self) -> bool: ...


# --------------------------------------------------------------------------- results


@dataclass
class RunUpdate:
    """What :func:`update_dag_run` decided."""

    #: task instances that may be moved to SCHEDULED now, highest priority first
    schedulable: list[TaskInstance]
    #: the run's state after this update
    state: DagRunState
    #: the run reached SUCCESS or FAILED in this very update
    finished_now: bool = False
    #: why the run finished (or ``None``)
    reason: str | None = None
    #: task ids marked SKIPPED / UPSTREAM_FAILED / REMOVED by this update, by new state
    changed: dict[str, list[str]] = field(default_factory=dict)
    #: task id -> why ``depends_on_past`` holds it back (also its ``state_reason``)
    waiting_on_past: dict[str, str] = field(default_factory=dict)


@dataclass
class IntegrityChanges:
    """What :func:`verify_integrity` changed (task ids)."""

    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- creating runs


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
    :class:`DagNotFound` when the DAG has no ``dag`` row yet.
    """
    now = now or utcnow()
    run_type = DagRunType(str(run_type))
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
    tis = _load_tis(session, dag_run)
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
        _bulk_set(session, gone, expected={ti.state for ti in gone}, values={
            "state": TI.REMOVED.value, "state_reason": "task is no longer in the DAG"})
        changes.removed = sorted(ti.task_id for ti in gone)
    back = [ti for ti in tis if ti.task_id in dag.task_dict and ti.state == TI.REMOVED]
    if back:
        _bulk_set(session, back, expected={TI.REMOVED.value},
                  values={"state": TI.NONE.value, "state_reason": None})
        changes.restored = sorted(ti.task_id for ti in back)
    if changes.removed or changes.restored:
        log.info("DagRun %s %s: task instances removed %s, restored %s", dag_run.dag_id,
                 dag_run.run_id, changes.removed, changes.restored)
    return changes


# --------------------------------------------------------------------------- updating runs


def update_dag_run(
    session: Session,
    dag: DagLike,
    dag_run: DagRun,
    *,
    now: datetime,
    may_start: bool = True,
) -> RunUpdate:
    """Apply trigger rules to the run's task instances and decide the run's state.

    * A finished run is left alone. A queued run becomes running (``start_date = now``)
      when ``may_start`` (admission under ``max_active_runs`` is the caller's business);
      otherwise it stays queued and nothing else is looked at.
    * A running run past its ``dagrun_timeout`` fails (reason ``"timed out"``); its task
      instances that are not queued or running are marked skipped.
    * Otherwise every task instance in state ``none`` whose trigger rule can no longer be
      met is marked ``skipped`` / ``upstream_failed`` (cascading down chains within this
      call); those whose rule is met (and whose ``depends_on_past`` is satisfied) are
      returned as schedulable, as are ``up_for_retry`` / ``up_for_reschedule`` ones whose
      wait is over. Rows of tasks no longer in the DAG are marked ``removed``.
    * A task instance whose rule is met but which ``depends_on_past`` holds back waits, with
      the reason (which previous task instance, in what state) in its ``state_reason``; the
      run goes on waiting, as in Airflow 2, however the previous instance ended: it may be
      cleared or set to success.
    * When every task instance has finished the run succeeds if every leaf succeeded or was
      skipped, and fails if a leaf failed or is upstream_failed (Airflow 2's rule). When
      some have not finished but none can make progress (nothing schedulable, nothing in
      flight, nothing held back by ``depends_on_past``) it fails as deadlocked.

    One SELECT loads the run's task instances; state changes are a few bulk UPDATEs, each
    guarded by the state the row was seen in. The run's own changes are left to the flush.
    """
    state = DagRunState(dag_run.state)
    if state in DAGRUN_FINISHED_STATES:
        return RunUpdate(schedulable=[], state=state)
    if state == DagRunState.QUEUED and not may_start:
        return RunUpdate(schedulable=[], state=state)
    # read first, so that autoflush does not write the run twice
    tis = _load_tis(session, dag_run)
    if state == DagRunState.QUEUED:
        dag_run.state = DagRunState.RUNNING.value
        dag_run.start_date = now
        dag_run.end_date = None
        log.info("DagRun %s %s: running", dag_run.dag_id, dag_run.run_id)
    dag_run.last_scheduling_decision = now
    timeout = dag.dagrun_timeout
    if timeout is not None and dag_run.start_date is not None and (
        now - dag_run.start_date > timeout
    ):
        return _time_out(session, dag_run, tis, now)

    changed: dict[str, list[str]] = {}
    plan = _Plan()
    for _ in range(_MAX_DECISION_ROUNDS):
        plan = _decide(session, dag, dag_run, tis, now)
        if _apply(session, plan, now, changed):
            break
        log.info("DagRun %s %s: task instances changed under us; deciding again",
                 dag_run.dag_id, dag_run.run_id)
        tis = _load_tis(session, dag_run)
    else:
        # still racing: report nothing schedulable this time and keep the run running
        return RunUpdate(schedulable=[], state=DagRunState.RUNNING, changed=changed)

    final, reason = _run_outcome(dag, dag_run, tis, plan)
    if final is None:
        _record_past_waits(session, plan.waiting_on_past, now)
        return RunUpdate(schedulable=plan.schedulable, state=DagRunState.RUNNING,
                         changed=changed, waiting_on_past={
                             ti.task_id: why for ti, why in plan.waiting_on_past})
    _finish(dag_run, final, now)
    log.info("DagRun %s %s: %s (%s)", dag_run.dag_id, dag_run.run_id, final.value, reason)
    return RunUpdate(schedulable=[], state=final, finished_now=True, reason=reason,
                     changed=changed)


@dataclass
class _Plan:
    """What one round of :func:`_decide` wants: new states and the schedulable instances."""

    #: new state -> task instances to move there (with the states they are expected in)
    moves: dict[TaskInstanceState, list[TaskInstance]] = field(default_factory=dict)
    schedulable: list[TaskInstance] = field(default_factory=list)
    #: held back by depends_on_past, and why: a wait, not a deadlock
    waiting_on_past: list[tuple[TaskInstance, str]] = field(default_factory=list)


def _decide(session: Session, dag: DagLike, dag_run: DagRun, tis: Sequence[TaskInstance],
            now: datetime) -> _Plan:
    plan = _Plan()
    tasks = dag.task_dict
    by_task = {ti.task_id: ti for ti in tis}
    # the states as they will be after this update's own changes
    states: dict[str, str] = {ti.task_id: ti.state for ti in tis}

    orphans = [ti for ti in tis if ti.task_id not in tasks and ti.state != TI.REMOVED]
    if orphans:
        plan.moves[TI.REMOVED] = orphans
        for ti in orphans:
            states[ti.task_id] = TI.REMOVED.value

    downstream = _downstream_map(tasks)
    candidates: list[TaskInstance] = []
    # In topological order every upstream's state is final for this call before its
    # downstreams are looked at, so a single pass reaches the fixed point: a skip or an
    # upstream_failed cascades down a whole chain.
    for task_id in _topological_order(tasks, downstream):
        found = by_task.get(task_id)
        if found is None:
            continue
        ti = found
        current = ti.state
        if current not in SCHEDULABLE_STATES:
            continue
        task = tasks[task_id]
        counts = UpstreamCounts.from_states(states.get(up) for up in task.upstream_task_ids)
        decision = evaluate_trigger_rule(task.trigger_rule, counts)
        final_state = decision.final_state
        if final_state is not None:
            if current == TI.NONE:
                plan.moves.setdefault(final_state, []).append(ti)
                states[task_id] = final_state.value
            continue
        if decision is not TriggerDecision.READY:
            continue
        if current != TI.NONE and not retry_period_elapsed(ti.next_retry_at, now):
            continue
        candidates.append(ti)

    plan.schedulable = _filter_depends_on_past(session, dag, dag_run, candidates, downstream,
                                               plan)
    plan.schedulable.sort(key=lambda t: (-t.priority_weight, t.task_id))
    return plan


def _filter_depends_on_past(session: Session, dag: DagLike, dag_run: DagRun,
                            candidates: list[TaskInstance],
                            downstream: Mapping[str, AbstractSet[str]],
                            plan: _Plan) -> list[TaskInstance]:
    """The candidates ``depends_on_past`` lets run; the others go to ``plan.waiting_on_past``.

    The previous run is Airflow 2's: the latest run of the DAG with an earlier logical
    date, leaving out manual runs when the DAG catches up (``catchup``).
    """
    tasks = dag.task_dict
    if not any(tasks[ti.task_id].depends_on_past for ti in candidates):
        return candidates
    stmt = (
        select(DagRun.run_id, DagRun.logical_date)
        .where(DagRun.dag_id == dag_run.dag_id, DagRun.logical_date < dag_run.logical_date)
        .order_by(DagRun.logical_date.desc())
        .limit(1)
    )
    if dag.catchup:
        stmt = stmt.where(DagRun.run_type != DagRunType.MANUAL.value)
    previous = session.execute(stmt).first()
    if previous is None:
        return candidates
    previous_states: dict[str, str] = {
        row.task_id: row.state
        for row in session.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == previous.run_id,
            )
        )
    }
    kept: list[TaskInstance] = []
    for ti in candidates:
        task = tasks[ti.task_id]
        if not task.depends_on_past:
            kept.append(ti)
            continue
        why = past_wait_reason(
            PreviousInstance(
                dag_id=dag_run.dag_id, task_id=ti.task_id, run_id=previous.run_id,
                logical_date=previous.logical_date, state=previous_states.get(ti.task_id),
                downstream_states={d: previous_states.get(d)
                                   for d in downstream.get(ti.task_id, ())},
            ),
            wait_for_downstream=task.wait_for_downstream, task_start_date=task.start_date,
        )
        if why is None:
            kept.append(ti)
        else:
            plan.waiting_on_past.append((ti, why))
    return kept


def _record_past_waits(session: Session, waits: Sequence[tuple[TaskInstance, str]],
                       now: datetime) -> None:
    """Write why each task instance waits on the past into its ``state_reason``, when that
    changed (guarded by the state it was seen in; a racing writer wins)."""
    for ti, why in waits:
        why = why[:_MAX_REASON]
        if ti.state_reason == why:
            continue
        if _bulk_set(session, [ti], expected={ti.state}, values={"state_reason": why},
                     now=now):
            log.info("TaskInstance %s: waits (%s)", ti.key, why)


def _apply(session: Session, plan: _Plan, now: datetime,
           changed: dict[str, list[str]]) -> bool:
    """Write the plan's state changes; False when a guard lost to another writer."""
    all_moved = True
    for new_state, tis in plan.moves.items():
        if new_state == TI.REMOVED:
            values: dict[str, Any] = {"state": new_state.value,
                                      "state_reason": "task is no longer in the DAG"}
            expected = {ti.state for ti in tis}
        else:
            values = {"state": new_state.value, "start_date": now, "end_date": now,
                      "duration": 0.0, "state_reason": _TRIGGER_REASONS[new_state]}
            expected = {TI.NONE.value}
        moved = _bulk_set(session, tis, expected=expected, values=values, now=now)
        if moved == len(tis):
            changed.setdefault(new_state.value, []).extend(ti.task_id for ti in tis)
        else:
            all_moved = False
    return all_moved


_TRIGGER_REASONS: dict[TaskInstanceState, str] = {
    TI.SKIPPED: "skipped by its trigger rule (upstream outcome)",
    TI.UPSTREAM_FAILED: "an upstream task failed",
}


def _run_outcome(dag: DagLike, dag_run: DagRun, tis: Sequence[TaskInstance],
                 plan: _Plan) -> tuple[DagRunState | None, str | None]:
    """The run's final state and why, or ``(None, None)`` while it goes on."""
    unfinished = [ti for ti in tis if ti.state in UNFINISHED_STATES]
    if not unfinished:
        leaves = _leaf_ids(dag.task_dict)
        leaf_tis = [ti for ti in tis if ti.task_id in leaves and ti.state != TI.REMOVED]
        failed = sorted(ti.task_id for ti in leaf_tis if ti.state in FAILED_LIKE_STATES)
        if failed:
            return DagRunState.FAILED, f"task failure: {', '.join(failed)}"
        if all(ti.state in _LEAF_SUCCESS_STATES for ti in leaf_tis):
            return DagRunState.SUCCESS, None
        odd = sorted(f"{ti.task_id}={ti.state}" for ti in leaf_tis
                     if ti.state not in _LEAF_SUCCESS_STATES)
        return DagRunState.FAILED, f"leaves in unexpected states: {', '.join(odd)}"
    if plan.schedulable or plan.waiting_on_past:
        return None, None
    if any(ti.state in IN_FLIGHT_STATES for ti in unfinished):
        return None, None
    stuck = sorted(ti.task_id for ti in unfinished)
    return (DagRunState.FAILED,
            f"deadlock: no task instance can make progress ({_short_list(stuck)} waiting)")


def _time_out(session: Session, dag_run: DagRun, tis: Sequence[TaskInstance],
              now: datetime) -> RunUpdate:
    to_skip = [ti for ti in tis if ti.state in TIMEOUT_SKIP_STATES]
    changed: dict[str, list[str]] = {}
    if to_skip:
        _bulk_set(session, to_skip, expected=TIMEOUT_SKIP_STATES, values={
            "state": TI.SKIPPED.value, "end_date": now, "state_reason": "the DAG run timed out",
        }, now=now)
        changed[TI.SKIPPED.value] = sorted(ti.task_id for ti in to_skip)
    _finish(dag_run, DagRunState.FAILED, now)
    log.warning("DagRun %s %s: timed out (started %s); %d task instance(s) skipped",
                dag_run.dag_id, dag_run.run_id, dag_run.start_date, len(to_skip))
    return RunUpdate(schedulable=[], state=DagRunState.FAILED, finished_now=True,
                     reason="timed out", changed=changed)


def _finish(dag_run: DagRun, state: DagRunState, now: datetime) -> None:
    dag_run.state = state.value
    dag_run.end_date = now


# --------------------------------------------------------------------------- scheduling


def schedule_tis(session: Session, tis: Sequence[TaskInstance], *, now: datetime) -> int:
    """Move task instances to SCHEDULED if each is still in the state it was seen in.

    ``none`` and ``up_for_retry`` start a new try (``try_number + 1``); ``up_for_reschedule``
    continues the same try. The ``state_reason`` (why it waited, or how the last try
    ended) is cleared. One UPDATE per current state (and per chunk of a few thousand
    keys), each ``WHERE <key> IN (...) AND state = <that state>``. Returns how many moved;
    the moved objects are updated in place, and the ones a racing writer changed are
    expired so that they are read again on next access.
    """
    by_state: dict[str, list[TaskInstance]] = {}
    for ti in tis:
        if ti.state not in SCHEDULABLE_STATES:
            log.warning("%s is %s, not schedulable; left alone", ti.key, ti.state)
            continue
        by_state.setdefault(ti.state, []).append(ti)
    moved_total = 0
    for state, group in by_state.items():
        new_try = state != TI.UP_FOR_RESCHEDULE
        values: dict[str, Any] = {"state": TI.SCHEDULED.value, "next_retry_at": None,
                                  "state_reason": None, "updated_at": now}
        if new_try:
            values["try_number"] = TaskInstance.try_number + 1
        for chunk in _chunks(group, _chunk_size(session)):
            moved_total += _schedule_chunk(session, chunk, state, values, new_try)
    if moved_total:
        log.debug("scheduled %d of %d task instance(s)", moved_total, len(tis))
    return moved_total


def _schedule_chunk(session: Session, chunk: Sequence[TaskInstance], state: str,
                    values: dict[str, Any], new_try: bool) -> int:
    stmt = (
        update(TaskInstance)
        .where(_keys_clause(chunk), TaskInstance.state == str(state))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    plain = {k: v for k, v in values.items() if k != "try_number"}
    if _supports_update_returning(session):
        rows = session.execute(
            stmt.returning(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id,
                           TaskInstance.try_number)
        ).all()
        tries = {(r.dag_id, r.run_id, r.task_id): r.try_number for r in rows}
        for ti in chunk:
            key = (ti.dag_id, ti.run_id, ti.task_id)
            if key in tries:
                _mirror(ti, {**plain, "try_number": tries[key]})
            else:
                session.expire(ti)
        return len(rows)
    moved = _rowcount(session.execute(stmt))
    if moved == len(chunk):
        for ti in chunk:
            _mirror(ti, {**plain, "try_number": ti.try_number + 1 if new_try
                         else ti.try_number})
    else:
        for ti in chunk:
            session.expire(ti)
    return moved


# --------------------------------------------------------------------------- failures


def handle_failure_state(ti_try_number: int, max_tries: int) -> TaskInstanceState:
    """What failed try ``ti_try_number`` becomes: retried while ``try_number <= max_tries``."""
    return TI.UP_FOR_RETRY if ti_try_number <= max_tries else TI.FAILED


def next_retry_at(task: RetryableTask, try_number: int, end_date: datetime) -> datetime:
    """When the try after failed try ``try_number`` (ended at ``end_date``) may start."""
    return end_date + task.retry_delay_for(try_number)


# --------------------------------------------------------------------------- helpers


def _load_tis(session: Session, dag_run: DagRun) -> list[TaskInstance]:
    """Every task instance of the run, in one query, refreshed from the database."""
    return list(session.scalars(
        select(TaskInstance)
        .where(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
        .execution_options(populate_existing=True)
    ))


def _bulk_set(session: Session, tis: Sequence[TaskInstance], *, expected: Collection[str],
              values: dict[str, Any], now: datetime | None = None) -> int:
    """``UPDATE task_instance SET values WHERE key IN tis AND state IN expected``.

    Returns how many rows changed. When every row changed, the objects get the new values
    (without being marked dirty); otherwise they are expired, to be read again.
    """
    values = {**values, "updated_at": now or utcnow()}
    moved = 0
    for chunk in _chunks(tis, _chunk_size(session)):
        stmt = (
            update(TaskInstance)
            .where(_keys_clause(chunk), TaskInstance.state.in_(sorted(str(s) for s in expected)))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        count = _rowcount(session.execute(stmt))
        moved += count
        for ti in chunk:
            if count == len(chunk):
                _mirror(ti, values)
            else:
                session.expire(ti)
    return moved


def _mirror(ti: TaskInstance, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        set_committed_value(ti, name, value)


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _keys_clause(tis: Sequence[TaskInstance]) -> ColumnElement[bool]:
    """``key IN (...)`` for task instances: by task_id when they share one run."""
    runs = {(ti.dag_id, ti.run_id) for ti in tis}
    if len(runs) == 1:
        dag_id, run_id = next(iter(runs))
        return and_(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
                    TaskInstance.task_id.in_(sorted({ti.task_id for ti in tis})))
    return tuple_(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id).in_(
        sorted({(ti.dag_id, ti.run_id, ti.task_id) for ti in tis})
    )


def _chunks(items: Sequence[TaskInstance], size: int) -> Iterator[Sequence[TaskInstance]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _chunk_size(session: Session) -> int:
    dialect = session.get_bind(mapper=TaskInstance).dialect
    if dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 32):
        return _MAX_KEYS_OLD_SQLITE
    return _MAX_KEYS_PER_STATEMENT


def _supports_update_returning(session: Session) -> bool:
    dialect = session.get_bind(mapper=TaskInstance).dialect
    if dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        return False
    return bool(getattr(dialect, "update_returning", False))


def _downstream_map(tasks: Mapping[str, TaskLike]) -> dict[str, set[str]]:
    downstream: dict[str, set[str]] = {task_id: set() for task_id in tasks}
    for task_id, task in tasks.items():
        for up in task.upstream_task_ids:
            if up in downstream:
                downstream[up].add(task_id)
    return downstream


def _topological_order(tasks: Mapping[str, TaskLike],
                       downstream: Mapping[str, AbstractSet[str]]) -> list[str]:
    indegree = {tid: sum(1 for up in t.upstream_task_ids if up in tasks)
                for tid, t in tasks.items()}
    ready = sorted((tid for tid, n in indegree.items() if n == 0), reverse=True)
    order: list[str] = []
    while ready:
        tid = ready.pop()
        order.append(tid)
        for down in sorted(downstream.get(tid, ()), reverse=True):
            indegree[down] -= 1
            if indegree[down] == 0:
                ready.append(down)
    if len(order) < len(tasks):  # a cycle (a DAG that was never validated): best effort
        seen = set(order)
        order.extend(sorted(tid for tid in tasks if tid not in seen))
    return order


def _leaf_ids(tasks: Mapping[str, TaskLike]) -> set[str]:
    has_downstream = {up for task in tasks.values() for up in task.upstream_task_ids}
    return {tid for tid in tasks if tid not in has_downstream}


def _short_list(items: Iterable[str], limit: int = 10) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f", ... ({len(items)} in all)"
    return text
