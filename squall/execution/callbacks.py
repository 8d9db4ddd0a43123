"""Callback requests: user callbacks that must run, recorded for the DAG processor.

The scheduler never runs user code, and a supervisor whose task process died has no DAG
object, so when they end a try (or the scheduler ends a run) whose task or DAG has a
callback, they insert a ``callback_request`` row in the same transaction as the state change
(only when their compare-and-set won). The DAG processor, which imports DAG files anyway,
claims the rows and runs the callbacks (:mod:`squall.scheduler.callback_runner`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.models import CallbackRequest, SerializedDagModel, TaskInstanceKey, utcnow
from squall.common.state import TaskInstanceState
from squall.dag_processing.serialization import SerializationError, deserialize_dag
from squall.execution.email_alerts import wants_email
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)

#: ``message`` is stored in full, but there is no point in storing a novel
MAX_MESSAGE = 4000


class CallbackKind(StrEnum):
    TASK_FAILURE = "task_failure"
    TASK_RETRY = "task_retry"
    DAG_SUCCESS = "dag_success"
    DAG_FAILURE = "dag_failure"

    @property
    def is_task(self) -> bool:
        return self in (CallbackKind.TASK_FAILURE, CallbackKind.TASK_RETRY)

    @property
    def callback_name(self) -> str:
        return {CallbackKind.TASK_FAILURE: "on_failure_callback",
                CallbackKind.TASK_RETRY: "on_retry_callback",
                CallbackKind.DAG_SUCCESS: "on_success_callback",
                CallbackKind.DAG_FAILURE: "on_failure_callback"}[self]


def task_kind(state: TaskInstanceState) -> CallbackKind | None:
    """The task callback a try ending in ``state`` calls for, if any."""
    return {TaskInstanceState.FAILED: CallbackKind.TASK_FAILURE,
            TaskInstanceState.UP_FOR_RETRY: CallbackKind.TASK_RETRY}.get(state)


def enqueue_callback(session: Session, *, kind: CallbackKind, dag_id: str, fileloc: str,
                     run_id: str, message: str | None, task_id: str | None = None,
                     try_number: int | None = None,
                     now: datetime | None = None) -> CallbackRequest:
    """Add a request to the caller's session (the caller commits, with its state change)."""
    request = CallbackRequest(kind=kind.value, dag_id=dag_id, fileloc=fileloc, run_id=run_id,
                              task_id=task_id, try_number=try_number,
                              message=message[:MAX_MESSAGE] if message else message,
                              created_at=now or utcnow(), attempts=0)
    session.add(request)
    log.info("DAG %s run %s%s: %s requested (run by the DAG processor)", dag_id, run_id,
             f" task {task_id} try {try_number}" if task_id else "", kind.callback_name)
    return request


def request_task_callback(session: Session, *, key: TaskInstanceKey, try_number: int,
                          new_state: TaskInstanceState, reason: str | None,
                          dag: DAG | None = None,
                          fallback_fileloc: Callable[[], str | None] | None = None,
                          now: datetime | None = None) -> bool:
    """When the task has the callback a try ending in ``new_state`` calls for (or the e-mail
    it sends), add a request
    for the DAG processor to run it to the caller's session (the transaction of the
    compare-and-set that won); whether one was added.

    The task is looked up in ``dag`` when given (the scheduler's, rebuilt from
    ``serialized_dag``; the request names its ``fileloc``), else in ``serialized_dag`` (the
    processor's own file); a DAG that is not serialized takes ``fallback_fileloc()`` (a
    supervisor's command file; None: no request).
    """
    kind = task_kind(new_state)
    if kind is None:
        return False
    if dag is not None:
        task = dag.task_dict.get(key.task_id)
        if task is None or not task_wants_request(task, kind):
            return False
        fileloc: str | None = dag.fileloc
    else:
        known, fileloc = serialized_task_callback_fileloc(session, key.dag_id, key.task_id,
                                                          kind)
        if known and fileloc is None:
            return False  # the task has no such callback
        if fileloc is None and fallback_fileloc is not None:
            fileloc = fallback_fileloc()
    if fileloc is None:
        return False
    enqueue_callback(session, kind=kind, dag_id=key.dag_id, fileloc=fileloc,
                     run_id=key.run_id, task_id=key.task_id, try_number=try_number,
                     message=reason, now=now)
    return True


def serialized_task_callback_fileloc(session: Session, dag_id: str, task_id: str,
                                     kind: CallbackKind) -> tuple[bool, str | None]:
    """From ``serialized_dag``: (whether the DAG is known there, its fileloc when the task
    has the callback of ``kind``, else None)."""
    row = session.execute(
        select(SerializedDagModel.fileloc, SerializedDagModel.data)
        .where(SerializedDagModel.dag_id == dag_id)
    ).one_or_none()
    if row is None:
        return False, None
    try:
        dag = deserialize_dag(row.data)
    except SerializationError as exc:
        log.warning("DAG %s: cannot rebuild it from serialized_dag: %s", dag_id, exc)
        return False, None
    task = dag.task_dict.get(task_id)
    if task is None or not task_wants_request(task, kind):
        return True, None
    return True, row.fileloc


def task_wants_request(task: object, kind: CallbackKind) -> bool:
    """Whether a try of ``task`` (a stand-in rebuilt from ``serialized_dag``) ending as
    ``kind`` has something for the DAG processor to do: the task's callback, or its
    failure / retry e-mail (:mod:`squall.execution.email_alerts`)."""
    if (getattr(task, f"has_{kind.callback_name}", False)
            or getattr(task, kind.callback_name, None) is not None):
        return True
    state = (TaskInstanceState.FAILED if kind == CallbackKind.TASK_FAILURE
             else TaskInstanceState.UP_FOR_RETRY)
    return wants_email(task, state)
