"""``@task.run_if`` / ``@task.skip_if`` (Airflow 2.10's ``airflow/decorators/condition.py``):
a condition on the context, evaluated in the task's process just before ``execute`` (as the
task's ``pre_execute``); when it says so the task raises ``AirflowSkipException`` and ends
SKIPPED."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from squall.common.errors import TaskSkipped

log = logging.getLogger(__name__)

__all__ = ["run_if", "skip_if"]

#: a condition returns a bool, or (bool, message) to give the skip its message
Condition = Callable[[dict[str, Any]], Any]
Hook = Callable[[dict[str, Any]], None]

DEFAULT_MESSAGE = "Task was skipped due to condition."


def run_if(condition: Condition, skip_message: str | None = None) -> Callable[[Any], Any]:
    """Run the decorated ``@task`` only when ``condition(context)`` is true; else skip it."""
    return _decorator("run_if", _wrap_skip(condition, skip_message or DEFAULT_MESSAGE,
                                           reverse=True))


def skip_if(condition: Condition, skip_message: str | None = None) -> Callable[[Any], Any]:
    """Skip the decorated ``@task`` when ``condition(context)`` is true."""
    return _decorator("skip_if", _wrap_skip(condition, skip_message or DEFAULT_MESSAGE,
                                            reverse=False))


def _decorator(name: str, hook: Hook) -> Callable[[Any], Any]:
    def decorate(task: Any) -> Any:
        from squall.sdk.decorators import _TaskDecorator

        if not isinstance(task, _TaskDecorator):
            raise TypeError(f"{name} can only be used with task. decorate with @task before "
                            f"@{name}.")
        task.kwargs["pre_execute"] = _combine(task.kwargs.get("pre_execute"), hook)
        return task

    return decorate


def _wrap_skip(func: Condition, message: str, *, reverse: bool) -> Hook:
    @functools.wraps(func)
    def pre_execute(context: dict[str, Any]) -> None:
        condition = func(context)
        skip_message = message
        if isinstance(condition, tuple):
            condition, maybe_message = condition
            if maybe_message:
                skip_message = maybe_message
        if reverse:
            condition = not condition
        if condition:
            raise TaskSkipped(skip_message)

    return pre_execute


def _combine(*hooks: Hook | None) -> Hook:
    def pre_execute(context: dict[str, Any]) -> None:
        for hook in hooks:
            if hook is not None:
                hook(context)

    return pre_execute
