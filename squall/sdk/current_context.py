"""``get_current_context()``: the template context of the task running in this process
(Airflow's ``airflow.operators.python.get_current_context``), set by the runner around the
task's ``pre_execute`` / ``execute`` / ``post_execute``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from squall.common.errors import SquallError

log = logging.getLogger(__name__)

__all__ = ["get_current_context", "set_current_context"]

_CURRENT_CONTEXT: list[dict[str, Any]] = []


def get_current_context() -> dict[str, Any]:
    """The running task's context; raises when no task is running here."""
    if not _CURRENT_CONTEXT:
        raise SquallError("Current context was requested but no context was found! "
                          "Are you running within a task?")
    return _CURRENT_CONTEXT[-1]


@contextlib.contextmanager
def set_current_context(context: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Make ``context`` the current one for the duration."""
    _CURRENT_CONTEXT.append(context)
    try:
        yield context
    finally:
        if _CURRENT_CONTEXT and _CURRENT_CONTEXT[-1] is context:
            _CURRENT_CONTEXT.pop()
        else:
            log.warning("the current context stack was changed inside a task")
            with contextlib.suppress(ValueError):
                _CURRENT_CONTEXT.remove(context)
