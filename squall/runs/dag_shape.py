"""What the scheduler reads of a DAG: the shape of a task and of a DAG (a BaseOperator and
:class:`squall.sdk.dag.DAG`, or their stand-ins rebuilt from ``serialized_dag``), and the
graph walks the run decisions need (downstream map, topological order, leaves).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any, Protocol

from squall.sdk.timetables import Timetable


class TaskLike(Protocol):
    """What the scheduler reads of a task (a BaseOperator or its deserialised stand-in)."""

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


class DagLike(Protocol):
    """What the scheduler reads of a DAG."""

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


def downstream_map(tasks: Mapping[str, TaskLike]) -> dict[str, set[str]]:
    downstream: dict[str, set[str]] = {task_id: set() for task_id in tasks}
    for task_id, task in tasks.items():
        for up in task.upstream_task_ids:
            if up in downstream:
                downstream[up].add(task_id)
    return downstream


def topological_order(tasks: Mapping[str, TaskLike],
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


def leaf_ids(tasks: Mapping[str, TaskLike]) -> set[str]:
    has_downstream = {up for task in tasks.values() for up in task.upstream_task_ids}
    return {tid for tid in tasks if tid not in has_downstream}
