"""Expanding mapped tasks: how many task instances a mapped task gets, and making them.

A mapped task (:class:`squall.sdk.mapping.MappedOperator`, or its serialized stand-in with a
``mapped_spec``) has one task instance with map index -1 until the upstreams its expansion
reads are done. Then, as Airflow 2's ``AbstractOperator.expand_mapped_task`` does, the number
of instances is computed from the spec (literal lengths, the length of an upstream's return
value, the number of a mapped upstream's return values) and

* n >= 1: the placeholder becomes map index 0 and instances 1..n-1 are inserted, in one
  multi-row INSERT (1,000 instances are one statement);
* n == 0: the placeholder is marked ``skipped`` (it keeps map index -1);
* unknown (the upstream pushed nothing it can be mapped over): it is ``upstream_failed``.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from squall.common.models import DagRun, TaskInstance, XCom
from squall.common.state import TaskInstanceState
from squall.runs.dag_shape import DagLike, TaskLike

log = logging.getLogger(__name__)

TI = TaskInstanceState
RETURN_VALUE_KEY = "return_value"
#: rows per INSERT statement (kept under SQLite's and PostgreSQL's bound-parameter limits)
INSERT_CHUNK = 2000


def mapped_spec(task: TaskLike | Any) -> Mapping[str, Any] | None:
    """The expand input of a mapped task (None for an ordinary one)."""
    spec = getattr(task, "mapped_spec", None)
    return spec if isinstance(spec, Mapping) else None


def is_mapped(task: TaskLike | Any) -> bool:
    return mapped_spec(task) is not None


@dataclass(frozen=True)
class Expansion:
    """What :func:`expand_mapped_task` did: the number of instances (None: unknown)."""

    task_id: str
    length: int | None
    state: TaskInstanceState | None  # the placeholder's new state when it was not expanded


class _Lengths:
    """Reads the lengths an expand spec needs, from one run's XComs."""

    def __init__(self, session: Session, dag: DagLike, dag_run: DagRun) -> None:
        self.session = session
        self.dag = dag
        self.dag_run = dag_run

    def of(self, spec: Mapping[str, Any]) -> int | None:
        kind = spec.get("type")
        if kind == "literal":
            return int(spec["length"])
        if kind == "xcom":
            return self._xcom_length(str(spec["task_id"]), str(spec.get("key")
                                                               or RETURN_VALUE_KEY))
        if kind == "map":
            return self.of(spec["arg"])
        if kind == "zip":
            lengths = [self.of(a) for a in spec["args"]]
            if any(n is None for n in lengths):
                return None
            known = [n for n in lengths if n is not None]
            return (max(known) if spec.get("fill") else min(known)) if known else 0
        if kind == "dict":
            total = 1
            for _, value in spec["args"]:
                n = self.of(value)
                if n is None:
                    return None
                total *= n
            return total
        if kind == "list":
            return self.of(spec["value"])
        raise ValueError(f"unknown expand spec type {kind!r}")

    def _xcom_length(self, task_id: str, key: str) -> int | None:
        run = self.dag_run
        upstream = self.dag.task_dict.get(task_id)
        if upstream is not None and is_mapped(upstream):
            # a mapped upstream: as many values as its instances returned (Airflow's rule)
            return int(self.session.scalar(select(func.count()).select_from(XCom).where(
                XCom.dag_id == run.dag_id, XCom.run_id == run.run_id, XCom.task_id == task_id,
                XCom.key == key, XCom.map_index >= 0)) or 0)
        text = self.session.scalar(select(XCom.value).where(
            XCom.dag_id == run.dag_id, XCom.run_id == run.run_id, XCom.task_id == task_id,
            XCom.key == key, XCom.map_index == -1))
        if text is None:
            return None
        value = json.loads(text)
        if isinstance(value, list | dict):
            return len(value)
        return None


def expansion_length(session: Session, dag: DagLike, dag_run: DagRun,
                     spec: Mapping[str, Any]) -> int | None:
    """How many instances ``spec`` expands into in ``dag_run`` (None: not known)."""
    return _Lengths(session, dag, dag_run).of(spec)


def expand_mapped_task(session: Session, dag: DagLike, dag_run: DagRun,
                       placeholder: TaskInstance, *, now: datetime) -> Expansion:
    """Expand the mapped task of ``placeholder`` (its map index -1 instance, state none)."""
    task = dag.task_dict[placeholder.task_id]
    spec = mapped_spec(task)
    assert spec is not None, f"{placeholder.task_id} is not a mapped task"
    length = expansion_length(session, dag, dag_run, spec)
    key = placeholder.key
    guard = (TaskInstance.dag_id == key.dag_id, TaskInstance.task_id == key.task_id,
             TaskInstance.run_id == key.run_id, TaskInstance.map_index == -1,
             TaskInstance.state == TI.NONE.value)
    if length is None or length < 1:
        state = TI.UPSTREAM_FAILED if length is None else TI.SKIPPED
        reason = ("the upstream value it is mapped over is missing" if length is None
                  else "mapped over an empty list: nothing to expand")
        session.execute(update(TaskInstance).where(*guard).values(
            state=state.value, start_date=now, end_date=now, duration=0.0,
            state_reason=reason, updated_at=now).execution_options(
                synchronize_session=False))
        log.info("TaskInstance %s: %s (%s)", key, state.value, reason)
        return Expansion(key.task_id, length, state)
    moved = session.execute(update(TaskInstance).where(*guard).values(
        map_index=0, updated_at=now).execution_options(synchronize_session=False))
    if int(getattr(moved, "rowcount", 1) or 0) != 1:
        log.info("TaskInstance %s: changed before it could be expanded", key)
        return Expansion(key.task_id, None, None)
    session.expunge(placeholder)
    rows = [_row(placeholder, index, now) for index in range(1, length)]
    for start in range(0, len(rows), INSERT_CHUNK):
        session.execute(insert(TaskInstance).values(rows[start:start + INSERT_CHUNK]))
    log.info("TaskInstance %s: expanded into %d mapped task instance(s)", key, length)
    return Expansion(key.task_id, length, None)


_COPIED = ("dag_id", "task_id", "run_id", "max_tries", "pool", "pool_slots", "queue",
           "priority_weight", "operator", "executor_config")


def _row(placeholder: TaskInstance, map_index: int, now: datetime) -> dict[str, Any]:
    row = {name: getattr(placeholder, name) for name in _COPIED}
    row.update(map_index=map_index, state=TI.NONE.value, try_number=0, updated_at=now)
    return row


def mapped_placeholders(dag: DagLike, tis: Iterable[TaskInstance]) -> list[TaskInstance]:
    """The unexpanded instances (map index -1, state none) of mapped tasks."""
    return [ti for ti in tis if ti.map_index == -1 and ti.state == TI.NONE
            and ti.task_id in dag.task_dict and is_mapped(dag.task_dict[ti.task_id])]


def expand_all(session: Session, dag: DagLike, dag_run: DagRun,
               placeholders: Sequence[TaskInstance], *, now: datetime) -> list[Expansion]:
    return [expand_mapped_task(session, dag, dag_run, ti, now=now) for ti in placeholders]
