"""``@task.run_if`` / ``@task.skip_if`` (Airflow 2.10's ``airflow.decorators.condition``):
skip a TaskFlow task, before it runs, on a condition of its context.

Stacked on a decorated function (``@task.run_if(cond)`` above ``@task``), they add a check
that the task makes in ``pre_execute``: ``condition(context)`` returns a bool, or a ``(bool,
message)`` tuple whose message becomes the skip's reason. ``run_if`` skips when it is false,
``skip_if`` when it is true. Several stack; they run in the order they were applied
(innermost first), as Airflow combines its ``pre_execute`` hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from squall.common.errors import DagDefinitionError, TaskSkipped
from squall.sdk.operators.base import BaseOperator, Context

if TYPE_CHECKING:
    from squall.sdk.decorators import _TaskDecorator

__all__ = ["ConditionalTask", "run_if", "skip_if"]

Check = Callable[[Context], None]
DEFAULT_MESSAGE = "Task was skipped due to condition."


class ConditionalTask(BaseOperator):
    """The checks ``run_if`` / ``skip_if`` added, made before the task runs."""

    conditions: tuple[Check, ...] = ()

    def pre_execute(self, context: Context) -> None:
        super().pre_execute(context)
        for check in self.conditions:
            check(context)


def _wrap(condition: Callable[[Context], Any], message: str, *, reverse: bool) -> Check:
    def check(context: Context) -> None:
        result = condition(context)
        reason = message
        if isinstance(result, tuple):
            result, custom = result
            reason = custom or message
        if reverse:
            result = not result
        if result:
            raise TaskSkipped(reason)

    return check


def _add(what: str, check: Check) -> Callable[[_TaskDecorator], _TaskDecorator]:
    def decorator(task: _TaskDecorator) -> _TaskDecorator:
        from squall.sdk.decorators import _TaskDecorator

        if not isinstance(task, _TaskDecorator):
            raise DagDefinitionError(
                f"{what} can only be used with task. decorate with @task before @{what}.")
        task.conditions = (*task.conditions, check)
        return task

    return decorator


def run_if(condition: Callable[[Context], Any], skip_message: str | None = None,
           ) -> Callable[[_TaskDecorator], _TaskDecorator]:
    """Run the task only if ``condition(context)`` holds; else skip it."""
    return _add("run_if", _wrap(condition, skip_message or DEFAULT_MESSAGE, reverse=True))


def skip_if(condition: Callable[[Context], Any], skip_message: str | None = None,
            ) -> Callable[[_TaskDecorator], _TaskDecorator]:
    """Skip the task if ``condition(context)`` holds."""
    return _add("skip_if", _wrap(condition, skip_message or DEFAULT_MESSAGE, reverse=False))
