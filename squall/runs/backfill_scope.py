"""What a backfill's options change about the runs it creates, for the scheduler's steps
that create and decide them.

* ``task_regex`` (``-t``): the runs hold only the matching tasks and, unless
  ``ignore_dependencies`` (``-i``), every task upstream of them, as Airflow's
  ``dag.partial_subset``. With ``-i`` a selected task does not wait for tasks outside the
  selection: its upstream ids are cut down to the selected ones.
* ``pool`` (``--pool``): every task instance of the runs goes to that pool.
* ``ignore_first_depends_on_past`` (``-I``): ``depends_on_past`` is not looked at in the
  run at the first date of the range (later runs respect it).
* ``mark_success`` (``-m``): the runs' task instances are created SUCCESS; nothing runs.

:meth:`BackfillScope.dag_for` gives the DAG as such a run sees it: the DAG itself when the
backfill changes nothing, else a :class:`ScopedDag` view of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.models import Backfill, DagRun
from squall.runs.clear import matching_task_ids
from squall.sdk.dag import DAG

#: The key of ``backfill.options`` holding the first logical date of the range (ISO 8601),
#: written when the backfill is created; ``-I`` compares a run's date with it.
FIRST_DATE_KEY = "first_logical_date"


@dataclass(frozen=True)
class BackfillScope:
    """A backfill's options as they bear on its runs."""

    backfill_id: int
    task_regex: str | None = None
    ignore_dependencies: bool = False
    pool: str | None = None
    mark_success: bool = False
    ignore_first_depends_on_past: bool = False
    first_logical_date: datetime | None = None

    @classmethod
    def of(cls, backfill_id: int, options: Mapping[str, Any] | None) -> BackfillScope:
        opts = options or {}
        first = opts.get(FIRST_DATE_KEY)
        return cls(
            backfill_id=backfill_id,
            task_regex=opts.get("task_regex") or None,
            ignore_dependencies=bool(opts.get("ignore_dependencies")),
            pool=opts.get("pool") or None,
            mark_success=bool(opts.get("mark_success")),
            ignore_first_depends_on_past=bool(opts.get("ignore_first_depends_on_past")),
            first_logical_date=datetime.fromisoformat(first) if first else None,
        )

    def ignores_past(self, run: DagRun) -> bool:
        """Whether ``depends_on_past`` is left out for ``run`` (``-I``, its first date)."""
        return (self.ignore_first_depends_on_past and self.first_logical_date is not None
                and run.logical_date.timestamp() == self.first_logical_date.timestamp())

    def task_ids(self, dag: DAG) -> set[str]:
        """The tasks of ``dag`` the backfill's runs hold."""
        if self.task_regex is None:
            return set(dag.task_dict)
        return set(matching_task_ids(dag, self.task_regex,
                                     upstream=not self.ignore_dependencies))

    def dag_for(self, dag: DAG) -> DAG:
        """``dag`` as the backfill's runs see it (see the module docstring)."""
        if self.task_regex is None and self.pool is None:
            return dag
        # a view with the DAG's shape; typed as the DAG it stands for
        return cast(DAG, ScopedDag(dag, self.task_ids(dag), self.pool))


class _ScopedTask:
    """A task of a :class:`ScopedDag`: its upstream ids cut to the selection, its pool
    replaced when the backfill names one; everything else is the task's."""

    def __init__(self, task: Any, selected: AbstractSet[str], pool: str | None) -> None:
        self._task = task
        self.upstream_task_ids = frozenset(task.upstream_task_ids) & selected
        self.pool = pool if pool is not None else task.pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


class ScopedDag:
    """A DAG seen through a backfill's ``task_regex`` and ``pool``: ``task_dict`` holds the
    selected tasks only; every other attribute is the DAG's."""

    def __init__(self, dag: DAG, selected: Iterable[str], pool: str | None) -> None:
        self._dag = dag
        chosen = frozenset(selected)
        self.task_dict = {tid: _ScopedTask(task, chosen, pool)
                          for tid, task in dag.task_dict.items() if tid in chosen}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dag, name)


def load_scopes(session: Session, backfill_ids: Iterable[int | None]) -> dict[int,
                                                                               BackfillScope]:
    """The scopes of these backfills (one query; none when there are no ids)."""
    ids = sorted({i for i in backfill_ids if i is not None})
    if not ids:
        return {}
    rows = session.execute(select(Backfill.id, Backfill.options)
                           .where(Backfill.id.in_(ids))).all()
    return {row.id: BackfillScope.of(row.id, row.options) for row in rows}
