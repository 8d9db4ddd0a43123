"""Clearing across DAGs through ``ExternalTaskMarker`` (Airflow 2's ``DAG.clear`` with
``include_subdags``, in ``DAG._get_task_instances(include_dependent_dags=True)``).

When the task instances to clear include an ExternalTaskMarker's, the marked task of the
other DAG (``external_dag_id`` / ``external_task_id``, in that DAG's run whose logical date
is the marker's rendered ``execution_date``) is cleared too, with everything downstream of
it in its DAG (and that task's relevant setups and teardowns), and so on through the markers
found there, at most ``recursion_depth`` markers deep (the first marker's); a deeper chain
(or a cycle) is refused with :class:`ClearError`, and nothing is cleared. A state filter
(``--only-failed``) applies at every step, as in Airflow.

``squall tasks clear`` follows markers unless ``-x`` / ``--exclude-subdags`` (as ``airflow
tasks clear``), the API's ``clearTaskInstances`` when ``include_subdags`` is true (false by
default, as in Airflow's API), the web UI when its "recursive" box is ticked.

The marker's ``execution_date`` is rendered in this process with the run's template context
from the serialized DAG (no user code: ``user_defined_macros`` are not there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pendulum
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.errors import SquallError
from squall.common.models import DagRun, TaskInstance
from squall.common.state import TaskInstanceState
from squall.dag_processing.serialization import marker_settings
from squall.dag_processing.sync import load_serialized_dags
from squall.sdk.dag import DAG
from squall.sdk.templating import build_context, make_jinja_env, render_template

log = logging.getLogger(__name__)


class ClearError(SquallError):
    """A clear that cannot be done (an ExternalTaskMarker chain too deep, a marked DAG
    that is not in the metadata database)."""


#: ``squall.runs.clear.select_task_instances``'s shape: (session, dag, task_regex,
#: downstream, run_id, states) -> the task instances a clear selects in that DAG
Select = Callable[..., list[TaskInstance]]


def follow_markers(session: Session, dag: DAG, tis: Sequence[TaskInstance], *,
                   select: Select,
                   states: Sequence[TaskInstanceState] | None = None) -> list[TaskInstance]:
    """``tis`` (of ``dag``) and the task instances of other DAGs their markers reach, each
    marked task selected in its DAG with ``select`` (with its downstream tasks)."""
    found: dict[tuple[str, str, str], TaskInstance] = {_key(ti): ti for ti in tis}
    _Walk(session, select, states).visit(dag, list(tis), found, depth=0)
    return list(found.values())


def _key(ti: TaskInstance) -> tuple[str, str, str]:
    return (ti.dag_id, ti.task_id, ti.run_id)


class _Walk:
    def __init__(self, session: Session, select: Select,
                 states: Sequence[TaskInstanceState] | None) -> None:
        self.session = session
        self.select = select
        self.states = states
        self.dags: dict[str, DAG] = {}
        self.visited: set[tuple[str, str, str]] = set()
        self.max_depth: int | None = None

    def visit(self, dag: DAG, tis: list[TaskInstance],
              found: dict[tuple[str, str, str], TaskInstance], depth: int) -> None:
        for ti in tis:
            task = dag.task_dict.get(ti.task_id)
            target = marker_settings(task) if task is not None else None
            if target is None or _key(ti) in self.visited:
                continue
            self.visited.add(_key(ti))
            if self.max_depth is None:
                self.max_depth = int(target["recursion_depth"])
            if depth + 1 > self.max_depth:
                raise ClearError(
                    f"Maximum recursion depth {self.max_depth} reached for "
                    f"ExternalTaskMarker {ti.dag_id}.{ti.task_id}. Attempted to clear too many "
                    "tasks or there may be a cyclic dependency.")
            when = self._execution_date(dag, ti, target)
            ext_dag_id, ext_task_id = target["external_dag_id"], target["external_task_id"]
            run_ids = self.session.scalars(
                select(TaskInstance.run_id).join(
                    DagRun, (DagRun.dag_id == TaskInstance.dag_id)
                    & (DagRun.run_id == TaskInstance.run_id))
                .where(TaskInstance.dag_id == ext_dag_id, TaskInstance.task_id == ext_task_id,
                       DagRun.logical_date == when)).all()
            for run_id in run_ids:
                ext_dag = self._dag(ext_dag_id)
                more = self.select(
                    self.session, ext_dag, task_regex=f"^{_escape(ext_task_id)}$",
                    downstream=True, run_id=run_id, states=self.states)
                log.info("ExternalTaskMarker %s.%s: clearing %d task instance(s) of %s %s",
                         ti.dag_id, ti.task_id, len(more), ext_dag_id, run_id)
                for other in more:
                    found.setdefault(_key(other), other)
                self.visit(ext_dag, more, found, depth + 1)

    def _dag(self, dag_id: str) -> DAG:
        if dag_id not in self.dags:
            loaded = load_serialized_dags(self.session, [dag_id])
            if dag_id not in loaded:
                raise ClearError(f"Could not find dag {dag_id} (an ExternalTaskMarker's "
                                 "external_dag_id) in the metadata database")
            self.dags[dag_id] = loaded[dag_id]
        return self.dags[dag_id]

    def _execution_date(self, dag: DAG, ti: TaskInstance,
                        target: dict[str, Any]) -> pendulum.DateTime:
        run = self.session.scalars(select(DagRun).where(
            DagRun.dag_id == ti.dag_id, DagRun.run_id == ti.run_id)).one()
        template = str(target["execution_date"])
        context = build_context(dag=dag, task=dag.task_dict[ti.task_id], dag_run=run, ti=ti)
        rendered = render_template(template, context, make_jinja_env(dag), ())
        try:
            parsed = pendulum.parse(str(rendered))
        except (ValueError, TypeError) as exc:
            raise ClearError(f"ExternalTaskMarker {ti.dag_id}.{ti.task_id}: execution_date "
                             f"{template!r} rendered to {rendered!r}, not a date") from exc
        if not isinstance(parsed, pendulum.DateTime):
            raise ClearError(f"ExternalTaskMarker {ti.dag_id}.{ti.task_id}: execution_date "
                             f"{template!r} rendered to {rendered!r}, not a date and time")
        return parsed


def _escape(task_id: str) -> str:
    import re

    return re.escape(task_id)
