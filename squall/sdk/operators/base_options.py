"""The BaseOperator arguments Airflow 2 has that change little or nothing in Squall, kept
apart from :mod:`squall.sdk.operators.base`: validated as Airflow does and set on the task.

* ``ignore_first_depends_on_past`` (Airflow 2.10's default: True) and
  ``wait_for_past_depends_before_skipping`` go to the scheduler with the serialized task
  (:mod:`squall.scheduler.readiness`).
* ``on_skipped_callback``: called in the task's process when it raises
  ``AirflowSkipException`` (:mod:`squall.execution.try_hooks`).
* ``pre_execute`` / ``post_execute``: called by ``BaseOperator.pre_execute`` /
  ``post_execute`` around ``execute``.
* ``executor``: Squall is a Celery executor; only that one is accepted.
* ``resources``: accepted and ignored, as Airflow's Celery executor ignores them.
* ``doc``, ``doc_json``, ``doc_yaml``, ``doc_rst``: kept like ``doc_md``.
* ``logger_name``: the task's ``self.log`` is ``squall.task.operators.<logger_name>``.
* ``allow_nested_operators``: accepted (Squall does not watch for an operator's ``execute``
  called inside another's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from squall.common.errors import DagDefinitionError

if TYPE_CHECKING:
    from squall.sdk.operators.base import BaseOperator

log = logging.getLogger(__name__)

#: the ``executor`` values that name the executor Squall is
CELERY_EXECUTOR_NAMES: Final = frozenset({
    "CeleryExecutor", "celery",
    "airflow.executors.celery_executor.CeleryExecutor",
    "airflow.providers.celery.executors.celery_executor.CeleryExecutor",
})

DOC_FIELDS: Final = ("doc", "doc_json", "doc_yaml", "doc_rst")


@dataclass(frozen=True)
class TaskOptions:
    ignore_first_depends_on_past: bool = True
    wait_for_past_depends_before_skipping: bool = False
    on_skipped_callback: Any = None
    pre_execute: Callable[..., Any] | None = None
    post_execute: Callable[..., Any] | None = None
    executor: str | None = None
    resources: dict[str, Any] | None = None
    docs: dict[str, str | None] = field(default_factory=dict)
    logger_name: str | None = None
    allow_nested_operators: bool = True

    def apply(self, task: BaseOperator, task_id: str) -> None:
        """Validate and set the options on ``task``."""
        if self.executor is not None and self.executor not in CELERY_EXECUTOR_NAMES:
            raise DagDefinitionError(
                f"task {task_id}: executor={self.executor!r} is not available: Squall runs "
                "every task on its Celery workers (executor=None or 'CeleryExecutor')")
        for name, hook in (("pre_execute", self.pre_execute),
                           ("post_execute", self.post_execute)):
            if hook is not None and not callable(hook):
                raise DagDefinitionError(f"task {task_id}: {name} must be callable, "
                                         f"got {hook!r}")
        if self.resources is not None and not isinstance(self.resources, dict):
            raise DagDefinitionError(f"task {task_id}: resources must be a dict, "
                                     f"got {self.resources!r}")
        task.ignore_first_depends_on_past = bool(self.ignore_first_depends_on_past)
        task.wait_for_past_depends_before_skipping = bool(
            self.wait_for_past_depends_before_skipping)
        task.on_skipped_callback = self.on_skipped_callback
        task.pre_execute_hook = self.pre_execute
        task.post_execute_hook = self.post_execute
        task.executor = self.executor
        #: accepted and ignored, as Airflow's Celery executor ignores them
        task.resources = dict(self.resources) if self.resources is not None else None
        for name in DOC_FIELDS:
            setattr(task, name, self.docs.get(name))
        task.logger_name = self.logger_name
        task.allow_nested_operators = bool(self.allow_nested_operators)
