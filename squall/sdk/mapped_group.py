"""Mapped task groups (Airflow 2.5+): ``@task_group`` ``.expand(x=[...])`` /
``.partial(...)`` / ``.expand_kwargs(...)``.

The group's function is called once, with :class:`MappedArgument` placeholders for the
expanded arguments; every task it makes gets the group's expand input as its own (its
``mapped_spec``, with the group's id), so each has one instance per item, and instance N
of each reads item N (``MappedArgument.resolve``) and the same index N of the group's other
tasks (``XComArg.resolve``; the run decisions count only that index of an upstream in the
group). Airflow's reference: ``airflow/utils/task_group.py`` ``MappedTaskGroup``,
``taskinstance.py`` ``_get_relevant_upstream_map_indexes``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from squall.common.errors import DagDefinitionError
from squall.sdk.dag_defaults import current_defaults
from squall.sdk.mapping import (
    DictOfListsExpandInput,
    ExpandInput,
    MappedOperator,
    _check_value_mappable,
    _list_of_dicts,
)
from squall.sdk.operators.base import BaseOperator, Context, XComArg
from squall.sdk.taskgroup import TaskGroup


class MappedTaskGroup(TaskGroup):
    """A task group expanded over an input: its tasks are mapped with it."""

    def __init__(self, group_id: str, *, expand_input: ExpandInput, **kwargs: Any) -> None:
        super().__init__(group_id, **kwargs)
        self.expand_input = expand_input

    def spec(self) -> dict[str, Any]:
        return {**self.expand_input.spec(), "group": self.group_id}


class MappedArgument(XComArg):
    """An expanded argument of a mapped task group, inside its function: the item of the
    running instance's map index."""

    def __init__(self, group: MappedTaskGroup, name: str) -> None:
        roots = [op for arg in group.expand_input.xcom_args() for op in arg.roots]
        self.group = group
        self.name = name
        self._roots = roots
        self.operator = roots[0] if roots else None  # type: ignore[assignment]
        self.key = "return_value"

    def __repr__(self) -> str:
        return f"MappedArgument({self.group.group_id!r}, {self.name!r})"

    def __getitem__(self, key: str) -> XComArg:
        raise DagDefinitionError(f"task group {self.group.group_id}: argument {self.name} is "
                                 "mapped; pass it whole to a task")

    @property
    def roots(self) -> list[BaseOperator]:
        return list(self._roots)

    @property
    def leaves(self) -> list[BaseOperator]:
        return list(self._roots)

    def map(self, f: Callable[[Any], Any]) -> XComArg:
        raise DagDefinitionError(f"task group {self.group.group_id}: map() of a mapped "
                                 "argument is not supported")

    def resolve(self, context: Context) -> Any:
        ti = context["ti"]
        return self.group.expand_input.resolve(context, ti.map_index)[self.name]


def _tasks_in(group: TaskGroup) -> list[BaseOperator]:
    found: list[BaseOperator] = []
    for child in group.children.values():
        if isinstance(child, TaskGroup):
            found.extend(_tasks_in(child))
        else:
            found.append(child)
    return found


class MappableTaskGroupFunction:
    """What ``@task_group`` gives: calling it makes a group; ``.partial`` / ``.expand`` /
    ``.expand_kwargs`` make a mapped group."""

    def __init__(self, func: Callable[..., Any], group_id: str | None,
                 group_kwargs: Mapping[str, Any], partial_kwargs: Mapping[str, Any] | None = None
                 ) -> None:
        self.func = func
        self.group_id = group_id or func.__name__
        self.group_kwargs = dict(group_kwargs)
        self.partial_kwargs = dict(partial_kwargs or {})
        self.__name__ = getattr(func, "__name__", "task_group")
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.partial_kwargs:
            raise DagDefinitionError(f"task group {self.group_id}: a partial() task group "
                                     "must be expanded, not called")
        with TaskGroup(self.group_id, **self.group_kwargs) as group:
            if self.func.__doc__ and not group.tooltip:
                group.tooltip = self.func.__doc__
            result = self.func(*args, **kwargs)
        return result if result is not None else group

    def override(self, **changes: Any) -> MappableTaskGroupFunction:
        """A copy with these TaskGroup arguments (``group_id``, ``tooltip``...) changed."""
        group_id = changes.pop("group_id", self.group_id)
        return MappableTaskGroupFunction(self.func, group_id,
                                         {**self.group_kwargs, **changes}, self.partial_kwargs)

    def partial(self, **kwargs: Any) -> MappableTaskGroupFunction:
        return MappableTaskGroupFunction(self.func, self.group_id, self.group_kwargs,
                                         {**self.partial_kwargs, **kwargs})

    def expand(self, **kwargs: Any) -> Any:
        if not kwargs:
            raise DagDefinitionError(f"task group {self.group_id}: expand() has no arguments "
                                     "to expand against")
        for name, value in kwargs.items():
            _check_value_mappable(f"task group {self.group_id}", "expand", name, value)
        return self._expand(DictOfListsExpandInput(kwargs), list(kwargs))

    def expand_kwargs(self, kwargs: Any) -> Any:
        import inspect

        names = [p.name for p in inspect.signature(self.func).parameters.values()
                 if p.name not in self.partial_kwargs
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        return self._expand(_list_of_dicts(f"task group {self.group_id}", kwargs), names)

    def _expand(self, expand_input: ExpandInput, names: list[str]) -> Any:
        group = MappedTaskGroup(self.group_id, expand_input=expand_input, **self.group_kwargs)
        with group:
            mapped = {name: MappedArgument(group, name) for name in names}
            result = self.func(**self.partial_kwargs, **mapped)
        tasks = _tasks_in(group)
        ids = {t.task_id for t in tasks}
        upstreams = [op for arg in expand_input.xcom_args() for op in arg.roots]
        spec = group.spec()
        for task in tasks:
            if isinstance(task, MappedOperator):
                raise DagDefinitionError(f"task {task.task_id}: a mapped task inside a mapped "
                                         f"task group ({group.group_id}) is not supported")
            task.__dict__["mapped_spec"] = spec
            task.__dict__["mapped_group"] = group
            task.__dict__["max_map_length"] = current_defaults().max_map_length
            if not task.upstream_task_ids & ids:  # a root of the group waits for its input
                for op in upstreams:
                    if op.task_id not in ids:
                        task.set_upstream(op)
        return result if result is not None else group


def same_mapped_group(task: Any, other: Any) -> bool:
    """Whether both tasks are in one mapped task group (instance N reads instance N)."""
    group = getattr(task, "mapped_group", None)
    return group is not None and getattr(other, "mapped_group", None) is group
