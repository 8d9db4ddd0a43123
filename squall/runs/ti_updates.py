"""Guarded bulk changes of task instance rows, on the caller's session (nothing commits).

* :func:`schedule_tis` moves task instances to ``scheduled`` (a new try, or the same one
  after a reschedule), one UPDATE per state they were seen in;
* :func:`bulk_set` is ``UPDATE task_instance SET ... WHERE key IN (...) AND state IN
  (...)`` for the run decisions and run creation;
* :func:`load_tis` reads a run's task instances in one query.

Every UPDATE is guarded by the state the row was seen in, so a racing writer (a worker, the
API) wins; the objects are updated in place when every row moved, and expired otherwise.
Keys go in chunks of a few thousand per statement (fewer on an old SQLite).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, bindparam, select, tuple_, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from squall.common.models import DagRun, TaskInstance, utcnow
from squall.common.state import SCHEDULABLE_STATES, TaskInstanceState
from squall.execution.deferral import NO_RESUME

log = logging.getLogger(__name__)

TI = TaskInstanceState

#: Most keys in one ``IN`` list (up to 4 bind parameters each; SQLite allows 32766 since
#: 3.32, 999 before).
_MAX_KEYS_PER_STATEMENT = 2000
_MAX_KEYS_OLD_SQLITE = 240


def schedule_tis(session: Session, tis: Sequence[TaskInstance], *, now: datetime) -> int:
    """Move task instances to SCHEDULED if each is still in the state it was seen in.

    ``none`` and ``up_for_retry`` start a new try (``try_number + 1``, with nothing to
    resume); ``up_for_reschedule`` continues the same try. A deferred try never comes
    through here: its trigger (or the watchdog's timeout) moves it to SCHEDULED itself, and
    it stays the same try. The ``state_reason`` (why it waited, or how the last try
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
            # a new try starts in execute: nothing of an earlier try's deferral is resumed
            values.update(try_number=TaskInstance.try_number + 1, **NO_RESUME)
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
                           TaskInstance.map_index, TaskInstance.try_number)
        ).all()
        tries = {(r.dag_id, r.run_id, r.task_id, r.map_index): r.try_number for r in rows}
        for ti in chunk:
            key = (ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
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


#: :func:`load_tis`'s statement, built once: each call only binds the run's key (building
#: and cache-keying a new statement every call cost more than running it)
_LOAD_TIS = (
    select(TaskInstance)
    .where(TaskInstance.dag_id == bindparam("run_dag_id"),
           TaskInstance.run_id == bindparam("run_run_id"))
    .execution_options(populate_existing=True)
)


def load_tis(session: Session, dag_run: DagRun) -> list[TaskInstance]:
    """Every task instance of the run, in one query, refreshed from the database."""
    return list(session.scalars(
        _LOAD_TIS, {"run_dag_id": dag_run.dag_id, "run_run_id": dag_run.run_id}))


def bulk_set(session: Session, tis: Sequence[TaskInstance], *, expected: Collection[str],
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
    """``key IN (...)`` for task instances: by task_id when they share one run and none is
    mapped, by (task_id, map_index) when they share one run."""
    runs = {(ti.dag_id, ti.run_id) for ti in tis}
    mapped = any(ti.map_index != -1 for ti in tis)
    if len(runs) == 1:
        dag_id, run_id = next(iter(runs))
        same_run = and_(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        if not mapped:
            return and_(same_run, TaskInstance.map_index == -1,
                        TaskInstance.task_id.in_(sorted({ti.task_id for ti in tis})))
        return and_(same_run, tuple_(TaskInstance.task_id, TaskInstance.map_index).in_(
            sorted({(ti.task_id, ti.map_index) for ti in tis})))
    return tuple_(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id,
                  TaskInstance.map_index).in_(
        sorted({(ti.dag_id, ti.run_id, ti.task_id, ti.map_index) for ti in tis})
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
