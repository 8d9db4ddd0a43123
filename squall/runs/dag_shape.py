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
    @property
    def is_setup(self) -> bool: ...
    @property
    def is_teardown(self) -> bool: ...
    @property
    def on_failure_fail_dagrun(self) -> bool: ...


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
    """The tasks whose states decide a run's state: Airflow 2.7+'s effective leaves
    (``DagRun._tis_for_dagrun_state``). A teardown is left out, and does not keep its
    upstream from being a leaf, unless it has ``on_failure_fail_dagrun``; a DAG of nothing
    but such teardowns falls back to its plain leaves."""
    downstream = downstream_map(tasks)

    def ignorable(task_id: str) -> bool:
        task = tasks[task_id]
        return task.is_teardown and not task.on_failure_fail_dagrun

    leaves = {tid for tid in tasks
              if not ignorable(tid) and all(ignorable(d) for d in downstream[tid])}
    return leaves or {tid for tid in tasks if not downstream[tid]}


def flat_relatives(tasks: Mapping[str, TaskLike], downstream: Mapping[str, AbstractSet[str]],
                   task_id: str, *, upstream: bool) -> set[str]:
    """Every task reachable upstream (or downstream) of ``task_id``, not itself."""
    seen: set[str] = set()
    todo = list(tasks[task_id].upstream_task_ids if upstream else downstream[task_id])
    while todo:
        tid = todo.pop()
        if tid in seen or tid not in tasks:
            continue
        seen.add(tid)
        todo.extend(tasks[tid].upstream_task_ids if upstream else downstream[tid])
    return seen


def relevant_setups_and_teardowns(tasks: Mapping[str, TaskLike],
                                  downstream: Mapping[str, AbstractSet[str]],
                                  task_id: str) -> set[str]:
    """The setups upstream of ``task_id`` that are *relevant* to it, with their teardowns
    (Airflow's ``get_upstreams_only_setups_and_teardowns``): a setup is relevant when it
    has no teardown, or a teardown downstream of ``task_id``."""
    teardowns_below = {d for d in flat_relatives(tasks, downstream, task_id, upstream=False)
                       if tasks[d].is_teardown}
    found: set[str] = set()
    for up in flat_relatives(tasks, downstream, task_id, upstream=True):
        if not tasks[up].is_setup:
            continue
        its_teardowns = {d for d in downstream[up] if tasks[d].is_teardown}
        if not its_teardowns or its_teardowns & teardowns_below:
            found.add(up)
            found |= its_teardowns - {task_id}
    return found


def indirect_setups(tasks: Mapping[str, TaskLike], downstream: Mapping[str, AbstractSet[str]],
                    task_id: str) -> set[str]:
    """The relevant setups a (non-teardown) task waits for besides its direct upstreams:
    they must all succeed before it runs (Airflow's ``_evaluate_setup_constraint``)."""
    task = tasks[task_id]
    if task.is_teardown:
        return set()
    return {s for s in relevant_setups_and_teardowns(tasks, downstream, task_id)
            if tasks[s].is_setup and s not in task.upstream_task_ids}


def upstreams_follow_setups(tasks: Mapping[str, TaskLike],
                            downstream: Mapping[str, AbstractSet[str]], task_id: str) -> set[str]:
    """Every upstream of ``task_id`` and, for each upstream setup, its teardowns (Airflow's
    ``get_upstreams_follow_setups``)."""
    found: set[str] = set()
    for up in flat_relatives(tasks, downstream, task_id, upstream=True):
        found.add(up)
        if tasks[up].is_setup:
            found |= {d for d in downstream[up] if tasks[d].is_teardown and d != task_id}
    return found
