"""PythonOperator and its branching / short-circuiting variants."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from squall.common.errors import DagDefinitionError, InvalidBranchError
from squall.sdk.datasets.events import OutletEventAccessors, run_with_metadata
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.operators.base import BaseOperator, Context

if TYPE_CHECKING:
    from squall.sdk.dag import DAG
    from squall.sdk.taskgroup import TaskGroup

log = logging.getLogger(__name__)

__all__ = [
    "BranchPythonOperator",
    "InvalidBranchError",
    "PythonOperator",
    "ShortCircuitOperator",
    "SkipMixin",
    "call_with_context",
    "determine_kwargs",
]


# --------------------------------------------------------------------------- calling


def determine_kwargs(
    func: Callable[..., Any], args: Collection[Any], context: Mapping[str, Any]
) -> dict[str, Any]:
    """The keyword arguments to call ``func(*args, **kwargs)`` with, taken from ``context``.

    A function taking ``**kwargs`` gets every entry; otherwise only the entries named like
    one of its parameters. Parameters already filled by ``args`` are left out.
    """
    params = list(inspect.signature(func).parameters.values())
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    taken = {p.name for p in positional[: len(args)]}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return {k: v for k, v in context.items() if k not in taken}
    names = {
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    } - taken
    return {k: context[k] for k in names if k in context}


def call_with_context(
    func: Callable[..., Any],
    op_args: Collection[Any] | None,
    op_kwargs: Mapping[str, Any] | None,
    context: Context,
    templates_dict: dict[str, Any] | None = None,
    *,
    outlet_events: OutletEventAccessors | None = None,
) -> Any:
    """Call ``func`` as PythonOperator does: ``op_args`` positionally, then whichever of the
    context entries, ``op_kwargs`` (which win over context entries) and ``templates_dict``
    its signature asks for (all of them when it takes ``**kwargs``). With
    ``outlet_events``, a generator function is run to its end, the :class:`Metadata` it
    yields going to them (:func:`~squall.sdk.datasets.events.run_with_metadata`)."""
    args = list(op_args or [])
    available = {**context, **(op_kwargs or {}), "templates_dict": templates_dict}
    kwargs = determine_kwargs(func, args, available)
    if outlet_events is not None:
        return run_with_metadata(func, outlet_events, *args, **kwargs)
    return func(*args, **kwargs)


# --------------------------------------------------------------------------- skipping


def find_task_group(dag: DAG, group_id: str) -> TaskGroup | None:
    """The task group of ``dag`` whose id is ``group_id``, if there is one."""
    from squall.sdk.taskgroup import TaskGroup

    todo: list[TaskGroup] = [dag.task_group]
    while todo:
        group = todo.pop()
        if group.group_id == group_id:
            return group
        todo.extend(c for c in group.children.values() if isinstance(c, TaskGroup))
    return None


class SkipMixin(BaseOperator):
    """Helpers for operators that skip tasks downstream of themselves."""

    def skip(self, context: Context, task_ids: Iterable[str]) -> None:
        """Mark these task instances of the current DAG run skipped."""
        ids = sorted(set(task_ids))
        if not ids:
            return
        log.info("Skipping tasks %s", ids)
        context["ti"].skip_tasks(ids)

    def expand_branch_ids(self, branch_task_ids: Any) -> set[str]:
        """Task ids named by a branch result: task ids as is, task group ids replaced by
        the ids of the group's root tasks. Anything else raises InvalidBranchError."""
        if self.dag is None:
            raise InvalidBranchError(f"task {self.task_id}: a branching task needs a DAG")
        if branch_task_ids is None:
            items: list[Any] = []
        elif isinstance(branch_task_ids, str):
            items = [branch_task_ids]
        elif isinstance(branch_task_ids, Iterable):
            items = list(branch_task_ids)
        else:
            raise InvalidBranchError(
                f"task {self.task_id}: a branch must return a task id, a list of task ids or "
                f"None, got {type(branch_task_ids).__name__} {branch_task_ids!r}"
            )
        expanded: set[str] = set()
        invalid: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise InvalidBranchError(
                    f"task {self.task_id}: branch task ids must be strings, got "
                    f"{type(item).__name__} {item!r}"
                )
            if item in self.dag.task_dict:
                expanded.add(item)
                continue
            group = find_task_group(self.dag, item)
            if group is None:
                invalid.append(item)
            else:
                expanded.update(t.task_id for t in group.roots)
        if invalid:
            raise InvalidBranchError(
                f"task {self.task_id}: branch returned unknown task id(s) "
                f"{', '.join(repr(i) for i in invalid)}; its direct downstream tasks are "
                f"{', '.join(sorted(self.downstream_task_ids)) or '(none)'}"
            )
        return expanded

    def skip_all_except(self, context: Context, branch_task_ids: Any) -> list[str]:
        """Follow ``branch_task_ids`` (task or task group ids) and skip every other direct
        downstream task; returns the skipped ids.

        A direct downstream task that is also downstream of a followed task (the "join" of
        an empty branch) is not skipped.
        """
        follow = self.expand_branch_ids(branch_task_ids)
        assert self.dag is not None  # checked by expand_branch_ids
        reachable = set(follow)
        for task_id in follow:
            reachable |= self.dag.task_dict[task_id].get_flat_relative_ids(upstream=False)
        to_skip = sorted(t for t in self.downstream_task_ids if t not in reachable)
        log.info("Following branch %s", sorted(follow))
        self.skip(context, to_skip)
        return to_skip


# --------------------------------------------------------------------------- operators


def require_callable(python_callable: Any, task_id: object) -> None:
    """The check PythonOperator and PythonSensor make of their ``python_callable``."""
    if not callable(python_callable):
        raise DagDefinitionError(
            f"task {task_id}: python_callable must be callable, got {python_callable!r}"
        )


class PythonOperator(BaseOperator):
    """Call ``python_callable(*op_args, **kwargs)``; its return value is the task's result.

    ``kwargs`` holds ``op_kwargs`` plus the template context entries the callable's
    signature names (all of them if it takes ``**kwargs``); ``templates_dict``, rendered
    like any templated field, is passed as the context entry ``templates_dict``.
    """

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    template_fields_renderers = {"templates_dict": "json", "op_args": "py", "op_kwargs": "py"}
    ui_color = "#ffefeb"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: dict[str, Any] | None = None,
        templates_exts: list[str] | tuple[str, ...] | None = None,
        show_return_value_in_logs: bool = True,
        provide_context: bool | None = None,  # Airflow 1's; deprecated, no effect
        **kwargs: Any,
    ) -> None:
        require_callable(python_callable, kwargs.get("task_id"))
        if provide_context is not None:
            warn_deprecated(f"{type(self).__name__}({kwargs.get('task_id')!r}): "
                            "provide_context is deprecated and has no effect (the callable "
                            "gets the context entries its signature names); leave it out")
        super().__init__(**kwargs)
        self.python_callable = python_callable
        self.op_args: Any = op_args if op_args is not None else []
        self.op_kwargs: Any = op_kwargs if op_kwargs is not None else {}
        self.templates_dict = templates_dict
        if templates_exts:
            self.template_ext = tuple(templates_exts)
        self.show_return_value_in_logs = show_return_value_in_logs

    def execute(self, context: Context) -> Any:
        return_value = self.execute_callable(context)
        if self.show_return_value_in_logs:
            log.info("Done. Returned value was: %s", return_value)
        else:
            log.info("Done. Returned value not shown")
        return return_value

    def execute_callable(self, context: Context) -> Any:
        return call_with_context(
            self.python_callable, self.op_args, self.op_kwargs, context, self.templates_dict,
            outlet_events=context.get("outlet_events"),
        )


class BranchPythonOperator(PythonOperator, SkipMixin):
    """The callable returns the task id(s) (or task group ids) to follow, or None; every
    other direct downstream task is skipped."""

    ui_color = "#ffefeb"

    def execute(self, context: Context) -> Any:
        branch = super().execute(context)
        self.skip_all_except(context, branch)
        return branch


class ShortCircuitOperator(PythonOperator, SkipMixin):
    """When the callable's result is falsy, skip downstream tasks.

    With ``ignore_downstream_trigger_rules`` (the default) every task downstream, however
    far, is skipped; otherwise only the direct downstream tasks are, and tasks further down
    follow their own trigger rules.
    """

    def __init__(self, *, ignore_downstream_trigger_rules: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules

    def execute(self, context: Context) -> Any:
        condition = super().execute(context)
        log.info("Condition result is %s", condition)
        if condition:
            log.info("Proceeding with downstream tasks...")
            return condition
        if self.ignore_downstream_trigger_rules:
            to_skip = self.get_flat_relative_ids(upstream=False)
        else:
            to_skip = set(self.downstream_task_ids)
        if self.dag is not None:  # teardowns are left to their trigger rule (Airflow 2.7+)
            to_skip = {t for t in to_skip if not self.dag.task_dict[t].is_teardown}
        log.info("Skipping downstream tasks")
        self.skip(context, to_skip)
        return condition
