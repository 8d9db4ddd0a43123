"""Callback requests: user callbacks that must run, recorded for the DAG processor.

The scheduler never runs user code, and a supervisor whose task process died has no DAG
object, so when they end a try (or the scheduler ends a run) whose task or DAG has a
callback, they insert a ``callback_request`` row in the same transaction as the state change
(only when their compare-and-set won). The DAG processor, which imports DAG files anyway,
claims the rows and runs the callbacks (:mod:`squall.scheduler.callback_runner`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.models import CallbackRequest, SerializedDagModel, utcnow
from squall.common.state import TaskInstanceState
from squall.dag_processing.serialization import SerializationError, deserialize_dag

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
    if task is None or not getattr(task, f"has_{kind.callback_name}", False):
        return True, None
    return True, row.fileloc
