"""The critical section: pick SCHEDULED task instances and move them to QUEUED.

:func:`queue_scheduled_tis` selects SCHEDULED task instances of RUNNING DAG runs of DAGs that
are not paused, highest ``priority_weight`` first (then the oldest run first), and keeps
those that fit:

* their pool's open slots (``slots`` minus the ``pool_slots`` of its QUEUED and RUNNING task
  instances; a pool with ``slots < 0`` is unlimited; a task instance whose pool does not
  exist stays SCHEDULED with a ``state_reason`` saying so, written only when it changes,
  and the pool is logged once per scheduler until it exists);
* their DAG's ``max_active_tasks`` (QUEUED + RUNNING task instances of the dag_id);
* their task's ``max_active_tis_per_dag`` (QUEUED + RUNNING of the dag_id and task_id);
* ``executor_slots`` (``[core] parallelism`` minus what the executor already has in flight).

The chosen ones move to QUEUED in one guarded statement per chunk (PostgreSQL:
``UPDATE ... FROM (VALUES ...)``; SQLite: one executemany by primary key), each with a fresh
``external_executor_id`` (the Celery task id it will be published with), ``queued_dttm``
and ``queued_by_job_id``. Nothing is committed here: the caller commits, and only then
publishes, so a worker can never see a message before the row that authorises it.

Several schedulers (PostgreSQL only): the ``slot_pool`` rows are locked ``FOR UPDATE`` (in
pool-name order, so two schedulers cannot deadlock) before anything is counted, which makes
the critical section one-at-a-time across schedulers and the limit counts exact (a wait
longer than ``POOL_LOCK_TIMEOUT`` raises an ``OperationalError`` instead of stalling); the
candidate rows are locked ``FOR UPDATE OF task_instance SKIP LOCKED`` as well, so a row
another transaction holds is never taken twice. On SQLite every transaction holds the
database's write lock from its start (ADR 4), which serialises the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableSet, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import (
    Integer,
    String,
    Table,
    bindparam,
    func,
    not_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from squall.common.db import is_postgres
from squall.common.models import (
    DagModel,
    DagRun,
    Pool,
    TaskInstance,
    TaskInstanceKey,
    clip_reason,
    compare_and_set_state,
    utcnow,
)
from squall.common.payload import TaskRunCommand, relative_dag_file
from squall.common.state import OCCUPYING_STATES, DagRunState, TaskInstanceState
from squall.runs.pools import missing_pool_reason
from squall.scheduler.dag_runs import not_paused_or_backfill
from squall.scheduler.executor import PublishOutcome, QueuedTask
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)

TI = TaskInstanceState

#: How often the selection is repeated when everything it found was refused by a limit
#: (each repetition leaves out the pools, DAGs and tasks found full).
_MAX_SELECTION_ROUNDS = 4
#: How long (seconds) to wait for another scheduler's critical section (PostgreSQL).
POOL_LOCK_TIMEOUT = 10.0
#: Most task instances in one UPDATE statement.
_UPDATE_CHUNK = 500


@dataclass
class _Budget:
    """What is left of every limit while candidates are taken, highest priority first."""

    executor_slots: int
    pool_open: dict[str, float]
    dag_active: dict[str, int]
    task_active: dict[tuple[str, str], int]
    #: (dag_id, run_id, task_id) -> queued + running (``max_active_tis_per_dagrun``)
    run_task_active: dict[tuple[str, str, str], int] = field(default_factory=dict)
    starved_pools: set[str] = field(default_factory=set)
    starved_dags: set[str] = field(default_factory=set)
    starved_tasks: set[tuple[str, str]] = field(default_factory=set)
    missing_pools: set[str] = field(default_factory=set)

    def new_filters(self) -> int:
        return len(self.starved_pools) + len(self.starved_dags) + len(self.starved_tasks)


def queue_scheduled_tis(
    session: Session,
    *,
    executor_slots: int,
    max_tis: int,
    job_id: int,
    dags: Mapping[str, DAG],
    dags_folder: Path,
    examples_folder: Path | None,
    now: datetime | None = None,
    warned_pools: MutableSet[str] | None = None,
    only_backfill_id: int | None = None,
) -> list[QueuedTask]:
    """Move the SCHEDULED task instances that fit every limit to QUEUED; return them.

    ``dags`` maps dag_id to the (deserialized) DAG of every task instance that may be
    picked; task instances of a DAG missing from it are left SCHEDULED. ``warned_pools``
    (kept by the caller across calls) makes the warning about a missing pool appear once.
    ``only_backfill_id`` picks only that backfill's task instances (every limit still
    counts every task instance). The caller commits, then publishes the returned tasks.
    """
    now = now or utcnow()
    limit = min(max_tis, executor_slots)
    if limit <= 0:
        return []
    postgres = is_postgres(session)
    warned: MutableSet[str] = warned_pools if warned_pools is not None else set()
    budget = _budget(session, executor_slots=limit, lock_pools=postgres)
    # a pool created since it was reported is reported again if it goes away again
    for pool in [p for p in warned if p in budget.pool_open]:
        warned.discard(pool)

    chosen: list[TaskInstance] = []
    chosen_keys: set[TaskInstanceKey] = set()
    for _ in range(_MAX_SELECTION_ROUNDS):
        filters_before = budget.new_filters()
        wanted = budget.executor_slots
        candidates = _candidates(session, budget, wanted, chosen_keys, postgres,
                                 only_backfill_id)
        for ti in candidates:
            if budget.executor_slots <= 0:
                break
            if _fits(ti, dags, budget, warned):
                chosen.append(ti)
                chosen_keys.add(ti.key)
        # go round again only when limits found full this time may have hidden candidates
        done = (budget.executor_slots <= 0 or len(candidates) < wanted
                or budget.new_filters() == filters_before)
        if done:
            break
    for pool in sorted(budget.missing_pools):
        _record_missing_pool(session, pool, now)
    if not chosen:
        return []

    commands, unbuildable = _commands(chosen, dags, dags_folder, examples_folder)
    for ti, error in unbuildable:
        _fail_unbuildable(session, ti, error, now)
    if not commands:
        return []
    tasks = _mark_queued(session, commands, job_id=job_id, now=now, postgres=postgres)
    log.info("critical section: queued %d task instance(s) (%d candidate slot(s))",
             len(tasks), limit)
    return tasks


def requeue_failed_publishes(session: Session, outcomes: Iterable[PublishOutcome]) -> int:
    """Return the task instances whose publish failed to SCHEDULED (same try); count them.

    A compare-and-set on (QUEUED, try number, external_executor_id): a row that moved on
    meanwhile (the message did get through and a worker started it) is left alone. The
    error becomes the ``state_reason``; the next critical section picks the task instance
    again with a new ``external_executor_id``, so a late copy of the failed message can
    never start it.
    """
    moved = 0
    for outcome in outcomes:
        if outcome.ok:
            continue
        task = outcome.task
        reason = f"publishing to the broker failed: {outcome.error or 'unknown error'}"
        if compare_and_set_state(
            session, task.key, expected=TI.QUEUED, try_number=task.try_number,
            new_state=TI.SCHEDULED,
            expected_external_executor_id=task.external_executor_id,
            state_reason=clip_reason(reason), queued_dttm=None, queued_by_job_id=None,
            external_executor_id=None,
        ):
            moved += 1
            log.warning("%s try %d: publish failed after %d attempt(s), back to scheduled: %s",
                        task.key, task.try_number, outcome.attempts, outcome.error)
        else:
            log.info("%s try %d: publish failed but the row moved on; left alone",
                     task.key, task.try_number)
    return moved


# --------------------------------------------------------------------------- limits


#: :func:`_budget`'s statements, built once
_POOLS = select(Pool.pool, Pool.slots).order_by(Pool.pool)
_POOLS_LOCKED = _POOLS.with_for_update()
_LOCK_TIMEOUT = text(f"SET LOCAL lock_timeout = '{int(POOL_LOCK_TIMEOUT * 1000)}ms'")
_OCCUPYING = (
    select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id, TaskInstance.pool,
           func.count(), func.coalesce(func.sum(TaskInstance.pool_slots), 0))
    .where(TaskInstance.state.in_(sorted(s.value for s in OCCUPYING_STATES)))
    .group_by(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
              TaskInstance.pool)
)


def _budget(session: Session, *, executor_slots: int, lock_pools: bool) -> _Budget:
    pool_stmt = _POOLS
    if lock_pools:
        # another scheduler holds them for a few milliseconds; one that hangs in its
        # critical section must not stall this one: the wait ends in an OperationalError
        # (this loop's critical section is skipped)
        session.execute(_LOCK_TIMEOUT)
        pool_stmt = _POOLS_LOCKED
    pool_open: dict[str, float] = {
        name: (float("inf") if slots < 0 else float(slots))
        for name, slots in session.execute(pool_stmt).all()
    }
    dag_active: dict[str, int] = {}
    task_active: dict[tuple[str, str], int] = {}
    run_task_active: dict[tuple[str, str, str], int] = {}
    rows = session.execute(_OCCUPYING).all()
    for dag_id, task_id, run_id, pool, count, slots in rows:
        dag_active[dag_id] = dag_active.get(dag_id, 0) + int(count)
        task_active[(dag_id, task_id)] = task_active.get((dag_id, task_id), 0) + int(count)
        run_key = (dag_id, run_id, task_id)
        run_task_active[run_key] = run_task_active.get(run_key, 0) + int(count)
        if pool in pool_open:
            pool_open[pool] -= int(slots)
    budget = _Budget(executor_slots=executor_slots, pool_open=pool_open,
                     dag_active=dag_active, task_active=task_active,
                     run_task_active=run_task_active)
    budget.starved_pools.update(p for p, n in pool_open.items() if n <= 0)
    return budget


def _candidates(session: Session, budget: _Budget, limit: int,
                chosen: set[TaskInstanceKey], postgres: bool,
                only_backfill_id: int | None = None) -> Sequence[TaskInstance]:
    shape = _CandidateShape(
        postgres=postgres, one_backfill=only_backfill_id is not None,
        starved_pools=bool(budget.starved_pools), starved_dags=bool(budget.starved_dags),
        starved_tasks=bool(budget.starved_tasks), chosen=bool(chosen))
    stmt = _CANDIDATES.get(shape)
    if stmt is None:
        stmt = _CANDIDATES[shape] = _candidates_statement(shape)
    params: dict[str, Any] = {"c_limit": limit}
    if only_backfill_id is not None:
        params["c_backfill_id"] = only_backfill_id
    if budget.starved_pools:
        params["c_pools"] = sorted(budget.starved_pools)
    if budget.starved_dags:
        params["c_dags"] = sorted(budget.starved_dags)
    if budget.starved_tasks:
        params["c_tasks"] = sorted(budget.starved_tasks)
    if chosen:
        params["c_chosen"] = sorted((k.dag_id, k.task_id, k.run_id, k.map_index)
                                    for k in chosen)
    return session.scalars(stmt, params).all()


@dataclass(frozen=True)
class _CandidateShape:
    """Which parts :func:`_candidates`'s statement has (the values are bound per call)."""

    postgres: bool
    one_backfill: bool
    starved_pools: bool
    starved_dags: bool
    starved_tasks: bool
    chosen: bool


#: :func:`_candidates`'s statements by shape, built on first use and kept: a loop binds
#: its limit (and the limits found full) and executes. Building the statement and its
#: cache key every loop was a few per cent of the scheduler's CPU.
_CANDIDATES: dict[_CandidateShape, Any] = {}


def _candidates_statement(shape: _CandidateShape) -> Any:
    stmt = (
        select(TaskInstance)
        .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
              & (DagRun.run_id == TaskInstance.run_id))
        .join(DagModel, DagModel.dag_id == TaskInstance.dag_id)
        .where(TaskInstance.state == TI.SCHEDULED.value,
               DagRun.state == DagRunState.RUNNING.value,
               not_paused_or_backfill())
        .order_by(TaskInstance.priority_weight.desc(), DagRun.logical_date,
                  TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id,
                  TaskInstance.map_index)
        .limit(bindparam("c_limit", type_=Integer))
    )
    if shape.one_backfill:
        stmt = stmt.where(DagRun.backfill_id == bindparam("c_backfill_id"))
    if shape.starved_pools:
        stmt = stmt.where(not_(TaskInstance.pool.in_(bindparam("c_pools", expanding=True))))
    if shape.starved_dags:
        stmt = stmt.where(not_(TaskInstance.dag_id.in_(bindparam("c_dags", expanding=True))))
    if shape.starved_tasks:
        stmt = stmt.where(not_(tuple_(TaskInstance.dag_id, TaskInstance.task_id).in_(
            bindparam("c_tasks", expanding=True))))
    if shape.chosen:
        stmt = stmt.where(not_(tuple_(TaskInstance.dag_id, TaskInstance.task_id,
                                      TaskInstance.run_id, TaskInstance.map_index).in_(
            bindparam("c_chosen", expanding=True))))
    if shape.postgres:
        stmt = stmt.with_for_update(of=TaskInstance, skip_locked=True)
    return stmt.execution_options(populate_existing=True)


def _fits(ti: TaskInstance, dags: Mapping[str, DAG], budget: _Budget,
          warned: MutableSet[str]) -> bool:
    """Whether ``ti`` fits every limit; takes its share of each when it does."""
    dag = dags.get(ti.dag_id)
    if dag is None:
        log.warning("%s: no serialized DAG for %s; left scheduled", ti.key, ti.dag_id)
        budget.starved_dags.add(ti.dag_id)
        return False
    if ti.pool not in budget.pool_open:
        if ti.pool not in warned:
            warned.add(ti.pool)
            log.warning("%s: pool %r does not exist; its task instances stay scheduled until "
                        "it is created (squall pools set %s SLOTS)", ti.key, ti.pool, ti.pool)
        budget.missing_pools.add(ti.pool)
        budget.starved_pools.add(ti.pool)
        return False
    open_slots = budget.pool_open[ti.pool]
    if open_slots <= 0:
        budget.starved_pools.add(ti.pool)
        return False
    if ti.pool_slots > open_slots:
        log.debug("%s: needs %d slot(s) of pool %s, %g open", ti.key, ti.pool_slots, ti.pool,
                  open_slots)
        return False
    dag_active = budget.dag_active.get(ti.dag_id, 0)
    if dag_active >= dag.max_active_tasks:
        budget.starved_dags.add(ti.dag_id)
        return False
    task = dag.task_dict.get(ti.task_id)
    task_limit = getattr(task, "max_active_tis_per_dag", None) if task is not None else None
    task_key = (ti.dag_id, ti.task_id)
    task_active = budget.task_active.get(task_key, 0)
    if task_limit is not None and task_active >= task_limit:
        budget.starved_tasks.add(task_key)
        return False
    # a mapped task's instances in one run (Airflow 2.6+): refused, not starved (the
    # task's instances in other runs may still go)
    run_limit = getattr(task, "max_active_tis_per_dagrun", None) if task is not None else None
    run_key = (ti.dag_id, ti.run_id, ti.task_id)
    run_active = budget.run_task_active.get(run_key, 0)
    if run_limit is not None and run_active >= run_limit:
        return False
    budget.pool_open[ti.pool] = open_slots - ti.pool_slots
    budget.dag_active[ti.dag_id] = dag_active + 1
    budget.task_active[task_key] = task_active + 1
    budget.run_task_active[run_key] = run_active + 1
    budget.executor_slots -= 1
    return True


def _record_missing_pool(session: Session, pool: str, now: datetime) -> None:
    """Give the SCHEDULED task instances of the missing ``pool`` the reason, where they do
    not have it yet (runs only while a pool is missing; writes no row twice)."""
    reason = missing_pool_reason(pool)
    session.execute(
        update(TaskInstance)
        .where(TaskInstance.pool == pool, TaskInstance.state == TI.SCHEDULED.value,
               TaskInstance.state_reason.is_distinct_from(reason))
        .values(state_reason=reason, updated_at=now)
        .execution_options(synchronize_session=False))


# --------------------------------------------------------------------------- queueing


def _commands(
    tis: Sequence[TaskInstance], dags: Mapping[str, DAG], dags_folder: Path,
    examples_folder: Path | None,
) -> tuple[list[tuple[TaskInstance, TaskRunCommand]], list[tuple[TaskInstance, str]]]:
    good: list[tuple[TaskInstance, TaskRunCommand]] = []
    bad: list[tuple[TaskInstance, str]] = []
    for ti in tis:
        fileloc = dags[ti.dag_id].fileloc
        try:
            command = TaskRunCommand(
                dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id,
                map_index=ti.map_index, try_number=ti.try_number,
                dag_file=relative_dag_file(fileloc, dags_folder, examples_folder),
                queue=ti.queue,
            )
        except ValidationError as exc:
            bad.append((ti, f"cannot build the task-run command: {exc.errors()[0]['msg']}"))
            continue
        good.append((ti, command))
    return good, bad


def _fail_unbuildable(session: Session, ti: TaskInstance, error: str, now: datetime) -> None:
    log.error("%s try %d: %s; failing it", ti.key, ti.try_number, error)
    compare_and_set_state(session, ti.key, expected=TI.SCHEDULED, try_number=ti.try_number,
                          new_state=TI.FAILED, state_reason=clip_reason(error), end_date=now)


def _mark_queued(session: Session, commands: Sequence[tuple[TaskInstance, TaskRunCommand]], *,
                 job_id: int, now: datetime, postgres: bool) -> list[QueuedTask]:
    planned = [
        QueuedTask(key=ti.key, try_number=ti.try_number,
                   external_executor_id=str(uuid.uuid4()), command=command)
        for ti, command in commands
    ]
    common: dict[str, Any] = {"state": TI.QUEUED.value, "queued_dttm": now,
                              "queued_by_job_id": job_id, "state_reason": None,
                              "updated_at": now}
    moved: set[TaskInstanceKey] = set()
    for chunk in _chunks(planned, _UPDATE_CHUNK):
        if postgres:
            moved.update(_update_from_values(session, chunk, common))
        else:
            moved.update(_update_executemany(session, chunk, common))
    if len(moved) < len(planned):
        lost = sorted(str(t.key) for t in planned if t.key not in moved)
        log.warning("critical section: %d task instance(s) changed before they could be "
                    "queued: %s", len(lost), ", ".join(lost[:10]))
    return [t for t in planned if t.key in moved]


_QUEUE_ROWS: Any = None


def _queue_rows_statement() -> Any:
    """The PostgreSQL bulk UPDATE of :func:`_update_from_values`, built on first use and
    kept: its rows come as five array parameters (``unnest``), so one statement, compiled
    once, serves every row count (a ``VALUES`` list is compiled again for each)."""
    global _QUEUE_ROWS
    if _QUEUE_ROWS is None:
        table = cast(Table, TaskInstance.__table__)
        picked = func.unnest(
            bindparam("k_dag_ids", type_=ARRAY(String)),
            bindparam("k_task_ids", type_=ARRAY(String)),
            bindparam("k_run_ids", type_=ARRAY(String)),
            bindparam("k_map_indexes", type_=ARRAY(Integer)),
            bindparam("k_tries", type_=ARRAY(Integer)),
            bindparam("k_ext_ids", type_=ARRAY(String)),
        ).table_valued("dag_id", "task_id", "run_id", "map_index", "try_number",
                       "ext_id").render_derived(
            name="picked")
        _QUEUE_ROWS = (
            update(table)
            .where(table.c.dag_id == picked.c.dag_id, table.c.task_id == picked.c.task_id,
                   table.c.run_id == picked.c.run_id,
                   table.c.map_index == picked.c.map_index,
                   table.c.try_number == picked.c.try_number,
                   table.c.state == TI.SCHEDULED.value)
            .values(external_executor_id=picked.c.ext_id, state=TI.QUEUED.value,
                    queued_dttm=bindparam("k_now", type_=table.c.queued_dttm.type),
                    queued_by_job_id=bindparam("k_job_id", type_=Integer),
                    state_reason=None,
                    updated_at=bindparam("k_now", type_=table.c.updated_at.type))
            .returning(table.c.dag_id, table.c.task_id, table.c.run_id, table.c.map_index)
        )
    return _QUEUE_ROWS


def _update_from_values(session: Session, chunk: Sequence[QueuedTask],
                        common: Mapping[str, Any]) -> set[TaskInstanceKey]:
    params = {
        "k_dag_ids": [t.key.dag_id for t in chunk],
        "k_task_ids": [t.key.task_id for t in chunk],
        "k_run_ids": [t.key.run_id for t in chunk],
        "k_map_indexes": [t.key.map_index for t in chunk],
        "k_tries": [t.try_number for t in chunk],
        "k_ext_ids": [t.external_executor_id for t in chunk],
        "k_now": common["queued_dttm"], "k_job_id": common["queued_by_job_id"],
    }
    return {TaskInstanceKey(r.dag_id, r.task_id, r.run_id, r.map_index)
            for r in session.execute(_queue_rows_statement(), params)}


def _update_executemany(session: Session, chunk: Sequence[QueuedTask],
                        common: Mapping[str, Any]) -> set[TaskInstanceKey]:
    table = cast(Table, TaskInstance.__table__)
    stmt = (
        update(table)
        .where(table.c.dag_id == bindparam("k_dag_id"), table.c.task_id == bindparam("k_task_id"),
               table.c.run_id == bindparam("k_run_id"),
               table.c.map_index == bindparam("k_map_index"),
               table.c.try_number == bindparam("k_try"),
               table.c.state == TI.SCHEDULED.value)
        .values(external_executor_id=bindparam("k_ext"), **common)
    )
    params = [{"k_dag_id": t.key.dag_id, "k_task_id": t.key.task_id, "k_run_id": t.key.run_id,
               "k_map_index": t.key.map_index, "k_try": t.try_number,
               "k_ext": t.external_executor_id} for t in chunk]
    result = session.execute(stmt, params)
    if int(getattr(result, "rowcount", -1)) == len(chunk):
        return {t.key for t in chunk}
    # somebody changed a row in between (cannot happen under SQLite's write lock, but the
    # guard is there): find out which ones are ours
    ext_ids = [t.external_executor_id for t in chunk]
    found = session.execute(
        select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
               TaskInstance.map_index)
        .where(TaskInstance.external_executor_id.in_(ext_ids),
               TaskInstance.state == TI.QUEUED.value)
    ).all()
    return {TaskInstanceKey(r.dag_id, r.task_id, r.run_id, r.map_index) for r in found}


def _chunks(items: Sequence[QueuedTask], size: int) -> Iterator[Sequence[QueuedTask]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
