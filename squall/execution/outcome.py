"""What a failed try becomes: the one home of the retry rule.

A failed try becomes ``up_for_retry`` while tries remain (try ``n`` is retried when
``n <= max_tries``; ADR 2), with ``next_retry_at`` its end plus the task's retry delay for
that try (``retry_delay``, doubled per try with ``retry_exponential_backoff``, at most
``max_retry_delay``: :meth:`~squall.sdk.operators.base.BaseOperator.retry_delay_for`);
otherwise, or when the task asked for no retry, it becomes ``failed``.

Every path that fails a try asks a :class:`RetryPolicy`: the runner (a try's own outcome,
:func:`squall.execution.runner.outcome_record`), the worker's supervisor (a task process that
died, through the same function, as the try's own outcome written by its supervisor), and
:func:`fail_try`, the one way the scheduler ends a try for a reason outside the task's code:
a zombie and a try queued past ``task_queued_timeout`` (:mod:`squall.scheduler.watchdog`),
and a Celery failure of a try still QUEUED, the worker dead before it started
(:mod:`squall.scheduler.job`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from squall.common.metrics import Metrics
from squall.common.models import TaskInstance, clip_reason, compare_and_set_state
from squall.common.state import TaskInstanceState
from squall.execution.callbacks import request_task_callback
from squall.execution.deferral import NO_RESUME
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)


class RetryDelays(Protocol):
    """What a policy reads of a task (a BaseOperator or its serialized stand-in)."""

    def retry_delay_for(self, try_number: int) -> timedelta: ...


@dataclass(frozen=True)
class FailedTry:
    """What a failed try becomes."""

    #: ``up_for_retry`` or ``failed``
    state: TaskInstanceState
    #: when the next try may start (``up_for_retry`` only)
    next_retry_at: datetime | None
    #: why, clipped to the ``state_reason`` column
    state_reason: str | None

    @property
    def retried(self) -> bool:
        return self.state == TaskInstanceState.UP_FOR_RETRY

    def values(self, *, end_date: datetime) -> dict[str, Any]:
        """The row values of a compare-and-set that records it (``next_retry_at`` only when
        retried; the try's resumption cleared, so a retry starts in execute)."""
        values: dict[str, Any] = {"state_reason": self.state_reason, "end_date": end_date,
                                  **NO_RESUME}
        if self.retried:
            values["next_retry_at"] = self.next_retry_at
        return values


@dataclass(frozen=True)
class RetryPolicy:
    """The retry rule for one task instance: its ``max_tries`` (the row's) and the task
    whose retry delay applies; without a task (its DAG is not known) a retry may start at
    once."""

    max_tries: int
    task: RetryDelays | None = None

    @classmethod
    def for_task_instance(cls, ti: TaskInstance, dags: Mapping[str, DAG]) -> RetryPolicy:
        """The policy of ``ti``, its task looked up in ``dags`` (by dag_id)."""
        dag = dags.get(ti.dag_id)
        task = dag.task_dict.get(ti.task_id) if dag is not None else None
        return cls(max_tries=ti.max_tries, task=task)

    def after_failure(self, try_number: int, *, now: datetime, reason: str | None = None,
                      retry: bool = True) -> FailedTry:
        """What failed try ``try_number``, ended at ``now``, becomes (``retry`` False: the
        task asked for no retry)."""
        clipped = clip_reason(reason) if reason is not None else None
        if not retry or try_number > self.max_tries:
            return FailedTry(TaskInstanceState.FAILED, None, clipped)
        delay = self.task.retry_delay_for(try_number) if self.task is not None else timedelta(0)
        return FailedTry(TaskInstanceState.UP_FOR_RETRY, now + delay, clipped)


def fail_try(session: Session, ti: TaskInstance, dags: Mapping[str, DAG], *, reason: str,
             metric: str, now: datetime, metrics: Metrics) -> FailedTry | None:
    """End try ``ti`` (as the caller read it) for ``reason``, something outside the task's
    code (a zombie, a dead worker, a queue timeout), in the caller's session (the caller
    commits): up_for_retry or failed as its :class:`RetryPolicy` decides (its task looked
    up in ``dags``), by a compare-and-set on the row as read (state, try number, and job
    id and Celery task id when it has them), so a try that moved on meanwhile is left
    alone. When the compare-and-set won: ``metric`` is counted, and when the task has the
    callback (or e-mail) for the new state a request for the DAG processor is added in the
    same transaction (only for a DAG in ``dags``: the scheduler runs no user code).
    What the try became, or None when it had moved on."""
    failed = RetryPolicy.for_task_instance(ti, dags).after_failure(ti.try_number, now=now,
                                                                   reason=reason)
    if not compare_and_set_state(session, ti.key, expected=TaskInstanceState(ti.state),
                                 try_number=ti.try_number, new_state=failed.state,
                                 expected_job_id=ti.job_id,
                                 expected_external_executor_id=ti.external_executor_id,
                                 **failed.values(end_date=now)):
        log.debug("TaskInstance %s: try %d: %s, but the try moved on; left alone", ti.key,
                  ti.try_number, reason)
        return None
    metrics.incr(metric)
    log.warning("TaskInstance %s: try %d: %s; now %s", ti.key, ti.try_number,
                failed.state_reason, failed.state.value)
    dag = dags.get(ti.dag_id)
    if dag is not None:
        request_task_callback(session, key=ti.key, try_number=ti.try_number,
                              new_state=failed.state, reason=reason, dag=dag,
                              now=now)
    return failed
