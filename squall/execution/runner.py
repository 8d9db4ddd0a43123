"""Runs one try of one task instance: context, templates, timeout, outcome, XCom, callbacks.

This is the code path shared by the Celery worker's task process and ``squall dags test``.
It does not decide *whether* the try may run (the caller moved the task instance to RUNNING
with a compare-and-set); it runs the user's code and records how the try ended, again with a
compare-and-set so that a try that was cleared or failed elsewhere is not overwritten.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any, Final

import pendulum
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.console import tries_off_console
from squall.common.db import SessionFactory, session_scope
from squall.common.errors import (
    Reschedule,
    TaskDeferred,
    TaskFailedNoRetry,
    TaskSkipped,
    TaskTimedOut,
)
from squall.common.models import (
    DagRun,
    TaskInstance,
    TaskInstanceKey,
    TaskReschedule,
    Trigger,
    clip_reason,
    compare_and_set_state,
    utcnow,
)
from squall.common.state import DagRunState, TaskInstanceState
from squall.common.wakeup import notify_scheduler
from squall.execution import xcom
from squall.execution.dataset_events import (
    DatasetEventWriter,
    inlet_events,
    success_dataset_events,
    triggering_dataset_events,
)
from squall.execution.deferral import (
    NO_RESUME,
    Deferral,
    Resume,
    deferral_of,
    trigger_timeout,
)
from squall.execution.mapped import check_mappable_result, expanded_ti_count, task_for_try
from squall.execution.outcome import RetryPolicy
from squall.execution.task_instance import DbTaskInstance
from squall.execution.task_output import capture_task_output
from squall.sdk.current_context import set_current_context
from squall.sdk.datasets.events import DatasetEventSpec, run_with_metadata
from squall.sdk.operators.base import BaseOperator, Context
from squall.sdk.templating import PreviousSuccess, build_context
from squall.secrets.masking import RedactingFilter

log = logging.getLogger(__name__)


class OutcomeKind(StrEnum):
    """How a try ended, as the runner saw it (not yet a task instance state)."""

    SUCCESS = "success"
    FAILED = "failed"  # may still become up_for_retry, per retries
    FAILED_NO_RETRY = "failed_no_retry"
    SKIPPED = "skipped"
    RESCHEDULE = "reschedule"
    DEFERRED = "deferred"  # handed its wait to a trigger (BaseOperator.defer)


@dataclass(frozen=True)
class TryOutcome:
    kind: OutcomeKind
    error: str | None = None
    reschedule_date: datetime | None = None
    exception: BaseException | None = None
    #: what a deferring try writes (``DEFERRED`` only)
    deferral: Deferral | None = None
    #: a success's dataset events (its outlets, with their extras), recorded with it
    dataset_events: tuple[DatasetEventSpec, ...] = ()


@dataclass(frozen=True)
class TryResult:
    """What was recorded for a try."""

    state: TaskInstanceState
    recorded: bool  # False when the compare-and-set lost (the row changed under us)
    outcome: TryOutcome


#: ``previous_success`` not read yet: :func:`build_task_context` reads it
NOT_READ: Final = object()


def build_task_context(task: BaseOperator, dag_run: DagRun, ti: DbTaskInstance, *,
                       test_mode: bool = False,
                       previous: PreviousSuccess | object | None = NOT_READ) -> Context:
    """The try's template context. ``previous`` is :func:`previous_success` when the caller
    read it already (a worker's supervisor, in the try's start transaction, so that the
    task process opens no database connection for it); otherwise it is read here."""
    assert task.dag is not None
    if dag_run.conf is None:  # as in Airflow, a run without a conf has {} (dag_run.conf.get)
        dag_run.conf = {}
    logical_date = pendulum.instance(dag_run.logical_date)
    start = dag_run.data_interval_start or dag_run.logical_date
    end = dag_run.data_interval_end or dag_run.logical_date
    if previous is NOT_READ:
        with session_scope(ti.session_factory) as session:
            previous = previous_success(session, dag_run, task.task_id)
    assert previous is None or isinstance(previous, PreviousSuccess)
    context = build_context(
        dag=task.dag,
        task=task,
        dag_run=dag_run,
        ti=ti,
        logical_date=logical_date,
        data_interval=(pendulum.instance(start), pendulum.instance(end)),
        conf=dict(dag_run.conf or {}),
        previous_success=previous,
        test_mode=test_mode,
    )
    # the dataset events the task reads come from the database, when first asked for
    context["inlet_events"] = inlet_events(task.inlets, ti.session_factory)
    context["triggering_dataset_events"] = triggering_dataset_events(dag_run,
                                                                     ti.session_factory)
    return context


def previous_success(session: Session, dag_run: DagRun, task_id: str) -> PreviousSuccess | None:
    """The DAG's latest successful run before ``dag_run`` by logical date, with when
    ``task_id``'s instance in it started (Airflow 2's ``prev_*_success``); None if none."""
    row = session.execute(
        select(DagRun.run_id, DagRun.logical_date, DagRun.data_interval_start,
               DagRun.data_interval_end)
        .where(DagRun.dag_id == dag_run.dag_id,
               DagRun.logical_date < dag_run.logical_date,
               DagRun.state == DagRunState.SUCCESS.value)
        .order_by(DagRun.logical_date.desc()).limit(1)
    ).first()
    if row is None:
        return None
    started = session.scalar(select(TaskInstance.start_date).where(
        TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == row.run_id,
        TaskInstance.task_id == task_id))
    return PreviousSuccess(logical_date=row.logical_date,
                           data_interval_start=row.data_interval_start,
                           data_interval_end=row.data_interval_end, start_date=started)


@contextmanager
def execution_timeout(task: BaseOperator, *, used: timedelta = timedelta(0)) -> Iterator[None]:
    """Raise :class:`TaskTimedOut` in this (main) thread when the task runs too long;
    ``used``: how much of ``execution_timeout`` the try has had already (a resumed deferred
    try counts from its first start, as Airflow's ``_execute_task``)."""
    limit = task.execution_timeout
    if limit is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if used and limit - used <= timedelta(0):
        raise TaskTimedOut(f"task {task.task_id} timed out after {limit} (execution_timeout, "
                           "counted from the try's start, before it resumed)")
    seconds = max((limit - used).total_seconds(), 0.001)

    def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
        raise TaskTimedOut(f"task {task.task_id} timed out after {limit} (execution_timeout)")

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def execute_try(task: BaseOperator, context: Context, *, clear_xcom: bool = True,
                resume: Resume | None = None) -> TryOutcome:
    """Run the user's code for one try and classify how it ended. Never raises for task
    errors; writes XComs (return value; first deletes the task instance's old ones, with
    ``clear_xcom``) but no task instance state. With ``resume`` (a deferred try whose
    trigger fired or failed) the task's ``resume_execution`` runs instead of ``execute``,
    and the XComs are kept (Airflow clears them only when a try starts)."""
    ti: DbTaskInstance = context["ti"]
    try:
        if clear_xcom and resume is None:
            with session_scope(ti._factory) as session:
                xcom.clear(session, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                           map_index=ti.map_index)
        with set_current_context(context):  # as Airflow, while rendering too
            task.render_template_fields(context)
        if task.on_execute_callback is not None:
            run_callback(task.on_execute_callback, context, "on_execute_callback")
        used = resume.used(ti.start_date) if resume is not None else timedelta(0)
        with execution_timeout(task, used=used), set_current_context(context):
            try:
                task.pre_execute(context)
                # a generator ``execute`` yields Metadata (Airflow's ExecutionCallableRunner);
                # a resumed deferred try runs ``resume_execution`` instead
                if resume is None:
                    result = run_with_metadata(task.execute, context.get("outlet_events"),
                                               context)
                else:
                    log.info("TaskInstance %s: try %d resumes in %s", ti.key, ti.try_number,
                             resume.next_method)
                    result = run_with_metadata(task.resume_execution,
                                               context.get("outlet_events"),
                                               resume.next_method, resume.kwargs(), context)
                task.post_execute(context, result)
            except TaskTimedOut:
                safe_on_kill(task)
                raise
        check_mappable_result(task, result if task.do_xcom_push else None)
        events = success_dataset_events(task, context)
        if result is not None and task.do_xcom_push:
            ti.xcom_push(xcom.RETURN_VALUE_KEY, result)
        return TryOutcome(OutcomeKind.SUCCESS, dataset_events=events)
    except TaskSkipped as exc:
        log.info("TaskInstance %s: skipped (%s)", ti.key, exc or "TaskSkipped")
        return TryOutcome(OutcomeKind.SKIPPED, error=str(exc) or None)
    except Reschedule as exc:
        log.info("TaskInstance %s: rescheduled to %s", ti.key, exc.reschedule_date.isoformat())
        return TryOutcome(OutcomeKind.RESCHEDULE, reschedule_date=exc.reschedule_date)
    except TaskDeferred as exc:
        return _deferred(ti, exc)
    except TaskFailedNoRetry as exc:
        log.error("TaskInstance %s: failed without retry: %s", ti.key, exc)
        return TryOutcome(OutcomeKind.FAILED_NO_RETRY, error=_describe(exc), exception=exc)
    except (Exception, SystemExit) as exc:
        log.error("TaskInstance %s: try %d failed:\n%s", ti.key, ti.try_number,
                  "".join(traceback.format_exception(exc)).rstrip())
        return TryOutcome(OutcomeKind.FAILED, error=_describe(exc), exception=exc)


def _deferred(ti: DbTaskInstance, exc: TaskDeferred) -> TryOutcome:
    """The outcome of a try that raised :class:`TaskDeferred`: its trigger and resumption
    as the database stores them, or a failed try when they cannot be stored."""
    try:
        deferral = deferral_of(exc)
    except Exception as error:  # a trigger that cannot be serialized: the try fails
        log.error("TaskInstance %s: try %d cannot defer: %s", ti.key, ti.try_number, error)
        return TryOutcome(OutcomeKind.FAILED, error=_describe(error), exception=error)
    log.info("TaskInstance %s: try %d deferred to %s, resuming in %s (pausing the task as "
             "DEFERRED)", ti.key, ti.try_number, deferral.classpath, deferral.next_method)
    return TryOutcome(OutcomeKind.DEFERRED, deferral=deferral)


def _describe(exc: BaseException) -> str:
    return clip_reason(f"{type(exc).__name__}: {exc}")


def safe_on_kill(task: BaseOperator) -> None:
    try:
        task.on_kill()
    except Exception:
        log.exception("Task %s: on_kill failed", task.task_id)


#: the states of the outcomes that are neither failures nor reschedules
_ENDED_STATES: dict[OutcomeKind, TaskInstanceState] = {
    OutcomeKind.SUCCESS: TaskInstanceState.SUCCESS,
    OutcomeKind.SKIPPED: TaskInstanceState.SKIPPED,
}


@dataclass(frozen=True)
class OutcomeRecord:
    """The row values that record how a try ended (picklable: a forked task process sends
    it to its supervisor, which writes it)."""

    state: TaskInstanceState
    #: end_date, duration, state_reason, next_retry_at; the resumption columns
    #: (next_method, next_kwargs, trigger_timeout)
    values: dict[str, Any]
    start_date: datetime
    reschedule_date: datetime | None = None
    #: DEFERRED: the trigger row to insert with it, ``(classpath, serialized kwargs)``
    trigger: tuple[str, str] | None = None
    #: a success's dataset events, written in the transaction that records it
    dataset_events: tuple[DatasetEventSpec, ...] = ()


def outcome_record(task: BaseOperator, outcome: TryOutcome, *, try_number: int,
                   max_tries: int, start_date: datetime) -> OutcomeRecord:
    """What to write for ``outcome``: the final state (a failure as the task's
    :class:`~squall.execution.outcome.RetryPolicy` decides) and its values."""
    now = utcnow()
    if outcome.kind == OutcomeKind.DEFERRED:
        deferral = outcome.deferral
        assert deferral is not None
        return OutcomeRecord(
            state=TaskInstanceState.DEFERRED, start_date=start_date,
            values={"end_date": None, "duration": None, "state_reason": None,
                    "next_retry_at": None, "next_method": deferral.next_method,
                    "next_kwargs": deferral.next_kwargs,
                    "trigger_timeout": trigger_timeout(
                        deferral.timeout, task.execution_timeout, start_date=start_date,
                        now=now)},
            trigger=(deferral.classpath, deferral.kwargs))
    next_retry_at: datetime | None = None
    if outcome.kind in (OutcomeKind.FAILED, OutcomeKind.FAILED_NO_RETRY):
        failed = RetryPolicy(max_tries=max_tries, task=task).after_failure(
            try_number, now=now, retry=outcome.kind == OutcomeKind.FAILED)
        state, next_retry_at = failed.state, failed.next_retry_at
    elif outcome.kind == OutcomeKind.RESCHEDULE:
        assert outcome.reschedule_date is not None
        state, next_retry_at = TaskInstanceState.UP_FOR_RESCHEDULE, outcome.reschedule_date
    else:
        state = _ENDED_STATES[outcome.kind]
    values: dict[str, Any] = {
        "end_date": now,
        "duration": (now - start_date).total_seconds(),
        "state_reason": outcome.error,
        "next_retry_at": next_retry_at,
        # the try is over (or waits to be rescheduled): nothing to resume any more, and a
        # retry starts in execute (Airflow's clear_next_method_args)
        **NO_RESUME,
    }
    events = outcome.dataset_events if state == TaskInstanceState.SUCCESS else ()
    return OutcomeRecord(state=state, values=values, start_date=start_date,
                         reschedule_date=outcome.reschedule_date, dataset_events=events)


def write_outcome(session_factory: SessionFactory, key: TaskInstanceKey, *, try_number: int,
                  record: OutcomeRecord,
                  on_recorded: Callable[[Session, TaskInstanceState], None] | None = None,
                  quiet: bool = False, expected_job_id: int | None = None,
                  dataset_events: DatasetEventWriter | None = None) -> bool:
    """Write ``record``, RUNNING -> its state, as a compare-and-set in one transaction (with
    the scheduler's wake-up, a success's dataset events through ``dataset_events``, and
    ``on_recorded(session, state)`` when it won); whether it won. With ``expected_job_id``
    the row must also still be that job's. The result is logged unless ``quiet``. A
    DEFERRED record inserts its trigger row in the same transaction (gone again when the
    compare-and-set loses)."""
    state, now = record.state, record.values["end_date"] or utcnow()
    with session_scope(session_factory) as session:
        values = dict(record.values)
        if record.trigger is not None:
            classpath, kwargs = record.trigger
            trigger = Trigger(classpath=classpath, kwargs=kwargs, created_date=now)
            session.add(trigger)
            session.flush()
            values["trigger_id"] = trigger.id
        won = compare_and_set_state(
            session, key, expected=TaskInstanceState.RUNNING, try_number=try_number,
            expected_job_id=expected_job_id, new_state=state, **values,
        )
        if not won and record.trigger is not None:
            session.rollback()  # the trigger row goes with the lost write
        if won:
            notify_scheduler(session, str(key))
        if won and state == TaskInstanceState.UP_FOR_RESCHEDULE:
            assert record.reschedule_date is not None
            session.add(TaskReschedule(
                dag_id=key.dag_id, task_id=key.task_id, run_id=key.run_id,
                map_index=key.map_index,
                try_number=try_number, start_date=record.start_date, end_date=now,
                duration=(now - record.start_date).total_seconds(),
                reschedule_date=record.reschedule_date,
            ))
        if won and state == TaskInstanceState.SUCCESS and record.dataset_events:
            if dataset_events is None:
                log.warning("TaskInstance %s: try %d's dataset events are not recorded (this "
                            "process records none)", key, try_number)
            else:
                dataset_events(session, key, try_number, record.dataset_events)
        if won and on_recorded is not None:
            on_recorded(session, state)
    if not quiet:
        log_written(key, try_number, state, won)
    return won


def log_written(key: TaskInstanceKey, try_number: int, state: TaskInstanceState,
                won: bool) -> None:
    if won:
        log.info("TaskInstance %s: try %d running -> %s", key, try_number, state.value)
    else:
        log.warning("TaskInstance %s: try %d ended %s but the row changed meanwhile; "
                    "not recorded", key, try_number, state.value)


def record_outcome(session_factory: SessionFactory, task: BaseOperator, key: TaskInstanceKey,
                   *, try_number: int, max_tries: int, start_date: datetime,
                   outcome: TryOutcome,
                   on_recorded: Callable[[Session, TaskInstanceState], None] | None = None,
                   expected_job_id: int | None = None,
                   dataset_events: DatasetEventWriter | None = None) -> TryResult:
    """Write how the try ended, RUNNING -> final state, as a compare-and-set (on the try
    number, and on the job when ``expected_job_id`` is given).

    ``on_recorded`` is called with the session and the new state when the compare-and-set
    won, in the same transaction (to record more with it, e.g. a callback request)."""
    record = outcome_record(task, outcome, try_number=try_number, max_tries=max_tries,
                            start_date=start_date)
    won = write_outcome(session_factory, key, try_number=try_number, record=record,
                        on_recorded=on_recorded, expected_job_id=expected_job_id,
                        dataset_events=dataset_events)
    return TryResult(state=record.state, recorded=won, outcome=outcome)


#: writes an outcome somewhere else (a forked task process's supervisor); whether it won
Recorder = Callable[[OutcomeRecord], bool]


def run_callback(callback: Any, context: Context, name: str) -> None:
    """Call a user callback with ``context``; what it raises is logged, never raised."""
    try:
        callback(context)
    except Exception:
        log.exception("Task %s: %s raised; the task's state is unchanged",
                      context["task"].task_id, name)



@dataclass(frozen=True)
class TrySpec:
    """One try for :func:`run_try` to run: ``task`` in ``dag_run``, already RUNNING in the
    database as try ``try_number`` (the caller's compare-and-set)."""

    task: BaseOperator
    dag_run: DagRun
    try_number: int
    max_tries: int
    start_date: datetime
    #: the ``ti.hostname`` the task sees (None: this host's name)
    hostname: str | None = None
    #: the try's log file (None: no log file, and no output capture)
    log_path: Path | None = None
    #: False when the try's start already deleted the task instance's XComs
    clear_xcom: bool = True
    #: the context's ``test_mode`` (``squall tasks test``, as ``airflow tasks test``)
    test_mode: bool = False
    #: the context's ``prev_*_success``, when the caller read it already
    #: (:func:`build_task_context`)
    previous_success: PreviousSuccess | object | None = NOT_READ
    #: the task instance's map index (-1 unless its task is mapped)
    map_index: int = -1
    #: a deferred try resuming (its ``next_method``); None: the try starts in ``execute``
    resume: Resume | None = None


class TryHook:
    """One cross-cutting step of every try a process runs, in the spirit of dramatiq's
    middleware: registered once where the process starts (in its :class:`TryHooks`), then
    called at its points of each try, in registration order. Every method does nothing
    unless overridden (:mod:`squall.execution.try_hooks` has the usual ones)."""

    def task_ready(self, task: BaseOperator) -> None:
        """``task`` is the object the try runs (a copy of the DAG's), before anything else
        of the try (a task process's termination handler learns whose ``on_kill`` to
        call)."""

    def before_execute(self, task: BaseOperator, ti: DbTaskInstance) -> str | None:
        """Just before the task's code runs, inside its log; a reason refuses the try (it
        fails without retry)."""
        return None

    def code_ended(self, ti: DbTaskInstance) -> None:
        """The task's code has ended; its outcome is about to be written."""

    def outcome_written(self, spec: TrySpec, ti: DbTaskInstance, context: Context,
                        result: TryResult) -> None:
        """After the outcome's compare-and-set (``result.recorded``: whether it won)."""


@dataclass(frozen=True)
class TryHooks:
    """How a process runs tries, decided once where it starts: the steps around each try
    and where its outcome goes (``recorder``: a forked task process's supervisor writes it;
    None: :func:`record_outcome` here)."""

    hooks: tuple[TryHook, ...] = ()
    recorder: Recorder | None = None
    #: records a success's dataset events when the outcome is written here (no recorder)
    dataset_events: DatasetEventWriter | None = None


def run_try(spec: TrySpec, session_factory: SessionFactory, hooks: TryHooks) -> TryResult:
    """Run one try end to end: its context, its code, its outcome written, then the
    ``hooks``' steps (callbacks, e-mail) after it."""
    try_number, max_tries, start_date = spec.try_number, spec.max_tries, spec.start_date
    ti = DbTaskInstance(task=spec.task, dag_run=spec.dag_run, try_number=try_number,
                        max_tries=max_tries, start_date=start_date,
                        session_factory=session_factory,
                        hostname=spec.hostname or socket.gethostname(),
                        map_index=spec.map_index)
    # what the task writes to stdout / stderr (subprocesses included) goes where its log goes,
    # and, with a log, to its log only: not to a service's quiet console (ADR 34)
    with task_log_handler(spec.log_path), \
            tries_off_console() if spec.log_path is not None else nullcontext(), \
            capture_task_output(spec.log_path is not None):
        log.info("TaskInstance %s: starting try %d of %d", ti.key, try_number, max_tries + 1)
        # a mapped task runs the operator built for this map index; rendering templates
        # must not change the DAG's own task either way
        task, unmap_error = task_for_try(spec.task, ti)
        ti.task = task
        for hook in hooks.hooks:
            hook.task_ready(task)
        context = build_task_context(task, spec.dag_run, ti, test_mode=spec.test_mode,
                                     previous=spec.previous_success)
        if spec.map_index >= 0:
            context["expanded_ti_count"] = expanded_ti_count(task, ti, session_factory)
        refused = None
        for hook in hooks.hooks:
            refused = refused or hook.before_execute(task, ti)
        if unmap_error is not None:  # a failed try, retried as any other
            outcome = TryOutcome(OutcomeKind.FAILED, error=clip_reason(unmap_error))
        elif refused is not None:
            log.error("TaskInstance %s: %s", ti.key, refused)
            outcome = TryOutcome(OutcomeKind.FAILED_NO_RETRY, error=clip_reason(refused))
        else:
            outcome = execute_try(task, context, clear_xcom=spec.clear_xcom,
                                  resume=spec.resume)
            if spec.test_mode and outcome.dataset_events:  # Airflow: none in test mode
                outcome = replace(outcome, dataset_events=())
        for hook in hooks.hooks:
            hook.code_ended(ti)
        if hooks.recorder is None:
            result = record_outcome(session_factory, task, ti.key, try_number=try_number,
                                    max_tries=max_tries, start_date=start_date,
                                    outcome=outcome, dataset_events=hooks.dataset_events)
        else:
            record = outcome_record(task, outcome, try_number=try_number,
                                    max_tries=max_tries, start_date=start_date)
            result = TryResult(state=record.state, recorded=hooks.recorder(record),
                               outcome=outcome)
        for hook in hooks.hooks:
            hook.outcome_written(spec, ti, context, result)
    return result


def task_log_path(log_folder: Path, key: TaskInstanceKey, try_number: int) -> Path:
    """Airflow 2's layout: ``dag_id=D/run_id=R/task_id=T[/map_index=N]/attempt=K.log``."""
    folder = log_folder / f"dag_id={key.dag_id}" / f"run_id={key.run_id}" / f"task_id={key.task_id}"
    if key.map_index >= 0:
        folder = folder / f"map_index={key.map_index}"
    return folder / f"attempt={try_number}.log"


@contextmanager
def task_log_handler(path: Path | None) -> Iterator[None]:
    """Send everything logged while the try runs to its log file too, with the secrets the
    process has read masked (:class:`~squall.secrets.masking.RedactingFilter`)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s] {%(name)s} %(levelname)s - %(message)s"))
    handler.addFilter(RedactingFilter())  # connection passwords, sensitive variables
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
