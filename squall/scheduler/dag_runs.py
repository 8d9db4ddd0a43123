"""The scheduler's DAG-run steps: create due runs (scheduled and dataset-triggered), start
queued ones, decide running ones.

Both steps work on a session the caller commits. On PostgreSQL the rows a step works on are
locked ``FOR UPDATE SKIP LOCKED`` (``dag`` rows for creation, ``dag_run`` rows for
deciding), so with several schedulers each row is handled by one of them at a time and the
others move on to the next rows instead of waiting.

``max_active_runs``: a scheduled run is created (QUEUED) only while the DAG has fewer than
``max_active_runs`` QUEUED + RUNNING runs, so catch-up never piles up runs ahead of need;
a QUEUED run (created here, or triggered by hand, which is never refused) is started only
while the DAG has fewer than ``max_active_runs`` RUNNING runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pendulum
from sqlalchemy import ColumnElement, Integer, bindparam, func, or_, select
from sqlalchemy.orm import Session, aliased

from squall.common.db import is_postgres
from squall.common.errors import DagRunAlreadyExists
from squall.common.models import (
    DagModel,
    DagRun,
    SerializedDagModel,
    TaskInstance,
    TaskInstanceKey,
)
from squall.common.state import (
    DAGRUN_UNFINISHED_STATES,
    RETRY_WAIT_STATES,
    SIGNATURE_STATES,
    DagRunState,
    DagRunType,
)
from squall.dag_processing.serialization import SerializationError, deserialize_dag
from squall.execution.callbacks import CallbackKind, enqueue_callback
from squall.runs.backfill_scope import BackfillScope, load_scopes
from squall.runs.dataset_runs import create_dataset_triggered_runs
from squall.runs.run_creation import create_dag_run
from squall.runs.ti_updates import schedule_tis
from squall.scheduler.decisions import update_dag_run
from squall.scheduler.watchdog import tries_over_in
from squall.sdk.dag import DAG
from squall.sdk.operators.base import DEFAULT_QUEUE
from squall.sdk.timetables import DataInterval

log = logging.getLogger(__name__)

#: Most DAGs whose due runs are created in one loop.
MAX_DAGS_TO_CREATE_PER_LOOP = 64
#: Most QUEUED and most RUNNING runs looked at in one loop (least recently decided first).
MAX_RUNS_PER_LOOP = 64


class SerializedDagCache:
    """Deserialized DAGs by dag_id, kept across loops and rebuilt when their hash changes.

    The first :meth:`get_many` of a loop (after :meth:`new_loop`) for a dag_id checks its
    hash: one query for all the ids asked for, and one more for the data of the DAGs that
    are new or changed; later calls in the same loop answer from memory.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[str, DAG]] = {}
        self._broken: dict[str, str] = {}  # dag_id -> hash that failed to deserialize
        self._checked: set[str] = set()  # dag_ids whose hash was checked this loop

    def new_loop(self) -> None:
        self._checked.clear()

    def hash_of(self, dag_id: str) -> str | None:
        """The hash of the version of ``dag_id`` held, if any."""
        entry = self._by_id.get(dag_id)
        return entry[0] if entry is not None else None

    def get_many(self, session: Session, dag_ids: Iterable[str]) -> dict[str, DAG]:
        ids = set(dag_ids)
        unchecked = sorted(ids - self._checked)
        if unchecked:
            self._refresh(session, unchecked)
        return {d: self._by_id[d][1] for d in ids if d in self._by_id}

    def _refresh(self, session: Session, ids: list[str]) -> None:
        hashes: dict[str, str] = {
            dag_id: dag_hash for dag_id, dag_hash in session.execute(
                _statements().dag_hashes, {"dag_ids": ids}).all()
        }
        self._checked.update(ids)
        for gone in set(ids) - set(hashes):
            self._by_id.pop(gone, None)
        stale = [d for d, h in hashes.items()
                 if (d not in self._by_id or self._by_id[d][0] != h)
                 and self._broken.get(d) != h]
        for d, h in hashes.items():
            if d in self._by_id and self._by_id[d][0] != h:
                del self._by_id[d]
        if not stale:
            return
        for dag_id, dag_hash, data in session.execute(
            select(SerializedDagModel.dag_id, SerializedDagModel.dag_hash,
                   SerializedDagModel.data).where(SerializedDagModel.dag_id.in_(stale))
        ).all():
            try:
                self._by_id[dag_id] = (dag_hash, deserialize_dag(data))
                self._broken.pop(dag_id, None)
            except SerializationError as exc:
                log.error("DAG %s: cannot rebuild it from serialized_dag: %s", dag_id, exc)
                self._broken[dag_id] = dag_hash


#: A running run whose task instances show no change is still decided again this often
#: (seconds): for what time alone changes (``dagrun_timeout``, ``depends_on_past`` on an
#: earlier run, a DAG's new version).
REDECIDE_AFTER_SECONDS = 2.0
#: :data:`SIGNATURE_STATES` as the query's ``IN`` list.
_SIGNATURE_STATES = sorted(s.value for s in SIGNATURE_STATES)


class RunDecisionMemo:
    """What each running run looked like when this scheduler last decided it, so that a
    loop decides only the runs whose task instances changed since (ADR 10).

    A run's signature is, per state that can unblock something (finished, up_for_retry,
    up_for_reschedule), how many of its task instances are in it and their latest
    ``updated_at``: one grouped query for all running runs. A run is decided when its
    signature or its DAG's version changed, when a retry or reschedule wait is over, when
    its ``last_scheduling_decision`` is NULL (a finished run set back to running), and at
    least every :data:`REDECIDE_AFTER_SECONDS`.
    """

    def __init__(self, redecide_after: float = REDECIDE_AFTER_SECONDS) -> None:
        self.redecide_after = redecide_after
        self._seen: dict[int, tuple[Any, str | None, datetime]] = {}
        self._pending: dict[int, Any] = {}  # the signatures read by the last due()
        self.running_runs = 0  # how many running runs the last due() saw

    def due(self, session: Session, cache: SerializedDagCache, *, now: datetime,
            limit: int) -> list[int]:
        """The ids of the running runs (of unpaused DAGs, or backfill runs) to decide this
        loop, least recently decided first, at most ``limit``."""
        runs = session.execute(_statements().running_runs).all()
        self.running_runs = len(runs)
        if not runs:
            self._seen.clear()
            return []
        groups: dict[int, list[tuple[str, int, Any]]] = {}
        retry_due: set[int] = set()
        for run_id, state, count, latest, next_retry in session.execute(
            _statements().signatures
        ).all():
            groups.setdefault(run_id, []).append((state, int(count), latest))
            if state in RETRY_WAIT_STATES and next_retry is not None and _aware(next_retry) <= now:
                retry_due.add(run_id)
        due: list[tuple[datetime, int]] = []
        alive: set[int] = set()
        for run_id, dag_id, last in runs:
            alive.add(run_id)
            seen = self._seen.get(run_id)
            # no last decision: never decided, or handed back (a finished run reopened
            # by squall.runs.mark): decide it whatever the memo says
            if (seen is None or last is None or run_id in retry_due
                    or seen[0] != frozenset(groups.get(run_id, ()))
                    or seen[1] != cache.hash_of(dag_id)
                    or (now - seen[2]).total_seconds() >= self.redecide_after):
                due.append((_aware(last) if last is not None else _EPOCH, run_id))
        for gone in set(self._seen) - alive:
            del self._seen[gone]
        due.sort()
        self._pending = {run_id: frozenset(groups.get(run_id, ())) for _, run_id in due}
        return [run_id for _, run_id in due[:limit]]

    def decided(self, run: DagRun, cache: SerializedDagCache, now: datetime) -> None:
        signature = self._pending.get(run.id)
        if signature is not None:
            self._seen[run.id] = (signature, cache.hash_of(run.dag_id), now)


_EPOCH = pendulum.datetime(1970, 1, 1, tz="UTC")


def not_paused_or_backfill() -> ColumnElement[bool]:
    """The run's DAG (``DagModel`` joined) is not paused, or the run is a backfill's
    (created by one, or taken in by ``--rerun-failed-tasks`` / ``--reset-dagruns``): a
    paused DAG's backfill runs still go on (pausing stops the schedule only)."""
    return or_(DagModel.is_paused.is_(False), DagRun.backfill_id.is_not(None))


@dataclass(frozen=True)
class _Statements:
    """The statements every loop runs, built once (:func:`_statements`) with bind
    parameters: a loop binds its values and executes, without building a statement and
    its cache key again."""

    #: the running runs the memo looks at (of unpaused DAGs, or backfill runs)
    running_runs: Any
    #: per running run and signature state: count, latest updated_at, earliest retry
    signatures: Any
    #: ``run_ids`` that are still RUNNING (the ``_locked`` one: FOR UPDATE SKIP LOCKED)
    runs_by_id: Any
    runs_by_id_locked: Any
    #: runs of ``count_dag_ids`` in ``count_states``, by dag_id
    count_runs: Any
    #: the serialized DAG hashes of ``dag_ids``
    dag_hashes: Any


_STATEMENTS: _Statements | None = None


def _statements() -> _Statements:
    global _STATEMENTS
    if _STATEMENTS is None:
        runs_by_id = (
            select(DagRun)
            .where(DagRun.id.in_(bindparam("run_ids", expanding=True)),
                   DagRun.state == DagRunState.RUNNING.value)
            .execution_options(populate_existing=True))
        _STATEMENTS = _Statements(
            running_runs=(
                select(DagRun.id, DagRun.dag_id, DagRun.last_scheduling_decision)
                .join(DagModel, DagModel.dag_id == DagRun.dag_id)
                .where(DagRun.state == DagRunState.RUNNING.value, not_paused_or_backfill())),
            signatures=(
                select(DagRun.id, TaskInstance.state, func.count(),
                       func.max(TaskInstance.updated_at), func.min(TaskInstance.next_retry_at))
                .join(TaskInstance, (TaskInstance.dag_id == DagRun.dag_id)
                      & (TaskInstance.run_id == DagRun.run_id))
                .where(DagRun.state == DagRunState.RUNNING.value,
                       TaskInstance.state.in_(_SIGNATURE_STATES))
                .group_by(DagRun.id, TaskInstance.state)),
            runs_by_id=runs_by_id,
            runs_by_id_locked=runs_by_id.with_for_update(skip_locked=True),
            count_runs=(
                select(DagRun.dag_id, func.count())
                .where(DagRun.dag_id.in_(bindparam("count_dag_ids", expanding=True)),
                       DagRun.state.in_(bindparam("count_states", expanding=True)))
                .group_by(DagRun.dag_id)),
            dag_hashes=(
                select(SerializedDagModel.dag_id, SerializedDagModel.dag_hash)
                .where(SerializedDagModel.dag_id.in_(bindparam("dag_ids", expanding=True)))),
        )
    return _STATEMENTS


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=pendulum.UTC)


@dataclass
class RunStepStats:
    created: int = 0
    started: int = 0
    finished: int = 0
    tis_scheduled: int = 0
    #: QUEUED and RUNNING runs of unpaused DAGs seen (with a memo: all of them)
    active_runs: int = 0
    #: dag_ids that have due or active runs but no usable serialized DAG
    missing_dags: set[str] = field(default_factory=set)
    #: Celery task ids of ``in_flight`` whose try the decided runs show over
    tries_over: list[str] = field(default_factory=list)
    #: (the backfill step) an active backfill was found (with ``look_for_held``, also
    #: one another scheduler holds)
    backfills_active: bool = False


#: the tries an executor tracks, by run: (dag_id, run_id) -> task id -> (Celery task id,
#: try number) pairs (see :func:`in_flight_by_run`)
InFlight = Mapping[tuple[str, str], Mapping[str, Sequence[tuple[str, int]]]]


def in_flight_by_run(running: Mapping[str, tuple[TaskInstanceKey, int]]
                     ) -> dict[tuple[str, str], dict[str, list[tuple[str, int]]]]:
    """An executor's ``running`` (Celery task id -> (key, try number)) by run and task."""
    by_run: dict[tuple[str, str], dict[str, list[tuple[str, int]]]] = {}
    for ext_id, (key, try_number) in running.items():
        by_run.setdefault((key.dag_id, key.run_id), {}).setdefault(key.task_id, []).append(
            (ext_id, try_number))
    return by_run


#: :func:`create_due_dag_runs`'s query, built once (each loop binds ``due_now``); on
#: PostgreSQL the DAG rows are locked ``FOR UPDATE SKIP LOCKED``
_DUE_DAGS = (
    select(DagModel)
    .where(DagModel.is_active.is_(True), DagModel.is_paused.is_(False),
           DagModel.next_dagrun_create_after.is_not(None),
           DagModel.next_dagrun_create_after <= bindparam("due_now"))
    .order_by(DagModel.next_dagrun_create_after, DagModel.dag_id)
    .limit(MAX_DAGS_TO_CREATE_PER_LOOP)
)
_DUE_DAGS_LOCKED = _DUE_DAGS.with_for_update(skip_locked=True)


def create_due_dag_runs(session: Session, cache: SerializedDagCache, *,
                        now: datetime, default_queue: str = DEFAULT_QUEUE) -> RunStepStats:
    """Create the due scheduled runs (QUEUED) and move each DAG's ``next_dagrun`` on."""
    stats = RunStepStats()
    stmt = _DUE_DAGS_LOCKED if is_postgres(session) else _DUE_DAGS
    due = session.scalars(stmt, {"due_now": now}).all()
    if not due:
        return stats
    ids = [dm.dag_id for dm in due]
    dags = cache.get_many(session, ids)
    active = _count_runs(session, ids, DAGRUN_UNFINISHED_STATES)
    pnow = pendulum.instance(now)
    for dm in due:
        dag = dags.get(dm.dag_id)
        if dag is None:
            log.warning("DAG %s: due for a run but it has no usable serialized DAG",
                        dm.dag_id)
            stats.missing_dags.add(dm.dag_id)
            continue
        count = active.get(dm.dag_id, 0)
        while (dm.next_dagrun is not None and dm.next_dagrun_create_after is not None
               and dm.next_dagrun_create_after <= now):
            if count >= dag.max_active_runs:
                log.debug("DAG %s: %d active run(s), max_active_runs %d; next run waits",
                          dm.dag_id, count, dag.max_active_runs)
                break
            logical = pendulum.instance(dm.next_dagrun)
            interval = DataInterval(
                pendulum.instance(dm.next_dagrun_data_interval_start or logical),
                pendulum.instance(dm.next_dagrun_data_interval_end or logical),
            )
            try:
                create_dag_run(session, dag, run_type=DagRunType.SCHEDULED,
                               default_queue=default_queue,
                               logical_date=logical, data_interval=interval,
                               state=DagRunState.QUEUED, now=now)
                count += 1
                stats.created += 1
            except DagRunAlreadyExists as exc:
                # another scheduler, a backfill or a manual run got there first
                log.info("DAG %s: scheduled run not created: %s", dm.dag_id, exc)
            info = dag.timetable.next_dagrun_info(
                last_automated_data_interval=interval, start_date=dag.start_date,
                end_date=dag.end_date, catchup=dag.catchup, now=pnow,
            )
            dm.next_dagrun = info.logical_date if info else None
            dm.next_dagrun_data_interval_start = info.data_interval.start if info else None
            dm.next_dagrun_data_interval_end = info.data_interval.end if info else None
            dm.next_dagrun_create_after = info.run_after if info else None
    return stats


def create_dataset_dag_runs(session: Session, cache: SerializedDagCache, *,
                            now: datetime, default_queue: str = DEFAULT_QUEUE) -> RunStepStats:
    """Create the dataset-triggered runs (QUEUED) of the DAGs whose queued datasets meet
    their condition (:func:`~squall.runs.dataset_runs.create_dataset_triggered_runs`; on
    PostgreSQL the ``dag`` rows are locked ``FOR NO KEY UPDATE SKIP LOCKED``). A DAG with a
    dataset-or-time schedule gets its scheduled runs from :func:`create_due_dag_runs`."""
    stats = RunStepStats()
    done = create_dataset_triggered_runs(
        session, lambda ids: cache.get_many(session, ids), now=now,
        default_queue=default_queue)
    stats.created = len(done.created)
    stats.missing_dags = done.missing_dags
    return stats


def schedule_dag_runs(session: Session, cache: SerializedDagCache, *,
                      now: datetime, memo: RunDecisionMemo | None = None,
                      max_runs: int = MAX_RUNS_PER_LOOP,
                      only_backfill_id: int | None = None,
                      in_flight: InFlight | None = None) -> RunStepStats:
    """Start QUEUED runs that have room under ``max_active_runs``; decide RUNNING ones
    (with a ``memo``, only those it says are due); at most ``max_runs`` of each.

    Each run gets :func:`update_dag_run` (trigger rules, run state) and its schedulable task
    instances :func:`schedule_tis`. Runs of paused DAGs are left alone, but for backfill
    runs. ``only_backfill_id`` limits it to that backfill's runs (without the memo).
    ``in_flight``: the tries the caller's executor tracks (:func:`in_flight_by_run`); those
    a decided run's task instances show over are listed in ``tries_over`` (from the rows
    the decision read: no query of its own).
    """
    stats = RunStepStats()
    postgres = is_postgres(session)
    queued = _runs(session, DagRunState.QUEUED, postgres, max_runs, only_backfill_id)
    if memo is None or only_backfill_id is not None:
        running = _runs(session, DagRunState.RUNNING, postgres, max_runs, only_backfill_id)
        stats.active_runs = len(queued) + len(running)
    else:
        running = _runs_by_id(session, memo.due(session, cache, now=now,
                                                limit=max_runs), postgres)
        stats.active_runs = len(queued) + memo.running_runs
    if not queued and not running:
        return stats
    dags = cache.get_many(session, {r.dag_id for r in (*queued, *running)})
    scopes = load_scopes(session, (r.backfill_id for r in (*queued, *running)))
    running_counts = (
        _count_runs(session, {r.dag_id for r in queued}, (DagRunState.RUNNING,))
        if queued else {}
    )
    for run in queued:
        dag = dags.get(run.dag_id)
        if dag is None:
            stats.missing_dags.add(run.dag_id)
            continue
        count = running_counts.get(run.dag_id, 0)
        if count >= dag.max_active_runs:
            continue
        running_counts[run.dag_id] = count + 1
        stats.started += 1
        _decide(session, dag, run, now, stats, scopes, in_flight)
    for run in running:
        dag = dags.get(run.dag_id)
        if dag is None:
            log.warning("DagRun %s %s: no usable serialized DAG for it; not decided",
                        run.dag_id, run.run_id)
            stats.missing_dags.add(run.dag_id)
            continue
        _decide(session, dag, run, now, stats, scopes, in_flight)
        if memo is not None:
            memo.decided(run, cache, now)
    return stats


def _decide(session: Session, dag: DAG, run: DagRun, now: datetime,
            stats: RunStepStats, scopes: Mapping[int, BackfillScope],
            in_flight: InFlight | None = None) -> None:
    scope = scopes.get(run.backfill_id) if run.backfill_id is not None else None
    if scope is not None:
        # a backfill's run: its task selection, its pool, -I for its first date
        dag = scope.dag_for(dag)
    result = update_dag_run(session, dag, run, now=now, may_start=True,
                            ignore_depends_on_past=scope is not None and scope.ignores_past(run))
    if in_flight:
        tracked = in_flight.get((run.dag_id, run.run_id))
        if tracked:
            stats.tries_over += tries_over_in(result.tis, tracked)
    if result.schedulable:
        stats.tis_scheduled += schedule_tis(session, result.schedulable, now=now)
    if result.finished_now:
        stats.finished += 1
        _request_dag_callback(session, dag, run, result.state, result.reason, now)


def _request_dag_callback(session: Session, dag: DAG, run: DagRun, state: DagRunState,
                          reason: str | None, now: datetime) -> None:
    """When the DAG has the callback for how the run ended, ask the DAG processor to run
    it, in this transaction (the one that records the run's end)."""
    success = state == DagRunState.SUCCESS
    kind = CallbackKind.DAG_SUCCESS if success else CallbackKind.DAG_FAILURE
    if getattr(dag, f"has_{kind.callback_name}", False):
        enqueue_callback(session, kind=kind, dag_id=run.dag_id, fileloc=dag.fileloc,
                         run_id=run.run_id, message=reason or ("success" if success
                                                               else "failed"), now=now)


def _runs(session: Session, state: DagRunState, postgres: bool,
          limit: int, only_backfill_id: int | None = None) -> list[DagRun]:
    key = (state, postgres, only_backfill_id is not None)
    stmt = _RUNS.get(key)
    if stmt is None:
        stmt = _RUNS[key] = _runs_statement(*key)
    params: dict[str, Any] = {"runs_limit": limit}
    if only_backfill_id is not None:
        params["runs_backfill_id"] = only_backfill_id
    return list(session.scalars(stmt, params))


#: :func:`_runs`'s statements by (state, PostgreSQL, one backfill only), built on first use
_RUNS: dict[tuple[DagRunState, bool, bool], Any] = {}


def _runs_statement(state: DagRunState, postgres: bool, one_backfill: bool) -> Any:
    stmt = (
        select(DagRun)
        .join(DagModel, DagModel.dag_id == DagRun.dag_id)
        .where(DagRun.state == state.value, not_paused_or_backfill())
        .limit(bindparam("runs_limit", type_=Integer))
    )
    if one_backfill:
        stmt = stmt.where(DagRun.backfill_id == bindparam("runs_backfill_id"))
    if state == DagRunState.QUEUED:
        # only runs of DAGs with room: queued runs of a DAG at its limit must not fill the
        # batch and starve the queued runs of other DAGs
        other = aliased(DagRun)
        running = (
            select(func.count()).select_from(other)
            .where(other.dag_id == DagRun.dag_id,
                   other.state == DagRunState.RUNNING.value)
            .scalar_subquery()
        )
        stmt = stmt.where(or_(DagModel.max_active_runs.is_(None),
                              running < DagModel.max_active_runs))
        stmt = stmt.order_by(DagRun.logical_date, DagRun.id)
    else:
        stmt = stmt.order_by(DagRun.last_scheduling_decision.asc().nulls_first(), DagRun.id)
    if postgres:
        stmt = stmt.with_for_update(of=DagRun, skip_locked=True)
    return stmt.execution_options(populate_existing=True)


def _runs_by_id(session: Session, ids: list[int], postgres: bool) -> list[DagRun]:
    """These runs, if still RUNNING (locked ``SKIP LOCKED`` on PostgreSQL), in that order."""
    if not ids:
        return []
    statements = _statements()
    stmt = statements.runs_by_id_locked if postgres else statements.runs_by_id
    found = {r.id: r for r in session.scalars(stmt, {"run_ids": ids})}
    return [found[i] for i in ids if i in found]


def _count_runs(session: Session, dag_ids: Iterable[str],
                states: Iterable[DagRunState]) -> dict[str, int]:
    ids = sorted(set(dag_ids))
    if not ids:
        return {}
    rows = session.execute(_statements().count_runs, {
        "count_dag_ids": ids, "count_states": [s.value for s in states]}).all()
    return {dag_id: int(n) for dag_id, n in rows}
