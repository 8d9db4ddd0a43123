"""How far another DAG has got: the counts ``ExternalTaskSensor`` pokes with and
``WorkflowTrigger`` waits on (Airflow 2.10's ``airflow/utils/sensor_helper.py``), one
home for both. Plain blocking queries: a trigger runs them in a thread."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from squall.common.errors import SquallError
from squall.common.models import DagRun, SerializedDagModel, TaskInstance

__all__ = ["count_in_states", "group_task_ids", "serialized_dag"]


def serialized_dag(session: Session, dag_id: str) -> dict[str, Any]:
    """The DAG part of ``dag_id``'s serialized form (empty when it has none)."""
    data = session.scalar(select(SerializedDagModel.data).where(
        SerializedDagModel.dag_id == dag_id))
    return dict((data or {}).get("dag") or {})


def _find_group(spec: Any, group_id: str) -> dict[str, Any] | None:
    """The serialized task group ``group_id`` inside ``spec`` (a serialized task group)."""
    todo = [spec] if isinstance(spec, dict) else []
    while todo:
        group = todo.pop()
        if group.get("group_id") == group_id:
            return group
        todo.extend(c for c in group.get("children") or [] if c.get("type") == "group")
    return None


def _task_ids_in(group: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for child in group.get("children") or []:
        if child.get("type") == "group":
            found |= _task_ids_in(child)
        else:
            found.add(str(child["task_id"]))
    return found


def group_task_ids(session: Session, dag_id: str, group_id: str) -> list[str]:
    """The task ids inside task group ``group_id`` of ``dag_id`` (at any depth), from its
    serialized form; :class:`SquallError` when there is no such group."""
    group = _find_group(serialized_dag(session, dag_id).get("task_group"), group_id)
    if group is None:
        raise SquallError(f"the external task group {group_id!r} in DAG {dag_id!r} does not "
                          "exist")
    return sorted(_task_ids_in(group))


def count_in_states(session: Session, dag_id: str, dates: Sequence[datetime],
                    task_ids: Sequence[str] | None, states: Sequence[str]) -> float:
    """How many of the logical ``dates`` have their task instances ``task_ids`` (all of
    them; a fraction when only some are) or, with no task ids, their run, of ``dag_id`` in
    ``states``."""
    if not dates:
        return 0.0
    if not task_ids:
        return float(session.scalar(
            select(func.count()).select_from(DagRun).where(
                DagRun.dag_id == dag_id, DagRun.state.in_(list(states)),
                DagRun.logical_date.in_(list(dates)))) or 0)
    count = session.scalar(
        select(func.count()).select_from(TaskInstance)
        .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
              & (DagRun.run_id == TaskInstance.run_id))
        .where(TaskInstance.dag_id == dag_id,
               TaskInstance.task_id.in_(list(task_ids)),
               TaskInstance.state.in_(list(states)),
               DagRun.logical_date.in_(list(dates)))) or 0
    return count / len(task_ids)
