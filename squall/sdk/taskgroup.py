"""TaskGroup: a named group of tasks whose ids are prefixed and which acts as one end of ``>>``."""

from __future__ import annotations

import re
from types import TracebackType
from typing import TYPE_CHECKING, Any

from squall.common.errors import DagDefinitionError
from squall.sdk.edges import DependencyMixin

if TYPE_CHECKING:
    from squall.sdk.dag import DAG
    from squall.sdk.operators.base import BaseOperator


class TaskGroupContext:
    _stack: list[TaskGroup] = []

    @classmethod
    def push(cls, group: TaskGroup) -> None:
        cls._stack.append(group)

    @classmethod
    def pop(cls) -> None:
        if cls._stack:
            cls._stack.pop()

    @classmethod
    def current(cls, dag: DAG) -> TaskGroup:
        for group in reversed(cls._stack):
            if group.dag is dag:
                return group
        return dag.task_group


class TaskGroup(DependencyMixin):
    """A group of tasks. ``TaskGroup("extract")`` prefixes its tasks' ids with ``extract.``."""

    def __init__(
        self,
        group_id: str | None,
        *,
        dag: DAG | None = None,
        parent_group: TaskGroup | None = None,
        prefix_group_id: bool = True,
        default_args: dict[str, Any] | None = None,
        tooltip: str = "",
        ui_color: str = "CornflowerBlue",
        ui_fgcolor: str = "#000",
        add_suffix_on_collision: bool = False,
        _root: bool = False,
    ) -> None:
        from squall.sdk.dag import DagContext

        self.tooltip = tooltip
        #: the group's colours in a graph view (Airflow's; kept and serialized for the UI)
        self.ui_color = ui_color
        self.ui_fgcolor = ui_fgcolor
        self.prefix_group_id = prefix_group_id
        self.default_args: dict[str, Any] = dict(default_args or {})
        self.children: dict[str, BaseOperator | TaskGroup] = {}
        if _root:
            assert dag is not None
            self.dag = dag
            self.group_id = None
            self.parent_group = None
            return
        if not group_id:
            raise DagDefinitionError("a TaskGroup needs a non-empty group_id")
        if parent_group is not None:
            dag = dag or parent_group.dag
        dag = dag or DagContext.current()
        if dag is None:
            raise DagDefinitionError(
                f"TaskGroup {group_id!r} was created outside a DAG: use `with DAG(...)` or dag="
            )
        self.dag = dag
        self.parent_group = parent_group or TaskGroupContext.current(dag)
        if add_suffix_on_collision:
            group_id = dedup_group_id(group_id, used_group_ids(dag))
        self._label = group_id
        self.group_id = self.parent_group.child_id(group_id)
        siblings = self.parent_group.children
        if self.group_id in siblings or self.group_id in dag.task_dict:
            raise DagDefinitionError(
                f"DAG {dag.dag_id}: group_id {self.group_id!r} is already used"
            )
        siblings[self.group_id] = self

    @classmethod
    def create_root(cls, dag: DAG) -> TaskGroup:
        return cls(None, dag=dag, _root=True)

    @property
    def is_root(self) -> bool:
        return self.group_id is None

    def child_id(self, label: str) -> str:
        if self.is_root or not self.prefix_group_id:
            # a group that does not prefix still passes its parent's prefix on
            if self.parent_group is not None and not self.is_root:
                return self.parent_group.child_id(label)
            return label
        return f"{self.group_id}.{label}"

    def add(self, task: BaseOperator) -> None:
        self.children[task.task_id] = task

    def iter_tasks(self) -> list[BaseOperator]:
        from squall.sdk.operators.base import BaseOperator

        out: list[BaseOperator] = []
        for child in self.children.values():
            if isinstance(child, BaseOperator):
                out.append(child)
            else:
                out.extend(child.iter_tasks())
        return out

    @property
    def roots(self) -> list[BaseOperator]:
        tasks = self.iter_tasks()
        ids = {t.task_id for t in tasks}
        return [t for t in tasks if not (t.upstream_task_ids & ids)]

    @property
    def leaves(self) -> list[BaseOperator]:
        """The tasks an edge out of the group leaves from: those with no downstream in the
        group, where a teardown gives way to the work before it (Airflow 2.7+'s
        ``TaskGroup.get_leaves``), so ``group >> next`` does not wait for the teardown."""
        tasks = self.iter_tasks()
        by_id = {t.task_id: t for t in tasks}

        def busy(task: BaseOperator, exclude: str) -> bool:  # a work task downstream in the group
            return any(d != exclude and d in by_id and not by_id[d].is_teardown
                       for d in task.downstream_task_ids)

        def before_teardown(task: BaseOperator) -> list[BaseOperator]:
            found: list[BaseOperator] = []
            for up in (by_id[u] for u in sorted(task.upstream_task_ids) if u in by_id):
                if up.is_teardown:
                    found.extend(before_teardown(up))
                elif not (task.is_teardown and up.is_setup) and not busy(up, task.task_id):
                    found.append(up)
            return found

        leaves: dict[str, BaseOperator] = {}
        for task in tasks:
            if task.downstream_task_ids & by_id.keys():
                continue
            for leaf in before_teardown(task) if task.is_teardown else [task]:
                leaves.setdefault(leaf.task_id, leaf)
        return list(leaves.values())

    def merged_default_args(self) -> dict[str, Any]:
        """Default args from the DAG, then each enclosing group, innermost last."""
        chain: list[TaskGroup] = []
        group: TaskGroup | None = self
        while group is not None:
            chain.append(group)
            group = group.parent_group
        merged = dict(self.dag.default_args)
        for g in reversed(chain):
            merged.update(g.default_args)
        return merged

    def iter_groups(self) -> list[TaskGroup]:
        """This group and every group below it."""
        out: list[TaskGroup] = [self]
        for child in self.children.values():
            if isinstance(child, TaskGroup):
                out.extend(child.iter_groups())
        return out

    def __enter__(self) -> TaskGroup:
        TaskGroupContext.push(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        TaskGroupContext.pop()

    def __repr__(self) -> str:
        return f"<TaskGroup {self.group_id}>"


def used_group_ids(dag: DAG) -> set[str]:
    """The ids a new group may not take: every group id and task id of ``dag`` (Airflow's
    ``TaskGroup.used_group_ids``)."""
    used = {g.group_id for g in dag.task_group.iter_groups() if g.group_id is not None}
    return used | set(dag.task_dict)


def dedup_group_id(label: str, used: set[str]) -> str:
    """``label``, or ``label__N`` with N one more than the largest suffix in use, when
    ``label`` is taken: the rule of Airflow 2.10's
    ``TaskGroup._check_for_group_id_collisions`` (airflow/utils/task_group.py), which a
    ``@task_group`` function called again follows (``group``, ``group__1``, ``group__2``).
    As there, ``label`` is compared with the full ids in use, so a nested group's label is
    only renamed when it collides with a top-level id."""
    if label not in used:
        return label
    base = re.split(r"__\d+$", label)[0]
    pattern = re.compile(rf"^{re.escape(base)}__(\d+)$")
    suffixes = sorted(int(m.group(1)) for u in used if (m := pattern.match(u)))
    return f"{label}__1" if not suffixes else f"{base}__{suffixes[-1] + 1}"


def task_group(group_id: str | None = None, **group_kwargs: Any) -> Any:
    """``@task_group``: the decorated function's tasks are created inside a new group; its
    ``.expand(...)`` / ``.partial(...)`` map the group (squall.sdk.mapped_group).

    Each call makes a new group; a call whose group id is taken gets ``__1``, ``__2`` ...
    (:func:`dedup_group_id`). The function's docstring is the group's tooltip unless one is
    given. What the function returns (a task or an XComArg) is the call's result, so
    ``start >> my_group() >> end`` binds to it; otherwise the group is.
    """
    group_kwargs.setdefault("add_suffix_on_collision", True)

    def decorator(func: Any) -> Any:
        from squall.sdk.mapped_group import MappableTaskGroupFunction

        return MappableTaskGroupFunction(func, group_id, group_kwargs)

    if callable(group_id):
        func, group_id = group_id, None
        return decorator(func)
    return decorator
