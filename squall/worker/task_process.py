"""The task process: the child a LocalTaskJob supervisor starts to run one try.

Forked (the default, ADR 9): :func:`run_forked_task_process` gets its task from the
supervisor's :class:`~squall.worker.dag_file_cache.DagFileCache` (or imports the DAG file
itself), waits for the go-ahead (:class:`~squall.worker.try_writes.StartedTry`: the try
started, with its run and ``max_tries``), hands the task to
:func:`squall.execution.runner.run_try`, and sends the outcome back for the supervisor to
write; it opens a database connection only when the task itself needs one (XCom, skips).
In a new interpreter (``squall tasks run ... --raw``, with ``[core]
execute_tasks_new_python_interpreter``): :func:`run_task_process` checks that the task
instance is RUNNING under its job, imports the DAG file and records its own outcome. A DAG
file or task that cannot be loaded is recorded as a failed try (retried per ``retries``)
with a reason naming the file.

How a task process ends its try on SIGTERM, and when its supervisor dies, is
:class:`TryTermination` (ADR 12); how the supervisor starts and stops it is
:mod:`squall.worker.children`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from sqlalchemy import Engine, select

from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.errors import TaskLoadError
from squall.common.lease_terms import kill_grace_for
from squall.common.models import DagRun, TaskInstance, TaskInstanceKey, clip_reason, utcnow
from squall.common.procutil import (
    end_descendants,
    flush_std_streams,
    set_child_subreaper,
    set_parent_death_signal,
)
from squall.common.settings import Settings
from squall.common.state import TaskInstanceState
from squall.execution.deferral import resume_of
from squall.execution.runner import (
    OutcomeRecord,
    Recorder,
    TryHook,
    TryHooks,
    TrySpec,
    log_written,
    run_try,
    safe_on_kill,
    task_log_handler,
    task_log_path,
)
from squall.execution.try_hooks import CodeEnded, EmailAlerts, RunAsUser, TaskCallbacks
from squall.runs.trigger import trigger_dag_run
from squall.sdk.operators.base import BaseOperator
from squall.sdk.operators.trigger_dagrun import install_dag_run_trigger
from squall.worker.dag_file_cache import load_task
from squall.worker.try_writes import StartedTry, outcome_writer, record_failure

log = logging.getLogger(__name__)

EXIT_OK = 0  # the try ran (or could not be loaded) and its outcome was recorded
EXIT_NOT_OURS = 3  # the task instance is no longer running under this job: nothing done


@dataclass(frozen=True)
class TaskProcessSpec:
    """What a task process needs to know, beyond the settings."""

    key: TaskInstanceKey
    try_number: int
    job_id: int
    dag_file: str
    hostname: str
    #: a pipe to the supervisor: one byte is written just before the outcome is recorded
    status_fd: int | None = None

    def notify_recording(self) -> None:
        if self.status_fd is not None:
            try:
                os.write(self.status_fd, b"R")
            except OSError:
                pass


def run_task_process(settings: Settings, spec: TaskProcessSpec) -> int:
    """Run the try described by ``spec`` in this process; returns the exit code to use.

    Opens its own database engine (never one inherited through a fork) and disposes of it.
    SIGTERM ends the try and every process it started (:class:`TryTermination`).
    """
    termination = TryTermination(kill_grace_for(settings.scheduler.job_heartbeat_sec) / 2)
    termination.install()
    db = settings.database
    engine = make_engine(settings.sql_alchemy_conn, pool_size=2, max_overflow=2,
                         pool_recycle=db.sql_alchemy_pool_recycle,
                         pool_pre_ping=db.sql_alchemy_pool_pre_ping)
    try:
        return _run(settings, spec, make_session_factory(engine), termination)
    finally:
        engine.dispose()


#: a forked task process's messages to its supervisor (answered with whether it was written)
MSG_OUTCOME = "outcome"  # an OutcomeRecord: the try ran
MSG_LOAD_ERROR = "load_error"  # a reason: the DAG file or task could not be loaded


def run_forked_task_process(settings: Settings, spec: TaskProcessSpec, channel: Connection,
                            engine: Engine,
                            loaded: BaseOperator | TaskLoadError | None = None,
                            termination: TryTermination | None = None) -> int:
    """The body of a task process forked before its try started.

    It loads the task (unless the supervisor had it ``loaded``, from its
    :class:`DagFileCache`) while the supervisor starts the try, then waits on ``channel`` for
    the go-ahead (a :class:`StartedTry`; an end of file means the try is not ours and nothing
    is done). It runs the try and sends the outcome to the supervisor, which writes it on its
    own long-lived connection and answers whether the compare-and-set won; callbacks run
    after that. ``engine`` is the supervisor's, its pool emptied by the fork: the task's own
    reads and writes (XCom, skips) connect on first use. It is disposed of here.
    ``termination``, installed by the caller, learns the task the try runs.
    """
    if loaded is None:
        try:
            loaded = load_task(settings, spec.dag_file, spec.key)
        except TaskLoadError as exc:
            loaded = exc
    try:
        try:
            started: StartedTry = channel.recv()
        except EOFError:
            return EXIT_NOT_OURS
        key = spec.key
        log_path = task_log_path(settings.log_folder, key, spec.try_number)
        if isinstance(loaded, TaskLoadError):
            with task_log_handler(log_path):
                log.error("TaskInstance %s: try %d cannot run: %s", key, spec.try_number,
                          loaded)
                _ask(channel, (MSG_LOAD_ERROR, clip_reason(str(loaded))))
            return EXIT_OK

        def recorder(record: OutcomeRecord) -> bool:
            won = _ask(channel, (MSG_OUTCOME, record))
            log_written(key, spec.try_number, record.state, won)  # into the task's log
            return won

        install_dag_run_trigger(trigger_dag_run)
        run_try(TrySpec(loaded, DagRun(**started.dag_run), try_number=spec.try_number,
                        max_tries=started.max_tries, start_date=started.start_date,
                        hostname=spec.hostname, log_path=log_path, clear_xcom=False,
                        previous_success=started.previous_success, map_index=key.map_index,
                        resume=started.resume),
                make_session_factory(engine),
                worker_hooks(settings, termination, recorder=recorder))
        return EXIT_OK
    finally:
        channel.close()
        engine.dispose()


def _ask(channel: Connection, message: tuple[str, Any]) -> bool:
    """Send ``message`` to the supervisor; whether it wrote it (False if it is gone)."""
    try:
        channel.send(message)
        return bool(channel.recv())
    except (EOFError, OSError):
        log.error("the supervisor did not answer; the outcome may not be recorded")
        return False


def _run(settings: Settings, spec: TaskProcessSpec, factory: SessionFactory,
         termination: TryTermination) -> int:
    """Check that the try is still running under ``spec.job_id``, load the DAG file and run
    the try, recording its outcome through :mod:`~squall.worker.try_writes` (the
    new-interpreter path)."""
    key = spec.key
    with session_scope(factory) as session:
        ti = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == key.dag_id, TaskInstance.task_id == key.task_id,
            TaskInstance.run_id == key.run_id,
            TaskInstance.map_index == key.map_index)).one_or_none()
        dag_run = session.scalars(select(DagRun).where(
            DagRun.dag_id == key.dag_id, DagRun.run_id == key.run_id)).one_or_none()
    if (ti is None or dag_run is None or ti.state != TaskInstanceState.RUNNING
            or ti.try_number != spec.try_number or ti.job_id != spec.job_id):
        seen = "gone" if ti is None or dag_run is None else (
            f"{ti.state} (try {ti.try_number}, job {ti.job_id})")
        log.warning("TaskInstance %s: try %d not run: expected running under job %d, "
                    "found %s", key, spec.try_number, spec.job_id, seen)
        return EXIT_NOT_OURS

    log_path = task_log_path(settings.log_folder, key, spec.try_number)
    start_date = ti.start_date or utcnow()
    try:
        task = load_task(settings, spec.dag_file, key)
    except TaskLoadError as exc:
        with task_log_handler(log_path):
            log.error("TaskInstance %s: try %d cannot run: %s", key, spec.try_number, exc)
            spec.notify_recording()
            record_failure(factory, key, try_number=spec.try_number, max_tries=ti.max_tries,
                           start_date=start_date, reason=str(exc))
        return EXIT_OK
    install_dag_run_trigger(trigger_dag_run)
    run_try(TrySpec(task, dag_run, try_number=spec.try_number, max_tries=ti.max_tries,
                    start_date=start_date, hostname=spec.hostname, log_path=log_path,
                    clear_xcom=False, map_index=key.map_index,
                    resume=resume_of(ti.next_method, ti.next_kwargs)),
            factory, worker_hooks(settings, termination, code_ended=spec.notify_recording,
                                  recorder=outcome_writer(factory, key,
                                                          try_number=spec.try_number)))
    return EXIT_OK


def worker_hooks(settings: Settings, termination: TryTermination | None, *,
                 recorder: Recorder,
                 code_ended: Callable[[], None] | None = None) -> TryHooks:
    """The steps of a try in a worker's task process (one try per process, so built once
    where it starts): ``termination`` learns the task (its ``on_kill``), a task with
    ``run_as_user`` runs as that user, ``code_ended()`` is called before the outcome is
    written, the outcome goes to ``recorder`` (a forked task process's supervisor, or
    :func:`~squall.worker.try_writes.outcome_writer`), then the callbacks and the e-mail
    alert."""
    hooks: list[TryHook] = [RunAsUser(switch=True)]
    if termination is not None:
        hooks.insert(0, termination)
    if code_ended is not None:
        hooks.append(CodeEnded(code_ended))
    hooks += [TaskCallbacks(),
              EmailAlerts(settings.smtp, airflow_compat=settings.core.airflow_compat)]
    return TryHooks(hooks=tuple(hooks), recorder=recorder)


# --------------------------------------------------------------------------- process handling

def parent_death_sigterm() -> None:
    """In a task process (also the ``preexec_fn`` of a new interpreter): get SIGTERM when
    the supervisor dies, so no task outlives its supervisor."""
    set_parent_death_signal(signal.SIGTERM)


class TryTermination(TryHook):
    """How a task process ends its try when it gets SIGTERM: from its supervisor (the
    try was cleared, marked, found a zombie, or the worker is stopping) or as its
    parent-death signal (the supervisor died, even by SIGKILL).

    :meth:`install` makes this process a child subreaper (an orphaned grandchild stays its
    descendant), asks for SIGTERM when the supervisor dies and installs the handler. The
    handler runs the running task's ``on_kill``, ends every process the try started
    (SIGTERM, ``grace`` seconds, SIGKILL; grandchildren in sessions of their own included:
    :func:`~squall.common.procutil.end_descendants`), and then lets SIGTERM end this
    process. It records nothing: the supervisor records the try, or the scheduler finds it
    a zombie when the supervisor is gone. As a hook of the try, it learns the task whose
    ``on_kill`` to run.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.task: BaseOperator | None = None  # the task whose try runs, once it runs

    def install(self) -> None:
        set_child_subreaper()
        parent_death_sigterm()
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def task_ready(self, task: BaseOperator) -> None:
        self.task = task

    def _on_sigterm(self, _signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.warning("Task process %d: SIGTERM: ending the try and every process it started",
                    os.getpid())
        if self.task is not None:
            safe_on_kill(self.task)
        ended = end_descendants(self.grace)
        if ended:
            log.warning("Task process %d: ended %s", os.getpid(),
                        ", ".join(str(pid) for pid in ended))
        flush_std_streams()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
