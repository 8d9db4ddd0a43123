"""The try's database writes: every row a worker writes for one try, in one module.

:class:`TryWrites` is what the supervisor (ADR 9) writes and reads for its try: the start
transaction (the ``job`` row, QUEUED -> RUNNING by compare-and-set on state, try number and
Celery task id, the task's XComs cleared, the run and ``max_tries`` read for the
go-ahead), the heartbeat with its read of the row, the end of a try stopped by ``squall tasks
clear`` (RESTARTING -> ``none``), the pid of a task process in a new
interpreter, the outcome its forked task process sends (a compare-and-set from RUNNING, in
one transaction with the job row's end), a failure it records itself (with a callback
request for the DAG processor) and the job row's end. :func:`record_failure` records a
failed try by compare-and-set; a task process in a new interpreter uses it too, and
writes its outcome with :func:`outcome_writer`. A worker writes a try's rows nowhere else.

A write that fails because the pooled connection was dead is tried once more on a new one;
any other database error goes to the caller, which keeps the try going (the supervisor's
outage bookkeeping, :class:`~squall.common.outage.Outage`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import case, func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import PayloadError
from squall.common.models import (
    DagRun,
    Job,
    TaskInstance,
    TaskInstanceKey,
    clip_reason,
    compare_and_set_state,
    utcnow,
)
from squall.common.payload import TaskRunCommand, resolve_dag_file
from squall.common.settings import Settings
from squall.common.state import JobState, TaskInstanceState
from squall.dag_processing.sync import load_serialized_dags
from squall.execution import xcom
from squall.execution.callbacks import request_task_callback, task_kind
from squall.execution.deferral import Resume, resume_of
from squall.execution.restart import end_restart
from squall.execution.runner import (
    OutcomeKind,
    OutcomeRecord,
    Recorder,
    TryOutcome,
    TryResult,
    previous_success,
    record_outcome,
    task_log_handler,
    task_log_path,
    write_outcome,
)
from squall.runs.datasets import record_try_events
from squall.sdk.examples import EXAMPLES_FOLDER
from squall.sdk.operators.base import BaseOperator
from squall.sdk.templating import PreviousSuccess

log = logging.getLogger(__name__)

JOB_TYPE = "LocalTaskJob"

T = TypeVar("T")


@dataclass(frozen=True)
class StartedTry:
    """What a supervisor sends its forked task process as the go-ahead: the try started
    under ``job_id``, with what the task process would otherwise read back."""

    job_id: int
    max_tries: int
    start_date: datetime
    dag_run: dict[str, Any]  # the DagRun's column values
    #: the context's ``prev_*_success`` (:func:`~squall.execution.runner.previous_success`)
    previous_success: PreviousSuccess | None = None
    #: a deferred try resuming (the row's ``next_method``): it keeps its start date and
    #: XComs, and runs ``resume_execution`` instead of ``execute``
    resume: Resume | None = None


def dag_run_values(dag_run: DagRun) -> dict[str, Any]:
    return {attr.key: getattr(dag_run, attr.key) for attr in sa_inspect(DagRun).column_attrs}


class TryWrites:
    """The database writes (and the reads that go with them) of one try's supervisor."""

    def __init__(self, command: TaskRunCommand, *, settings: Settings,
                 factory: SessionFactory, celery_task_id: str, worker_name: str) -> None:
        self.command = command
        self.key = command.key
        self.try_number = command.try_number
        self._settings = settings
        self._factory = factory
        self._celery_task_id = celery_task_id
        self._worker_name = worker_name
        #: the job row of the started try (set by :meth:`start`)
        self.job_id: int | None = None
        #: the go-ahead for a forked task process (set by :meth:`start`)
        self.started: StartedTry | None = None
        #: why :meth:`start` did not start the try
        self.refusal = ""
        #: whether the job row's end was written with the outcome
        self.job_finished = False

    # ----------------------------------------------------------------------- start

    def start(self, task_pid: int | None) -> StartedTry | None:
        """Insert the job row and move QUEUED -> RUNNING (recording ``task_pid``, or this
        process's pid), in one transaction; the go-ahead, or None (and nothing written, and
        :attr:`refusal` says why) when the compare-and-set loses."""
        return self._once_more_on_disconnect("starting the try",
                                             lambda: self._start_once(task_pid))

    def _start_once(self, task_pid: int | None) -> StartedTry | None:
        now = utcnow()
        with self._factory() as session:
            job = Job(job_type=JOB_TYPE, state=JobState.RUNNING.value,
                      hostname=self._worker_name, pid=os.getpid(), dag_id=self.key.dag_id,
                      start_date=now, latest_heartbeat=now)
            session.add(job)
            session.flush()
            won = compare_and_set_state(
                session, self.key, expected=TaskInstanceState.QUEUED,
                try_number=self.try_number, new_state=TaskInstanceState.RUNNING,
                expected_external_executor_id=self._celery_task_id,
                hostname=self._worker_name, pid=task_pid or os.getpid(), job_id=job.id,
                # a deferred try resuming keeps its first start (Airflow: the
                # execution_timeout and the duration count from it)
                start_date=case((TaskInstance.next_method.is_(None), now),
                                else_=func.coalesce(TaskInstance.start_date, now)),
                end_date=None,
            )
            if won:
                dag_run, max_tries, next_method, next_kwargs, start_date = session.execute(
                    select(DagRun, TaskInstance.max_tries, TaskInstance.next_method,
                           TaskInstance.next_kwargs, TaskInstance.start_date)
                    .join(TaskInstance, (TaskInstance.dag_id == DagRun.dag_id)
                          & (TaskInstance.run_id == DagRun.run_id))
                    .where(*self._key_clause())).one()
                resume = resume_of(next_method, next_kwargs)
                if resume is None:  # a resumed try keeps what it pushed before deferring
                    xcom.clear(session, dag_id=self.key.dag_id, run_id=self.key.run_id,
                               task_id=self.key.task_id, map_index=self.key.map_index)
                self.started = StartedTry(
                    job_id=job.id, max_tries=int(max_tries or 0),
                    start_date=start_date or now,
                    dag_run=dag_run_values(dag_run),
                    previous_success=previous_success(session, dag_run, self.key.task_id),
                    resume=resume)
                session.commit()
                self.job_id = job.id
                log.info("TaskInstance %s: try %d queued -> running on %s (job %d)%s",
                         self.key, self.try_number, self._worker_name, job.id,
                         f", resuming in {resume.next_method}" if resume else "")
                return self.started
            session.rollback()
            row = session.execute(
                select(TaskInstance.state, TaskInstance.try_number,
                       TaskInstance.external_executor_id).where(*self._key_clause())
            ).one_or_none()
        if row is None:
            self.refusal = "the task instance does not exist"
        elif row.try_number != self.try_number:
            self.refusal = f"the task instance is at try {row.try_number} ({row.state})"
        elif row.state != TaskInstanceState.QUEUED:
            self.refusal = f"the task instance is {row.state}, not queued"
        else:
            self.refusal = (f"the task instance was queued under Celery task id "
                            f"{row.external_executor_id}, not {self._celery_task_id}")
        log.warning("TaskInstance %s: try %d not started: %s", self.key, self.try_number,
                    self.refusal)
        return None

    def record_pid(self, pid: int) -> None:
        """The pid of a task process started after the try (a new interpreter); a failure
        is logged, not raised: the task must run regardless."""
        try:
            with session_scope(self._factory) as session:
                session.execute(update(TaskInstance).where(*self._ours_clause())
                                .values(pid=pid).execution_options(synchronize_session=False))
        except SQLAlchemyError as exc:  # informational only: the task must run regardless
            log.warning("TaskInstance %s: pid %d not recorded: %s", self.key, pid, exc)

    # ----------------------------------------------------------------------- while it runs

    def heartbeat(self) -> str | None:
        """Beat the job row; None while the row is still this job's running try, else what
        it became. A database error is raised (the caller keeps the task running)."""
        row = self._once_more_on_disconnect("heartbeat", self._beat)
        if row is None:
            return "deleted"
        if row.try_number != self.try_number or row.job_id != self.job_id:
            return f"{row.state} (try {row.try_number}, job {row.job_id})"
        if row.state != TaskInstanceState.RUNNING:
            return str(row.state)
        return None

    def _beat(self) -> Any:
        with session_scope(self._factory) as session:
            session.execute(update(Job).where(Job.id == self.job_id)
                            .values(latest_heartbeat=utcnow()))
            return session.execute(
                select(TaskInstance.state, TaskInstance.try_number,
                       TaskInstance.job_id).where(*self._key_clause())
            ).one_or_none()

    # ----------------------------------------------------------------------- the end

    def write_outcome(self, record: OutcomeRecord) -> bool:
        """Write the outcome the forked task process sent, by compare-and-set from RUNNING,
        with the job row's end in the same transaction; whether it won."""
        return self._once_more_on_disconnect("writing the outcome", lambda: write_outcome(
            self._factory, self.key, try_number=self.try_number, record=record,
            on_recorded=self._finish_job_with, quiet=True, dataset_events=record_try_events))

    def record_load_error(self, reason: str) -> TryResult:
        """The forked task process could not load its task: the try failed with
        ``reason``, with the job row's end in the same transaction."""
        max_tries = self.started.max_tries if self.started is not None else 0
        start_date = self.started.start_date if self.started is not None else utcnow()
        return self._once_more_on_disconnect("recording the load error", lambda: (
            record_failure(self._factory, self.key, try_number=self.try_number,
                           max_tries=max_tries, start_date=start_date, reason=reason,
                           on_recorded=self._finish_job_with)))

    def fail(self, reason: str) -> str | None:
        """Record the running try failed / up_for_retry with ``reason`` (compare-and-set on
        state, try number and job: a late write never touches a newer try),
        logged into the try's log, with a callback request when the task has the callback
        for the state; the state written, or None when the compare-and-set lost."""
        return self._once_more_on_disconnect("recording the failure",
                                             lambda: self._fail_once(reason))

    def _fail_once(self, reason: str) -> str | None:
        with session_scope(self._factory) as session:
            ti = session.scalars(select(TaskInstance).where(*self._key_clause())).first()
        if ti is None:
            return None
        with task_log_handler(self.log_path()):
            log.error("TaskInstance %s: try %d: %s", self.key, self.try_number, reason)
            result = record_failure(self._factory, self.key, try_number=self.try_number,
                                    max_tries=ti.max_tries,
                                    start_date=ti.start_date or utcnow(), reason=reason,
                                    expected_job_id=self.job_id,
                                    on_recorded=lambda session, new_state: (
                                        self._request_callback(session, new_state, reason)))
        return result.state.value if result.recorded else None

    def _request_callback(self, session: Session, new_state: TaskInstanceState,
                          reason: str) -> None:
        """In the transaction of the won compare-and-set: when the task has the callback for
        ``new_state``, a request for the DAG processor to run it (the supervisor has no DAG
        object). The file is the processor's own (``serialized_dag.fileloc``), or this
        command's DAG file when the DAG is not serialized."""
        request_task_callback(session, key=self.key, try_number=self.try_number,
                              new_state=new_state, reason=reason,
                              fallback_fileloc=lambda: self._command_fileloc(new_state))

    def _command_fileloc(self, new_state: TaskInstanceState) -> str | None:
        """This command's DAG file, as a callback request names it (None: not resolvable)."""
        examples = EXAMPLES_FOLDER if self._settings.core.load_examples else None
        try:
            return str(resolve_dag_file(self.command.dag_file, self._settings.dags_folder,
                                        examples))
        except PayloadError as exc:
            kind = task_kind(new_state)
            log.warning("TaskInstance %s: try %d: %s not requested: %s", self.key,
                        self.try_number, kind.callback_name if kind else new_state, exc)
            return None

    def state(self) -> str | None:
        """The task instance's state, while it is at this try (else None)."""
        with session_scope(self._factory) as session:
            return session.scalar(select(TaskInstance.state).where(
                *self._key_clause(), TaskInstance.try_number == self.try_number))

    def still_running(self) -> bool:
        """Whether the row is still RUNNING under this job and try (nobody recorded an
        outcome)."""
        with session_scope(self._factory) as session:
            row = session.execute(
                select(TaskInstance.state).where(*self._ours_clause())
            ).one_or_none()
        return row is not None

    def finish_job(self, ok: bool) -> None:
        """End the job row (success when ``ok``), unless the outcome's write did; a failure
        is logged."""
        if self.job_finished:
            return
        state = JobState.SUCCESS if ok else JobState.FAILED
        now = utcnow()
        try:
            with session_scope(self._factory) as session:
                session.execute(update(Job).where(Job.id == self.job_id).values(
                    state=state.value, end_date=now, latest_heartbeat=now))
        except SQLAlchemyError as exc:
            log.error("TaskInstance %s: job %s not marked %s: %s", self.key, self.job_id,
                      state.value, exc)

    def end_restart(self) -> bool:
        """When ``squall tasks clear`` stopped this try (the row is RESTARTING at this try
        and job), move it to ``none`` for its next try, once the try's processes are gone; a
        failure is logged (the scheduler's watchdog moves it on later). Whether it did."""
        if self.job_id is None:
            return False
        try:
            with session_scope(self._factory) as session:
                return end_restart(session, self.key, try_number=self.try_number,
                                   job_id=self.job_id, now=utcnow())
        except SQLAlchemyError as exc:
            log.error("TaskInstance %s: try %d: restarting -> none not written (the "
                      "scheduler's watchdog will): %s", self.key, self.try_number, exc)
            return False

    def _finish_job_with(self, session: Session, _state: TaskInstanceState) -> None:
        now = utcnow()
        session.execute(update(Job).where(Job.id == self.job_id).values(
            state=JobState.SUCCESS.value, end_date=now, latest_heartbeat=now))
        self.job_finished = True

    # ----------------------------------------------------------------------- helpers

    def log_path(self) -> Path:
        return task_log_path(self._settings.log_folder, self.key, self.try_number)

    def _key_clause(self) -> tuple[Any, ...]:
        return (TaskInstance.dag_id == self.key.dag_id,
                TaskInstance.task_id == self.key.task_id,
                TaskInstance.run_id == self.key.run_id,
                TaskInstance.map_index == self.key.map_index)

    def _ours_clause(self) -> tuple[Any, ...]:
        return (*self._key_clause(), TaskInstance.state == TaskInstanceState.RUNNING.value,
                TaskInstance.try_number == self.try_number,
                TaskInstance.job_id == self.job_id)

    def _once_more_on_disconnect(self, what: str, call: Callable[[], T]) -> T:
        """``call()``; once more if it failed because the pooled connection was dead: one
        used less than ``PRE_PING_IDLE_SECONDS`` ago is not pinged (``common/db.py``), so a
        database restart just then shows up here, on the first statement."""
        try:
            return call()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("TaskInstance %s: %s: the database connection was lost (%s); trying "
                        "once more on a new one", self.key, what, exc.orig)
            return call()


# --------------------------------------------------------------------------- failures


def retry_policy_task(factory: SessionFactory, key: TaskInstanceKey) -> BaseOperator:
    """The task's stand-in from ``serialized_dag`` (its retry delay and backoff), for
    recording a failure without importing the DAG file; a default one when not found."""
    from squall.dag_processing.serialization import SerializedOperator

    with session_scope(factory) as session:
        dag = load_serialized_dags(session, [key.dag_id]).get(key.dag_id)
    if dag is not None and dag.has_task(key.task_id):
        return dag.get_task(key.task_id)
    log.warning("TaskInstance %s: no serialized DAG to take the retry delay from; "
                "using the default", key)
    return SerializedOperator(operator_name="unknown", task_id=key.task_id)


def record_failure(factory: SessionFactory, key: TaskInstanceKey, *, try_number: int,
                   max_tries: int, start_date: datetime, reason: str,
                   on_recorded: Callable[[Session, TaskInstanceState], None] | None = None,
                   expected_job_id: int | None = None) -> TryResult:
    """Record try ``try_number`` as failed, or up_for_retry while tries remain, with
    ``reason``; a compare-and-set from RUNNING with that try (and job, when
    ``expected_job_id``), like any other outcome (``on_recorded``: see
    :func:`~squall.execution.runner.record_outcome`)."""
    task = retry_policy_task(factory, key)
    outcome = TryOutcome(OutcomeKind.FAILED, error=clip_reason(reason))
    return record_outcome(factory, task, key, try_number=try_number, max_tries=max_tries,
                          start_date=start_date, outcome=outcome, on_recorded=on_recorded,
                          expected_job_id=expected_job_id)


def outcome_writer(factory: SessionFactory, key: TaskInstanceKey, *,
                   try_number: int) -> Recorder:
    """How a task process in a new interpreter writes its try's outcome: by
    compare-and-set from RUNNING at ``try_number``, with the scheduler's wake-up, in one
    transaction (:func:`~squall.execution.runner.write_outcome`)."""
    def write(record: OutcomeRecord) -> bool:
        return write_outcome(factory, key, try_number=try_number, record=record,
                             dataset_events=record_try_events)
    return write
