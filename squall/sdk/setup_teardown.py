"""Setup and teardown tasks (Airflow 2.7+): the ``@setup`` / ``@teardown`` decorators and
the context-manager form.

A setup task prepares a resource, a teardown task releases it; ``t.as_teardown(setups=s)``
(or ``@teardown``) makes ``t`` a teardown whose trigger rule is ``all_done_setup_success``,
so it runs when its work is done, however the work ended, as long as a setup succeeded.
The scheduler's rules are in :mod:`squall.scheduler.readiness` (the teardown's trigger rule,
the setups a work task waits for), the run's state (a teardown is not a leaf unless
``on_failure_fail_dagrun``) and what a clear takes along in :mod:`squall.runs.dag_shape`.

The context-manager form wires the tasks created in its body, as Airflow's
``SetupTeardownContext`` does::

    with teardown_task.as_teardown(setups=setup_task):
        work1 >> work2          # setup_task >> work1, work2 >> teardown_task

    with setup_task:            # a setup: its teardowns are the ones directly downstream
        work                    # setup_task >> work >> (setup_task's teardowns)

In the body, the tasks without an upstream are put after the setups and those without a
downstream before the teardowns. A nested context's setup comes after the enclosing one's
and its teardown before the enclosing one's.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from squall.common.errors import DagDefinitionError
from squall.sdk.trigger_rule import TriggerRule

if TYPE_CHECKING:
    from squall.sdk.operators.base import BaseOperator

__all__ = ["setup", "teardown"]


@dataclass
class _Frame:
    """One ``with`` block: its setups and teardowns, and the tasks created in its body."""

    setups: list[BaseOperator]
    teardowns: list[BaseOperator]
    body: list[BaseOperator] = field(default_factory=list)


_frames: list[_Frame] = []


def enter_context(operators: list[BaseOperator]) -> None:
    """Open a setup / teardown context for ``operators`` (all setups or all teardowns)."""
    for op in operators:
        if not op.is_setup and not op.is_teardown:
            raise DagDefinitionError(
                f"task {op.task_id}: only setup/teardown tasks can be used as context "
                "managers (call .as_setup() or .as_teardown() first)")
    if len({op.is_setup for op in operators}) > 1:
        raise DagDefinitionError("all tasks in the list must be either setup or teardown tasks")
    if operators[0].is_setup:
        setups = list(operators)
        teardowns = _unique(d for s in setups for d in _relatives(s, upstream=False)
                            if d.is_teardown)
    else:
        teardowns = list(operators)
        setups = _unique(u for t in teardowns for u in _relatives(t, upstream=True)
                         if u.is_setup)
    _frames.append(_Frame(setups=setups, teardowns=teardowns))


def exit_context() -> None:
    """Close the innermost context: wire its body between its setups and teardowns."""
    frame = _frames.pop()
    body = [t for t in frame.body if not t.is_setup and not t.is_teardown]
    if body:
        roots = [t for t in body if not t.upstream_task_ids] or body[:1]
        leaves = [t for t in body if not t.downstream_task_ids] or body[-1:]
        for s in frame.setups:
            for r in roots:
                s.add_downstream_edge(r)
        for leaf in leaves:
            for t in frame.teardowns:
                leaf.add_downstream_edge(t)
    if _frames:
        outer = _frames[-1]
        for s in outer.setups:
            for inner in frame.setups:
                if inner is not s:
                    s.add_downstream_edge(inner)
        for t in outer.teardowns:
            for inner in frame.teardowns:
                if inner is not t:
                    inner.add_downstream_edge(t)


def record_task(task: BaseOperator) -> None:
    """A task was created: inside a setup / teardown context it belongs to its body."""
    if _frames:
        _frames[-1].body.append(task)


def _relatives(task: BaseOperator, *, upstream: bool) -> list[BaseOperator]:
    if task.dag is None:
        return []
    return task.get_direct_relatives(upstream=upstream)


def _unique(tasks: Any) -> list[BaseOperator]:
    seen: dict[int, BaseOperator] = {}
    for t in tasks:
        seen.setdefault(id(t), t)
    return list(seen.values())


# --------------------------------------------------------------------------- task methods


class SetupTeardownMixin:
    """``is_setup``, ``is_teardown``, ``on_failure_fail_dagrun``, ``as_setup()``,
    ``as_teardown()`` and ``with`` for operators (Airflow's ``AbstractOperator`` ones)."""

    task_id: str
    trigger_rule: TriggerRule
    _is_setup: bool = False
    _is_teardown: bool = False
    _on_failure_fail_dagrun: bool = False

    @property
    def is_setup(self) -> bool:
        return self._is_setup

    @is_setup.setter
    def is_setup(self, value: bool) -> None:
        if value and self._is_teardown:
            raise DagDefinitionError(
                f"Cannot mark task '{self.task_id}' as setup; task is already a teardown.")
        self._is_setup = bool(value)

    @property
    def is_teardown(self) -> bool:
        return self._is_teardown

    @is_teardown.setter
    def is_teardown(self, value: bool) -> None:
        if value and self._is_setup:
            raise DagDefinitionError(
                f"Cannot mark task '{self.task_id}' as teardown; task is already a setup.")
        self._is_teardown = bool(value)

    @property
    def on_failure_fail_dagrun(self) -> bool:
        """Whether this teardown's failure fails the run (it then counts as a leaf)."""
        return self._on_failure_fail_dagrun

    @on_failure_fail_dagrun.setter
    def on_failure_fail_dagrun(self, value: bool) -> None:
        if value and not self._is_teardown:
            raise DagDefinitionError(
                f"Cannot set task on_failure_fail_dagrun for '{self.task_id}' because it is "
                "not a teardown task.")
        self._on_failure_fail_dagrun = bool(value)

    def as_setup(self) -> Any:
        """Make this a setup task; returns it, for ``>>`` and ``with``."""
        self.is_setup = True
        return self

    def as_teardown(self, *, setups: Any = None,
                    on_failure_fail_dagrun: bool | None = None) -> Any:
        """Make this a teardown task (trigger rule ``all_done_setup_success``) of ``setups``
        (a task, an XComArg or a list of them), which become setups upstream of it."""
        self.is_teardown = True
        self.trigger_rule = TriggerRule.ALL_DONE_SETUP_SUCCESS
        if on_failure_fail_dagrun is not None:
            self.on_failure_fail_dagrun = on_failure_fail_dagrun
        if setups is not None:
            for s in [setups] if hasattr(setups, "as_setup") else list(setups):
                s.as_setup()
                s >> self
        return self

    def __enter__(self) -> Any:
        enter_context([self])  # type: ignore[list-item]
        return self

    def __exit__(self, *exc: object) -> None:
        exit_context()


class SetupTeardownRefMixin:
    """The same for an XComArg: it stands for its task, as in Airflow."""

    operator: BaseOperator

    @property
    def is_setup(self) -> bool:
        return self.operator.is_setup

    @is_setup.setter
    def is_setup(self, value: bool) -> None:
        self.operator.is_setup = value

    @property
    def is_teardown(self) -> bool:
        return self.operator.is_teardown

    @is_teardown.setter
    def is_teardown(self, value: bool) -> None:
        self.operator.is_teardown = value

    @property
    def on_failure_fail_dagrun(self) -> bool:
        return self.operator.on_failure_fail_dagrun

    @on_failure_fail_dagrun.setter
    def on_failure_fail_dagrun(self, value: bool) -> None:
        self.operator.on_failure_fail_dagrun = value

    def as_setup(self) -> Any:
        self.operator.as_setup()
        return self

    def as_teardown(self, *, setups: Any = None,
                    on_failure_fail_dagrun: bool | None = None) -> Any:
        self.operator.as_teardown(setups=setups, on_failure_fail_dagrun=on_failure_fail_dagrun)
        return self

    def __enter__(self) -> Any:
        enter_context([self.operator])
        return self

    def __exit__(self, *exc: object) -> None:
        exit_context()


# --------------------------------------------------------------------------- decorators


def _as_task_factory(func: Any, what: str) -> Any:
    from squall.sdk.decorators import _TaskDecorator, task

    if isinstance(func, types.FunctionType):
        return task(func)
    if isinstance(func, _TaskDecorator):
        return func
    raise DagDefinitionError(f"@{what} must decorate a function or a @task, got {func!r} "
                             "(task groups cannot be marked as setup or teardown)")


def setup(func: Callable[..., Any]) -> Any:
    """``@setup``: the task the function makes is a setup task (Airflow's
    ``airflow.decorators.setup``); it may decorate a plain function or a ``@task``."""
    factory = _as_task_factory(func, "setup")
    factory.is_setup = True
    return factory


def teardown(_func: Callable[..., Any] | None = None, *,
             on_failure_fail_dagrun: bool = False) -> Any:
    """``@teardown`` / ``@teardown(on_failure_fail_dagrun=True)``: the task the function
    makes is a teardown task (trigger rule ``all_done_setup_success``)."""

    def wrap(func: Callable[..., Any]) -> Any:
        factory = _as_task_factory(func, "teardown")
        factory.is_teardown = True
        factory.on_failure_fail_dagrun = on_failure_fail_dagrun
        return factory

    if _func is None:
        return wrap
    return wrap(_func)
