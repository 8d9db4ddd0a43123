"""Runs callback requests (``callback_request`` rows) in the DAG processor.

:func:`run_pending_callbacks` claims the pending requests (PostgreSQL: ``FOR UPDATE SKIP
LOCKED``; every database: an ``UPDATE ... WHERE processed_at IS NULL`` whose row count must
be 1) and marks them processed in the same transaction, so a request is run at most once,
by one processor, and never retried: a callback that raises, times out or cannot be loaded
is logged and dropped. It never changes a task instance or a run.

Each request runs in a short-lived child process of its own (forked: the processor is a
single-threaded spawned interpreter), which imports the DAG file with :func:`load_file`,
builds the context (for a task callback the one a try gets, plus ``exception`` and
``reason``; for a DAG callback ``dag``, ``dag_run``, ``run_id`` and ``reason``) and calls the
callback; past ``[scheduler] callback_timeout`` seconds it is killed. A task's failure /
retry e-mail (:mod:`squall.execution.email_alerts`) is sent there too, before its callback.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, update

from squall.common.db import (
    SessionFactory,
    is_postgres,
    make_engine,
    make_session_factory,
    session_scope,
)
from squall.common.errors import CallbackFailed, SquallError
from squall.common.models import CallbackRequest, DagRun, TaskInstance, TaskInstanceKey, utcnow
from squall.common.procutil import child_process_context, flush_std_streams, stop_child
from squall.common.settings import Settings
from squall.common.state import TaskInstanceState
from squall.dag_processing.dagbag import load_file
from squall.execution.callbacks import CallbackKind
from squall.execution.email_alerts import TryAlert, send_alert, wants_email
from squall.sdk.dag import DAG
from squall.sdk.dag_defaults import DagDefaults
from squall.sdk.examples import EXAMPLES_FOLDER

log = logging.getLogger(__name__)

#: Most requests claimed at a time.
MAX_CALLBACKS_PER_CLAIM = 32


@dataclass(frozen=True)
class PendingCallback:
    """A claimed ``callback_request`` row, detached from any session."""

    id: int
    kind: CallbackKind
    dag_id: str
    fileloc: str
    run_id: str
    task_id: str | None
    try_number: int | None
    message: str | None
    created_at: datetime

    def describe(self) -> str:
        if self.task_id is not None:
            key = TaskInstanceKey(self.dag_id, self.task_id, self.run_id)
            return f"TaskInstance {key}: try {self.try_number}: {self.kind.callback_name}"
        return f"DagRun {self.dag_id} {self.run_id}: the DAG's {self.kind.callback_name}"


def claim_callbacks(session_factory: SessionFactory, *, now: datetime | None = None,
                    limit: int = MAX_CALLBACKS_PER_CLAIM) -> list[PendingCallback]:
    """Claim up to ``limit`` pending requests, oldest first, marking them processed."""
    now = now or utcnow()
    claimed: list[PendingCallback] = []
    with session_scope(session_factory) as session:
        stmt = (select(CallbackRequest).where(CallbackRequest.processed_at.is_(None))
                .order_by(CallbackRequest.id).limit(limit))
        if is_postgres(session):
            stmt = stmt.with_for_update(skip_locked=True)
        for row in session.scalars(stmt).all():
            result = session.execute(
                update(CallbackRequest)
                .where(CallbackRequest.id == row.id, CallbackRequest.processed_at.is_(None))
                .values(processed_at=now, attempts=CallbackRequest.attempts + 1)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another processor claimed it
            try:
                kind = CallbackKind(row.kind)
            except ValueError:
                log.error("Callback request %d: unknown kind %r; dropped", row.id, row.kind)
                continue
            claimed.append(PendingCallback(
                id=row.id, kind=kind, dag_id=row.dag_id, fileloc=row.fileloc,
                run_id=row.run_id, task_id=row.task_id, try_number=row.try_number,
                message=row.message, created_at=row.created_at))
    return claimed


def run_pending_callbacks(settings: Settings, session_factory: SessionFactory, *,
                          timeout: float | None = None) -> int:
    """Claim the pending requests and run each in a child process; how many were run
    (whatever their outcome)."""
    limit = settings.scheduler.callback_timeout if timeout is None else timeout
    ran = 0
    while True:
        batch = claim_callbacks(session_factory)
        for request in batch:
            run_in_child(settings, request, timeout=limit)
            ran += 1
        if len(batch) < MAX_CALLBACKS_PER_CLAIM:
            return ran


def run_in_child(settings: Settings, request: PendingCallback, *, timeout: float) -> bool:
    """Run one request in a child process, killed after ``timeout`` s; whether it ran fine."""
    ctx = child_process_context()
    process = ctx.Process(target=_child_main, args=(settings, request),  # type: ignore[attr-defined]
                          name=f"squall-callback-{request.id}", daemon=True)
    started = time.monotonic()
    process.start()
    if not stop_child(process, timeout):
        log.error("%s: timed out after %g s (callback_timeout); killed, not retried",
                  request.describe(), timeout)
        return False
    code = process.exitcode
    if code != 0:
        log.error("%s: failed (exit code %s, see the log above); not retried",
                  request.describe(), code)
        return False
    log.debug("%s: done in %.2f s", request.describe(), time.monotonic() - started)
    return True


def _child_main(settings: Settings, request: PendingCallback) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 1
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=1)
    try:
        run_callback(settings, make_session_factory(engine), request)
        code = 0
    except Exception:
        log.exception("%s raised; the task's and the run's states are unchanged",
                      request.describe())
    finally:
        engine.dispose()
        flush_std_streams()
    sys.exit(code)


def root_for(settings: Settings, fileloc: str) -> Path | None:
    path = Path(os.path.abspath(fileloc))
    roots = [settings.dags_folder]
    if settings.core.load_examples:
        roots.append(EXAMPLES_FOLDER)
    for root in roots:
        if path.is_relative_to(Path(os.path.abspath(root))):
            return root
    return None


def load_dag_from_file(settings: Settings, fileloc: str, dag_id: str) -> DAG:
    """Import ``fileloc`` in this process and return its DAG ``dag_id`` (user code: only in
    a child of the DAG processor)."""
    loaded = load_file(fileloc, root_for(settings, fileloc),
                       timeout=settings.core.dagbag_import_timeout,
                       airflow_compat=settings.core.airflow_compat,
                       dag_defaults=DagDefaults.from_settings(settings))
    dag = next((d for d in loaded.dags if d.dag_id == dag_id), None)
    if dag is None:
        raise SquallError(loaded.error or f"DAG file {fileloc} defines no DAG {dag_id!r}")
    return dag


def load_dag(settings: Settings, request: PendingCallback) -> DAG:
    """Import the request's DAG file in this process and return its DAG."""
    return load_dag_from_file(settings, request.fileloc, request.dag_id)


def run_callback(settings: Settings, session_factory: SessionFactory,
                 request: PendingCallback) -> bool:
    """Load the DAG and call the request's callback in this process (user code: only in a
    child of the DAG processor); False when there is no such callback. Raises what it
    raises."""
    from squall.execution.runner import build_task_context, task_log_path
    from squall.execution.task_instance import DbTaskInstance

    dag = load_dag(settings, request)
    with session_scope(session_factory) as session:
        dag_run = session.scalars(select(DagRun).where(
            DagRun.dag_id == request.dag_id, DagRun.run_id == request.run_id)).one_or_none()
        if dag_run is None:
            raise SquallError(f"DagRun {request.dag_id} {request.run_id} does not exist")
        ti_row = None
        if request.task_id is not None:
            ti_row = session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == request.dag_id, TaskInstance.task_id == request.task_id,
                TaskInstance.run_id == request.run_id)
                # a callback request names no map index: a mapped task's first instance
                .order_by(TaskInstance.map_index).limit(1)).one_or_none()
        session.expunge_all()
    reason = request.message or ""
    if request.kind.is_task:
        assert request.task_id is not None
        if not dag.has_task(request.task_id):
            raise SquallError(f"DAG {dag.dag_id} has no task {request.task_id!r}")
        task = dag.get_task(request.task_id)
        callback = (task.on_failure_callback if request.kind == CallbackKind.TASK_FAILURE
                    else task.on_retry_callback)
        state = (TaskInstanceState.FAILED if request.kind == CallbackKind.TASK_FAILURE
                 else TaskInstanceState.UP_FOR_RETRY)
        emails = wants_email(task, state)
        if callback is None and not emails:
            log.info("%s: the task has none (any more); nothing run", request.describe())
            return False
        ti = DbTaskInstance(
            task=task, dag_run=dag_run, try_number=request.try_number or 0,
            max_tries=ti_row.max_tries if ti_row is not None else task.retries,
            start_date=(ti_row.start_date if ti_row is not None and ti_row.start_date
                        else request.created_at),
            session_factory=session_factory,
            hostname=(ti_row.hostname if ti_row is not None and ti_row.hostname
                      else socket.gethostname()))
        if emails:  # first: a callback that raises must not stop the e-mail
            send_alert(settings.smtp, task, TryAlert(
                key=ti.key, try_number=ti.try_number, max_tries=ti.max_tries, state=state,
                exception=reason, hostname=ti.hostname,
                log_path=task_log_path(settings.log_folder, ti.key, ti.try_number)),
                airflow_compat=settings.core.airflow_compat)
        if callback is None:
            return True
        context = {**build_task_context(task, dag_run, ti),
                   "exception": CallbackFailed(reason), "reason": reason}
        callback(context)
        log.info("TaskInstance %s: try %s: ran %s (%s)", ti.key, request.try_number,
                 request.kind.callback_name, reason)
        return True
    dag_callback = (dag.on_success_callback if request.kind == CallbackKind.DAG_SUCCESS
                    else dag.on_failure_callback)
    if dag_callback is None:
        log.info("%s: the DAG has none (any more); nothing run", request.describe())
        return False
    dag_callback({"dag": dag, "dag_run": dag_run, "run_id": dag_run.run_id, "reason": reason})
    log.info("DagRun %s %s: ran the DAG's %s%s", dag.dag_id, dag_run.run_id,
             request.kind.callback_name, f" ({reason})" if reason else "")
    return True
