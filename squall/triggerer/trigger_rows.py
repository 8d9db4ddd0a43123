"""The triggerer's reads and writes of the ``trigger`` table, each a function on a session
(the caller's transaction): claiming and renewing, firing, failing, cleaning up.

Ownership is a lease on the row: ``triggerer_id`` (the holder's ``job`` id) and
``lease_expires_at``, the time after which another triggerer may take the row. Times on the
row come from the database's clock on PostgreSQL (:func:`db_now`) and from the host's on
SQLite (one host), so two triggerers on different hosts never compare their own clocks.

* :func:`renew_and_claim` (every heartbeat): renew every row this triggerer holds, then
  claim free rows (no holder, or a lease in the past) whose task instance is DEFERRED, up to
  the capacity, highest ``priority_weight`` first, oldest first; on PostgreSQL the
  candidates are taken ``FOR UPDATE OF trigger SKIP LOCKED``, so two triggerers claiming at
  once never take the same row (SQLite: one writer at a time, ADR 4).
* :func:`resolve` (:func:`fire` / :func:`fail` for one): triggers' outcomes, in one
  transaction with the deletion of their rows, and only for the rows this triggerer still
  holds (``triggerer_id = me``): the DEFERRED task instances waiting on them move to
  SCHEDULED by compare-and-set on state and try number (Airflow: ``Trigger.submit_event``
  / ``submit_failure``, ``TriggerEvent.handle_submit``), in one statement per batch on
  PostgreSQL, and the scheduler is woken when it commits.
* :func:`clean_unused` (Airflow's ``Trigger.clean_unused``): a task instance no longer
  DEFERRED lets go of its trigger; a trigger no task instance waits on is deleted.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from squall.common.db import is_postgres
from squall.common.models import (
    TaskInstance,
    TaskInstanceKey,
    Trigger,
    utcnow,
)
from squall.common.state import TRIGGER_FAIL_METHOD, TaskInstanceState
from squall.common.wakeup import notify_scheduler
from squall.sdk.triggers import serde

log = logging.getLogger(__name__)

DEFERRED = TaskInstanceState.DEFERRED
#: the ``error`` of ``next_kwargs`` then (Airflow's ``Trigger.submit_failure``)
TRIGGER_FAILURE = "Trigger failure"


@dataclass(frozen=True)
class TaskInstanceRef:
    """The task instance a trigger belongs to, as a trigger sees it (``task_instance``)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    trigger_timeout: datetime | None = None

    @property
    def key(self) -> TaskInstanceKey:
        return TaskInstanceKey(self.dag_id, self.task_id, self.run_id, self.map_index)

    def __str__(self) -> str:
        return f"{self.key} try {self.try_number}"


@dataclass(frozen=True)
class HeldTrigger:
    """A row this triggerer holds and should run."""

    id: int
    classpath: str
    kwargs: str
    task_instance: TaskInstanceRef

    @property
    def name(self) -> str:
        return f"trigger {self.id} ({self.classpath}) of {self.task_instance}"


@dataclass(frozen=True)
class Beat:
    """What one :func:`renew_and_claim` found: every row held now (renewed or claimed), the
    ones newly claimed, and which held rows have a DEFERRED task instance to run for."""

    held: frozenset[int]
    claimed: frozenset[int]
    runnable: frozenset[int]


def db_now(session: Session) -> datetime:
    """The time by the clock every triggerer agrees on: the database's on PostgreSQL
    (``now()``, the start of this transaction), this host's on SQLite."""
    if is_postgres(session):
        value = session.scalar(select(func.now()))
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value
    return utcnow()


def renew_and_claim(session: Session, *, triggerer_id: int, capacity: int,
                    take_over_after: float, now: datetime | None = None) -> Beat:
    """Renew the lease of every row ``triggerer_id`` holds and claim free ones up to
    ``capacity`` (see the module docstring); the leases run to ``now`` (default
    :func:`db_now`) plus ``take_over_after`` seconds."""
    now = now if now is not None else db_now(session)
    expires = now + timedelta(seconds=take_over_after)
    held = set(session.scalars(
        update(Trigger).where(Trigger.triggerer_id == triggerer_id)
        .values(lease_expires_at=expires)
        .returning(Trigger.id)).all())
    claimed: set[int] = set()
    room = capacity - len(held)
    if room > 0:
        free = (
            select(Trigger.id)
            .join(TaskInstance, TaskInstance.trigger_id == Trigger.id)
            .where(TaskInstance.state == DEFERRED.value,
                   or_(Trigger.triggerer_id.is_(None), Trigger.lease_expires_at.is_(None),
                       Trigger.lease_expires_at < now))
            .order_by(TaskInstance.priority_weight.desc(), Trigger.created_date, Trigger.id)
            .limit(room))
        if is_postgres(session):
            free = free.with_for_update(of=Trigger, skip_locked=True)
        candidates = list(dict.fromkeys(session.scalars(free).all()))
        if candidates:
            claimed = set(session.scalars(
                update(Trigger).where(Trigger.id.in_(candidates))
                .values(triggerer_id=triggerer_id, lease_expires_at=expires)
                .returning(Trigger.id)).all())
    held |= claimed
    runnable: set[int] = set()
    if held:
        runnable = set(session.scalars(
            select(TaskInstance.trigger_id)
            .where(TaskInstance.trigger_id.in_(sorted(held)),
                   TaskInstance.state == DEFERRED.value)).all())  # type: ignore[arg-type]
    return Beat(frozenset(held), frozenset(claimed), frozenset(runnable))


def load_triggers(session: Session, ids: Iterable[int], *,
                  triggerer_id: int) -> list[HeldTrigger]:
    """The rows of ``ids`` this triggerer holds, each with its DEFERRED task instance (a
    row without one is left out: it is not to be run)."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    rows = session.execute(
        select(Trigger.id, Trigger.classpath, Trigger.kwargs, TaskInstance.dag_id,
               TaskInstance.task_id, TaskInstance.run_id, TaskInstance.map_index,
               TaskInstance.try_number, TaskInstance.trigger_timeout)
        .join(TaskInstance, TaskInstance.trigger_id == Trigger.id)
        .where(Trigger.id.in_(wanted), Trigger.triggerer_id == triggerer_id,
               TaskInstance.state == DEFERRED.value)
        .order_by(Trigger.id)).all()
    out: dict[int, HeldTrigger] = {}
    for row in rows:
        if row.id in out:  # one trigger, several task instances (not made by Squall)
            continue
        ti = TaskInstanceRef(row.dag_id, row.task_id, row.run_id, row.map_index,
                             row.try_number, row.trigger_timeout)
        out[row.id] = HeldTrigger(row.id, row.classpath, row.kwargs, ti)
    return list(out.values())


_RESUMED_ROWS: Any = None


def _resumed_rows_statement() -> Any:
    """The PostgreSQL bulk compare-and-set of :func:`resolve`: DEFERRED -> SCHEDULED for
    rows given as arrays (``unnest``), each with its own ``next_kwargs`` (JSON text) and
    ``next_method`` (NULL: kept); one statement for a whole batch, compiled once."""
    global _RESUMED_ROWS
    if _RESUMED_ROWS is None:
        table = cast(Table, TaskInstance.__table__)
        rows = func.unnest(
            bindparam("r_dag_ids", type_=ARRAY(String)),
            bindparam("r_task_ids", type_=ARRAY(String)),
            bindparam("r_run_ids", type_=ARRAY(String)),
            bindparam("r_map_indexes", type_=ARRAY(Integer)),
            bindparam("r_tries", type_=ARRAY(Integer)),
            bindparam("r_kwargs", type_=ARRAY(Text)),
            bindparam("r_methods", type_=ARRAY(String)),
        ).table_valued("dag_id", "task_id", "run_id", "map_index", "try_number", "kwargs",
                       "method").render_derived(name="resumed")
        _RESUMED_ROWS = (
            update(table)
            .where(table.c.dag_id == rows.c.dag_id, table.c.task_id == rows.c.task_id,
                   table.c.run_id == rows.c.run_id, table.c.map_index == rows.c.map_index,
                   table.c.try_number == rows.c.try_number,
                   table.c.state == DEFERRED.value)
            .values(state=TaskInstanceState.SCHEDULED.value, trigger_id=None,
                    next_kwargs=sql_cast(rows.c.kwargs, JSON),
                    next_method=func.coalesce(rows.c.method, table.c.next_method),
                    updated_at=bindparam("r_now", type_=table.c.updated_at.type))
            .returning(table.c.dag_id, table.c.task_id, table.c.run_id, table.c.map_index))
    return _RESUMED_ROWS


@dataclass(frozen=True)
class _Resume:
    key: TaskInstanceKey
    try_number: int
    trigger_id: int
    next_kwargs: Any
    next_method: str | None


def resolve(session: Session, *, triggerer_id: int, fired: Mapping[int, Any] | None = None,
            failed: Mapping[int, BaseException | None] | None = None
            ) -> dict[int, list[TaskInstanceKey] | None]:
    """Write the outcomes of many triggers in this transaction: ``fired`` (trigger id ->
    the first event's payload) resumes each trigger's DEFERRED task instances with
    ``next_kwargs["event"]`` set; ``failed`` (trigger id -> the exception, or None when
    ``run()`` ended without an event) sends them to ``next_method="__fail__"`` (see
    :func:`failure_kwargs`). Only the rows this triggerer still holds are written, and
    they are deleted. Returns, per trigger id, the task instances moved to SCHEDULED
    (possibly none), or None when the row was not this triggerer's any more (taken over
    or deleted: nothing written for it)."""
    fired = dict(fired or {})
    failed = dict(failed or {})
    ids = sorted(set(fired) | set(failed))
    if not ids:
        return {}
    taken = set(session.scalars(
        delete(Trigger).where(Trigger.id.in_(ids), Trigger.triggerer_id == triggerer_id)
        .returning(Trigger.id)).all())
    out: dict[int, list[TaskInstanceKey] | None] = {
        tid: ([] if tid in taken else None) for tid in ids}
    if not taken:
        return out
    rows = session.execute(
        select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
               TaskInstance.map_index, TaskInstance.try_number, TaskInstance.next_kwargs,
               TaskInstance.trigger_id)
        .where(TaskInstance.trigger_id.in_(sorted(taken)),
               TaskInstance.state == DEFERRED.value)).all()
    planned: list[_Resume] = []
    for row in rows:
        key = TaskInstanceKey(row.dag_id, row.task_id, row.run_id, row.map_index)
        tid = int(row.trigger_id)
        if tid in fired:
            kwargs = serde.to_json({**serde.from_json(row.next_kwargs or {}),
                                    "event": fired[tid]})
            planned.append(_Resume(key, row.try_number, tid, kwargs, None))
        else:
            planned.append(_Resume(key, row.try_number, tid, failure_kwargs(failed[tid]),
                                   TRIGGER_FAIL_METHOD))
    moved = _schedule(session, planned)
    for resume in planned:
        if resume.key in moved:
            out[resume.trigger_id].append(resume.key)  # type: ignore[union-attr]
    if moved:
        notify_scheduler(session, f"{len(moved)} deferred task instance(s) resumed")
    return out


def _schedule(session: Session, planned: list[_Resume]) -> set[TaskInstanceKey]:
    """DEFERRED -> SCHEDULED by compare-and-set on state and try number."""
    if not planned:
        return set()
    if is_postgres(session):
        params = {
            "r_dag_ids": [p.key.dag_id for p in planned],
            "r_task_ids": [p.key.task_id for p in planned],
            "r_run_ids": [p.key.run_id for p in planned],
            "r_map_indexes": [p.key.map_index for p in planned],
            "r_tries": [p.try_number for p in planned],
            "r_kwargs": [json.dumps(p.next_kwargs) for p in planned],
            "r_methods": [p.next_method for p in planned],
            "r_now": utcnow(),
        }
        return {TaskInstanceKey(r.dag_id, r.task_id, r.run_id, r.map_index)
                for r in session.execute(_resumed_rows_statement(), params)}
    # SQLite (one writer): one statement, compiled once, executed for every row
    rows = [{"k_dag_id": p.key.dag_id, "k_task_id": p.key.task_id, "k_run_id": p.key.run_id,
             "k_map_index": p.key.map_index, "k_try": p.try_number,
             "k_kwargs": p.next_kwargs, "k_method": p.next_method, "k_now": utcnow()}
            for p in planned]
    result = session.execute(_resumed_row_statement(), rows)
    if int(getattr(result, "rowcount", -1)) == len(planned):
        return {p.key for p in planned}
    # a row changed in between (not under SQLite's write lock, but the guard is cheap):
    # the ones now SCHEDULED without a trigger are the ones this wrote
    moved: set[TaskInstanceKey] = set()
    for p in planned:
        row = session.execute(
            select(TaskInstance.state, TaskInstance.trigger_id, TaskInstance.try_number)
            .where(TaskInstance.dag_id == p.key.dag_id, TaskInstance.task_id == p.key.task_id,
                   TaskInstance.run_id == p.key.run_id,
                   TaskInstance.map_index == p.key.map_index)).first()
        if (row is not None and row.state == TaskInstanceState.SCHEDULED.value
                and row.trigger_id is None and row.try_number == p.try_number):
            moved.add(p.key)
    return moved


_RESUMED_ROW: Any = None


def _resumed_row_statement() -> Any:
    """:func:`_resumed_rows_statement` for one row at a time (an executemany on SQLite)."""
    global _RESUMED_ROW
    if _RESUMED_ROW is None:
        table = cast(Table, TaskInstance.__table__)
        _RESUMED_ROW = (
            update(table)
            .where(table.c.dag_id == bindparam("k_dag_id"),
                   table.c.task_id == bindparam("k_task_id"),
                   table.c.run_id == bindparam("k_run_id"),
                   table.c.map_index == bindparam("k_map_index"),
                   table.c.try_number == bindparam("k_try"),
                   table.c.state == DEFERRED.value)
            .values(state=TaskInstanceState.SCHEDULED.value, trigger_id=None,
                    next_kwargs=bindparam("k_kwargs", type_=table.c.next_kwargs.type),
                    next_method=func.coalesce(bindparam("k_method", type_=String),
                                              table.c.next_method),
                    updated_at=bindparam("k_now", type_=table.c.updated_at.type)))
    return _RESUMED_ROW


def fire(session: Session, trigger_id: int, *, triggerer_id: int,
         payload: Any) -> list[TaskInstanceKey] | None:
    """:func:`resolve` for one trigger that fired with ``payload``."""
    return resolve(session, triggerer_id=triggerer_id, fired={trigger_id: payload})[trigger_id]


def failure_kwargs(exc: BaseException | None) -> dict[str, Any]:
    """``next_kwargs`` of a task instance whose trigger failed: Airflow's ``{"error":
    "Trigger failure", "traceback": [...]}`` (``None`` when the trigger ended without an
    event and without an exception)."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__) if exc else None
    return {"error": TRIGGER_FAILURE, "traceback": lines}


def fail(session: Session, trigger_id: int, *, triggerer_id: int,
         exc: BaseException | None) -> list[TaskInstanceKey] | None:
    """:func:`resolve` for one trigger that raised ``exc`` (None: ended without an event,
    or could not be built): its task instances go to SCHEDULED with ``next_method=
    "__fail__"`` (a worker fails the try, with its callbacks, as Airflow does)."""
    return resolve(session, triggerer_id=triggerer_id, failed={trigger_id: exc})[trigger_id]

def release(session: Session, *, triggerer_id: int, ids: Collection[int] | None = None
            ) -> int:
    """Give up the rows this triggerer holds (all, or ``ids``), so another may claim them
    at once (a clean stop); the number released."""
    stmt = update(Trigger).where(Trigger.triggerer_id == triggerer_id)
    if ids is not None:
        stmt = stmt.where(Trigger.id.in_(sorted(ids)))
    result = session.execute(stmt.values(triggerer_id=None, lease_expires_at=None)
                             .execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


def clean_unused(session: Session) -> int:
    """Airflow's ``Trigger.clean_unused``: task instances that are no longer DEFERRED let
    go of their trigger; triggers no task instance waits on are deleted (how a trigger of
    a cleared or marked task instance goes away). The number of triggers deleted.

    A deferring worker writes the trigger row and the DEFERRED task instance that points at
    it in one transaction, so a new row is never seen here without its task instance."""
    session.execute(
        update(TaskInstance)
        .where(TaskInstance.trigger_id.is_not(None), TaskInstance.state != DEFERRED.value)
        .values(trigger_id=None).execution_options(synchronize_session=False))
    waited_on = select(TaskInstance.trigger_id).where(TaskInstance.trigger_id.is_not(None))
    result = session.execute(
        delete(Trigger).where(Trigger.id.not_in(waited_on))
        .execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]
