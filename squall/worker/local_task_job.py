"""The LocalTaskJob supervisor: one per task-run command a worker accepts (ADR 9).

Process model (one line per process, parent first)::

    celery worker            preloads Squall's modules, forks its pool
      pool process           squall.run_task -> execute_command() -> LocalTaskJob.run():
                             the supervisor, on this process's long-lived engine
        task process         run_forked_task_process(): run_try, outcome sent back (forked;
                             or a new interpreter, ``python -m squall tasks run ... --raw``,
                             which records its own outcome)

The task process is forked first, with its task from the pool process's
:data:`DAG_FILE_CACHE` (or loading it itself), and waits. One transaction then inserts the
``job`` row, moves the task instance QUEUED -> RUNNING with one compare-and-set (state, try
number and Celery task id; the task process's pid is recorded), deletes the task's XComs
and reads its run; the task process gets that as its go-ahead. A lost compare-and-set (a
duplicate delivery, a cleared or finished task instance) leaves nothing behind, and the
waiting task process is killed. While the task runs the supervisor heartbeats every
``[scheduler] job_heartbeat_sec`` and kills the task process's group when the row stops
being RUNNING under this job and try. The task process sends its outcome; the supervisor
writes it by compare-and-set from RUNNING, with the job row's end, in one transaction, and
answers whether it won (callbacks run in the task process after that). A task process that
exits without an outcome, and a SIGTERM to the supervisor, end the try as failed (or
up_for_retry) with the reason recorded; when the task has the matching
``on_failure_callback`` / ``on_retry_callback``, a ``callback_request`` for the DAG processor
is inserted in the same transaction (the supervisor runs no user code).

A heartbeat that fails because the database is unreachable changes nothing: the task keeps
running and the next heartbeat tries again (the outage is logged once at ERROR, counted as
``worker.outage``, and once when it is over). Only a row *read* as changed kills the task
(``scheduler.tasks.killed_externally``). If the outage outlasts ``[scheduler]
zombie_threshold`` the scheduler fails the try as a zombie, and the first heartbeat after
the outage reads that and kills the task.

:class:`SupervisorStatus` says how the supervisor's work ended; it is not a task instance
state (that is in ``SupervisorResult.state``).
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from sqlalchemy import Engine, update
from sqlalchemy import select as sql_select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from squall.common import xcom
from squall.common.db import make_session_factory, session_scope
from squall.common.errors import PayloadError
from squall.common.metrics import TASKS_KILLED_EXTERNALLY, WORKER_OUTAGE, LogMetrics, Metrics
from squall.common.models import DagRun, Job, TaskInstance, compare_and_set_state, utcnow
from squall.common.payload import TaskRunCommand, resolve_dag_file
from squall.common.procutil import (
    child_pids,
    end_descendants,
    flush_std_streams,
    has_children,
    set_child_subreaper,
)
from squall.common.settings import Settings
from squall.common.state import JobState, TaskInstanceState
from squall.execution.callbacks import (
    enqueue_callback,
    serialized_task_callback_fileloc,
    task_kind,
)
from squall.execution.runner import task_log_handler, task_log_path, write_outcome
from squall.sdk.examples import EXAMPLES_FOLDER
from squall.sdk.operators.base import BaseOperator
from squall.worker.task_process import (
    MSG_OUTCOME,
    DagFileCache,
    StartedTry,
    TaskLoadError,
    TaskProcessHandle,
    TaskProcessSpec,
    TryTermination,
    dag_run_values,
    describe_exit,
    kill_grace_for,
    kill_group,
    open_pidfd,
    parent_death_sigterm,
    raw_task_argv,
    raw_task_env,
    record_failure,
    run_forked_task_process,
)

log = logging.getLogger(__name__)

#: the DAG files this (pool) process keeps imported, for the task processes it forks
DAG_FILE_CACHE = DagFileCache()

JOB_TYPE = "LocalTaskJob"
REASON_SIGTERM = "supervisor received SIGTERM"
#: how often an outcome the database could not take is written again
OUTCOME_RETRY_SECONDS = 1.0

T = TypeVar("T")


class SupervisorStatus(StrEnum):
    """How a supervisor's work on one command ended (not a task instance state)."""

    COMPLETED = "completed"  # the task process ran the try and recorded its outcome
    SKIPPED_DUPLICATE = "skipped_duplicate"  # not QUEUED for this try and Celery task id
    KILLED = "killed"  # the row changed under it; the task process was killed
    TASK_PROCESS_DIED = "task_process_died"  # exited without recording; recorded failed
    TERMINATED = "terminated"  # the supervisor got SIGTERM; recorded failed


@dataclass(frozen=True)
class SupervisorResult:
    status: SupervisorStatus
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    #: the task instance's state when the supervisor finished, when it was still this try's
    state: str | None = None
    job_id: int | None = None
    pid: int | None = None  # the task process
    exit_code: int | None = None  # the task process's; negative: killed by that signal
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


class LocalTaskJob:
    """Supervises one try of one task instance (see the module docstring)."""

    def __init__(self, command: TaskRunCommand, *, settings: Settings, engine: Engine,
                 celery_task_id: str, worker_name: str,
                 heartbeat_interval: float | None = None,
                 kill_grace: float | None = None,
                 child_close_fds: Sequence[int] = (),
                 metrics: Metrics | None = None) -> None:
        self.command = command
        self.key = command.key
        self.try_number = command.try_number
        self._settings = settings
        self._engine = engine
        self._factory = make_session_factory(engine)
        self._celery_task_id = celery_task_id
        self._worker_name = worker_name
        self._heartbeat = heartbeat_interval or settings.scheduler.job_heartbeat_sec
        #: how long the task process may take to exit after SIGTERM before SIGKILL
        self._kill_grace = kill_grace if kill_grace is not None else kill_grace_for(
            self._heartbeat)
        self._child_close_fds = tuple(child_close_fds)
        self._job_id: int | None = None
        self._terminate_requested = False
        self._wakeup: tuple[int, int] | None = None
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1
        self._status_fd: int | None = None  # read end of the task process's status pipe
        self._channel: Connection | None = None  # to the forked task process
        self._started: StartedTry | None = None
        self._recorded: tuple[bool, str] | None = None  # (won, state) of the written outcome
        self._pending: tuple[str, Any] | None = None  # a message not answered yet
        self._pending_retry_at = 0.0
        self._pending_failed = False  # a write of the pending message failed (logged once)
        self._job_finished = False
        self._task_recording = False
        self._metrics: Metrics = metrics if metrics is not None else LogMetrics()
        self._outage_since: float | None = None

    # ----------------------------------------------------------------------- lifecycle

    def run(self) -> SupervisorResult:
        self._install_signal_handlers()
        # orphans of the try's processes come to this process, so none escapes the sweep
        set_child_subreaper()
        before = set(child_pids()) if has_children() else set()
        try:
            return self._run()
        finally:
            self._end_leftovers(before)
            self._restore_signal_handlers()

    def _end_leftovers(self, before: set[int]) -> None:
        """End what the try's processes left running (a background command, a daemon, a
        grandchild of a killed task process): the try's processes end with it. Only this
        process's children that were not there before the try; a system call says when
        there are none, the usual case."""
        if not has_children():
            return
        ended = end_descendants(self._kill_grace, exclude=before)
        if ended:
            log.warning("TaskInstance %s: try %d: ended %d process(es) the try left running: "
                        "%s", self.key, self.try_number, len(ended),
                        ", ".join(str(pid) for pid in ended))

    def _run(self) -> SupervisorResult:
        if self._settings.core.execute_tasks_new_python_interpreter:
            return self._run_new_interpreter()
        # The task process is forked first and waits for the go-ahead: its pid then goes
        # into the start transaction, and it loads the DAG file while that transaction runs.
        child = self._fork_task_process()
        job_id = self._start(task_pid=child.pid)
        if job_id is None:
            self._release_child(child, go=False)
            return self._result(SupervisorStatus.SKIPPED_DUPLICATE, reason=self._refusal)
        result: SupervisorResult | None = None
        try:
            if self._terminate_requested:
                self._release_child(child, go=False)
                result = self._fail_try(SupervisorStatus.TERMINATED, REASON_SIGTERM)
            else:
                self._release_child(child, go=True)
                result = self._watch(child)
            return result
        finally:
            self._finish_job(result)

    def _run_new_interpreter(self) -> SupervisorResult:
        job_id = self._start(task_pid=None)
        if job_id is None:
            return self._result(SupervisorStatus.SKIPPED_DUPLICATE, reason=self._refusal)
        result: SupervisorResult | None = None
        try:
            if self._terminate_requested:
                result = self._fail_try(SupervisorStatus.TERMINATED, REASON_SIGTERM)
            else:
                child = self._start_new_interpreter(job_id)
                self._record_pid(child.pid)
                result = self._watch(child)
            return result
        finally:
            self._finish_job(result)

    def _result(self, status: SupervisorStatus, **values: Any) -> SupervisorResult:
        return SupervisorResult(status=status, dag_id=self.key.dag_id,
                                task_id=self.key.task_id, run_id=self.key.run_id,
                                try_number=self.try_number, job_id=self._job_id, **values)

    def _start(self, task_pid: int | None) -> int | None:
        return self._once_more_on_disconnect("starting the try",
                                             lambda: self._start_once(task_pid))

    def _start_once(self, task_pid: int | None) -> int | None:
        """Insert the job row and move QUEUED -> RUNNING (recording ``task_pid``, or this
        process's pid), in one transaction; the job id, or None (and nothing written) when
        the compare-and-set loses."""
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
                start_date=now, end_date=None,
            )
            if won:
                xcom.clear(session, dag_id=self.key.dag_id, run_id=self.key.run_id,
                           task_id=self.key.task_id)
                dag_run, max_tries = session.execute(
                    sql_select(DagRun, TaskInstance.max_tries)
                    .join(TaskInstance, (TaskInstance.dag_id == DagRun.dag_id)
                          & (TaskInstance.run_id == DagRun.run_id))
                    .where(*self._key_clause())).one()
                self._started = StartedTry(job_id=job.id, max_tries=int(max_tries or 0),
                                           start_date=now, dag_run=dag_run_values(dag_run))
                session.commit()
                self._job_id = job.id
                log.info("TaskInstance %s: try %d queued -> running on %s (job %d)",
                         self.key, self.try_number, self._worker_name, job.id)
                return job.id
            session.rollback()
            row = session.execute(
                sql_select(TaskInstance.state, TaskInstance.try_number,
                           TaskInstance.external_executor_id).where(*self._key_clause())
            ).one_or_none()
        if row is None:
            self._refusal = "the task instance does not exist"
        elif row.try_number != self.try_number:
            self._refusal = f"the task instance is at try {row.try_number} ({row.state})"
        elif row.state != TaskInstanceState.QUEUED:
            self._refusal = f"the task instance is {row.state}, not queued"
        else:
            self._refusal = (f"the task instance was queued under Celery task id "
                             f"{row.external_executor_id}, not {self._celery_task_id}")
        log.warning("TaskInstance %s: try %d not started: %s", self.key, self.try_number,
                    self._refusal)
        return None

    _refusal = ""

    def _key_clause(self) -> tuple[Any, ...]:
        return (TaskInstance.dag_id == self.key.dag_id,
                TaskInstance.task_id == self.key.task_id,
                TaskInstance.run_id == self.key.run_id)

    def _ours_clause(self) -> tuple[Any, ...]:
        return (*self._key_clause(), TaskInstance.state == TaskInstanceState.RUNNING.value,
                TaskInstance.try_number == self.try_number,
                TaskInstance.job_id == self._job_id)

    def _record_pid(self, pid: int) -> None:
        try:
            with session_scope(self._factory) as session:
                session.execute(update(TaskInstance).where(*self._ours_clause())
                                .values(pid=pid).execution_options(synchronize_session=False))
        except SQLAlchemyError as exc:  # informational only: the task must run regardless
            log.warning("TaskInstance %s: pid %d not recorded: %s", self.key, pid, exc)

    def _finish_job(self, result: SupervisorResult | None) -> None:
        self._close_channel()
        if self._job_finished:
            return
        ok = result is not None and result.status == SupervisorStatus.COMPLETED
        state = JobState.SUCCESS if ok else JobState.FAILED
        now = utcnow()
        try:
            with session_scope(self._factory) as session:
                session.execute(update(Job).where(Job.id == self._job_id).values(
                    state=state.value, end_date=now, latest_heartbeat=now))
        except SQLAlchemyError as exc:
            log.error("TaskInstance %s: job %s not marked %s: %s", self.key, self._job_id,
                      state.value, exc)

    # ----------------------------------------------------------------------- task process

    def _new_status_pipe(self) -> int:
        """A pipe the task process writes one byte to before it records its outcome; the
        read end stays here, the write end is returned (close it once the child has it)."""
        status_read, status_write = os.pipe()
        os.set_blocking(status_read, False)
        self._status_fd = status_read
        return status_write

    def _fork_task_process(self) -> TaskProcessHandle:
        """Fork the task process, with its task loaded from this process's
        :data:`DAG_FILE_CACHE` (``[celery] worker_cache_dag_files``) or loading it itself;
        it waits for :meth:`_release_child` before it runs anything of the try."""
        loaded: BaseOperator | TaskLoadError | None = None
        if self._settings.celery.worker_cache_dag_files:
            try:
                loaded = DAG_FILE_CACHE.load_task(self._settings, self.command.dag_file,
                                                  self.key)
            except TaskLoadError as exc:
                loaded = exc  # the task process reports it once the try has started
        ours, theirs = Pipe(duplex=True)
        self._channel = ours
        spec = TaskProcessSpec(key=self.key, try_number=self.try_number, job_id=0,
                               dag_file=self.command.dag_file, hostname=self._worker_name)
        try:
            # SIGTERM stays blocked across the fork until the child has its own handlers
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                pid = os.fork()
            except BaseException:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
                self._close_channel()
                raise
            if pid == 0:  # the task process
                code = 1
                try:
                    termination = self._become_task_process()
                    code = run_forked_task_process(self._settings, spec, theirs, self._engine,
                                                   loaded, termination)
                except BaseException:
                    log.exception("TaskInstance %s: try %d: task process failed", self.key,
                                  self.try_number)
                finally:
                    flush_std_streams()
                    os._exit(code)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass  # the child did it first
            return TaskProcessHandle(pid)
        finally:
            theirs.close()

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _release_child(self, child: TaskProcessHandle, *, go: bool) -> None:
        """Tell the waiting task process to run the try (``go``: it gets the
        :class:`StartedTry`), or stop it before it ran anything of the try (killed and
        reaped)."""
        if go:
            assert self._channel is not None and self._started is not None
            try:
                self._channel.send(self._started)
                log.info("TaskInstance %s: try %d: task process %d (forked)", self.key,
                         self.try_number, child.pid)
            except OSError as exc:  # it died already: _watch sees its exit and records it
                log.warning("TaskInstance %s: try %d: task process %d did not take the "
                            "go-ahead: %s", self.key, self.try_number, child.pid, exc)
            return
        self._close_channel()
        kill_group(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)

    def _serve_channel(self) -> None:
        """Answer what the forked task process sent: write its outcome (or its load error)
        by compare-and-set, finishing the job row in the same transaction, and tell it
        whether that won. While the database cannot be written the outcome stays pending
        (the task process waits for its answer) and is tried again every
        :data:`OUTCOME_RETRY_SECONDS`."""
        channel = self._channel
        if self._pending is None and channel is not None and channel.poll():
            try:
                self._pending = channel.recv()
            except (EOFError, OSError):
                self._close_channel()
                return
            self._task_recording = True
        if self._pending is None or time.monotonic() < self._pending_retry_at:
            return
        try:
            won, state = self._write_pending(*self._pending)
        except SQLAlchemyError as exc:
            if self._outage_since is None:  # one outage, counted once (heartbeats share it)
                self._outage_since = time.monotonic()
                self._metrics.incr(WORKER_OUTAGE)
            if not self._pending_failed:
                self._pending_failed = True
                log.error("TaskInstance %s: database unreachable: the try's outcome is not "
                          "written yet: %s; retrying every %.1f s", self.key, exc,
                          OUTCOME_RETRY_SECONDS)
            self._pending_retry_at = time.monotonic() + OUTCOME_RETRY_SECONDS
            return
        if self._outage_since is not None:
            log.error("TaskInstance %s: database reachable again after %.1f s; outcome "
                      "written", self.key, time.monotonic() - self._outage_since)
            self._outage_since = None
        self._pending = None
        self._recorded = (won, state)
        try:
            if self._channel is not None:
                self._channel.send(won)
        except OSError:
            pass  # it died meanwhile; the outcome is written all the same

    def _write_pending(self, kind: str, payload: Any) -> tuple[bool, str]:
        if kind == MSG_OUTCOME:
            won = self._once_more_on_disconnect("writing the outcome", lambda: write_outcome(
                self._factory, self.key, try_number=self.try_number, record=payload,
                on_recorded=self._finish_job_with, quiet=True))
            return won, payload.state.value
        max_tries = self._started.max_tries if self._started is not None else 0
        result = self._once_more_on_disconnect("recording the load error", lambda: (
            record_failure(self._factory, self.key, try_number=self.try_number,
                           max_tries=max_tries, start_date=self._started_at(),
                           reason=str(payload), on_recorded=self._finish_job_with)))
        return result.recorded, result.state.value

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

    def _finish_job_with(self, session: Session, _state: TaskInstanceState) -> None:
        now = utcnow()
        session.execute(update(Job).where(Job.id == self._job_id).values(
            state=JobState.SUCCESS.value, end_date=now, latest_heartbeat=now))
        self._job_finished = True

    def _started_at(self) -> datetime:
        return self._started.start_date if self._started is not None else utcnow()

    def _start_new_interpreter(self, job_id: int) -> TaskProcessHandle:
        status_write = self._new_status_pipe()
        spec = TaskProcessSpec(key=self.key, try_number=self.try_number, job_id=job_id,
                               dag_file=self.command.dag_file, hostname=self._worker_name,
                               status_fd=status_write)
        try:
            popen = subprocess.Popen(
                raw_task_argv(self._settings, spec), env=raw_task_env(),
                stdin=subprocess.DEVNULL, process_group=0, close_fds=True,
                pass_fds=(status_write,), preexec_fn=parent_death_sigterm,
            )
            log.info("TaskInstance %s: try %d: task process %d (new interpreter)",
                     self.key, self.try_number, popen.pid)
            return TaskProcessHandle(popen.pid, popen)
        finally:
            os.close(status_write)

    def _task_is_recording(self) -> bool:
        """Whether the task process said it is recording its own outcome (so a changed
        state is its doing, and it is finishing: callbacks, then exit)."""
        if not self._task_recording and self._status_fd is not None:  # a new interpreter
            try:
                self._task_recording = bool(os.read(self._status_fd, 64))
            except BlockingIOError:
                pass
        return self._task_recording

    def _become_task_process(self) -> TryTermination:
        """In the forked child: own process group, SIGTERM ending the try and its processes
        (:class:`TryTermination`), no inherited fds or pooled database connections; the
        garbage collector leaves inherited objects alone (a full collection would touch,
        and so copy, every page the pool process shares with this process: tens of
        milliseconds)."""
        gc.freeze()
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        termination = TryTermination(self._kill_grace / 2)
        termination.install()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self._channel is not None:
            self._channel.close()
        for fd in (*(self._wakeup or ()), self._status_fd, *self._child_close_fds):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._engine.dispose(close=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return termination

    # ----------------------------------------------------------------------- watching

    def _watch(self, child: TaskProcessHandle) -> SupervisorResult:
        pidfd = open_pidfd(child.pid)
        try:
            next_beat = time.monotonic() + self._heartbeat
            while True:
                code = child.poll()
                if code is not None:
                    return self._on_task_exit(child, code)
                if self._terminate_requested:
                    log.warning("TaskInstance %s: try %d: %s; terminating task process %d",
                                self.key, self.try_number, REASON_SIGTERM, child.pid)
                    self._kill(child, pidfd)
                    return self._fail_try(SupervisorStatus.TERMINATED, REASON_SIGTERM,
                                          pid=child.pid, exit_code=child.returncode)
                now = time.monotonic()
                if now < next_beat:
                    wait = next_beat - now
                    if self._pending is not None:
                        wait = min(wait, max(self._pending_retry_at - now, 0.0))
                    self._wait(pidfd, wait)
                    continue
                next_beat = now + self._heartbeat
                changed = self._heartbeat_and_check()
                if changed is not None and self._task_is_recording():
                    log.debug("TaskInstance %s: %s by the task process itself", self.key,
                              changed)
                elif changed is not None:
                    with task_log_handler(self._log_path()):
                        log.warning("TaskInstance %s: state changed externally to %s; killing",
                                    self.key, changed)
                    self._kill(child, pidfd)
                    self._metrics.incr(TASKS_KILLED_EXTERNALLY)
                    return self._result(SupervisorStatus.KILLED, pid=child.pid,
                                        exit_code=child.returncode,
                                        reason=f"state changed externally to {changed}")
        finally:
            for fd in (pidfd, self._status_fd):
                if fd is not None:
                    os.close(fd)
            self._status_fd = None

    def _heartbeat_and_check(self) -> str | None:
        """Beat the job row; None while the row is still this job's running try, else what
        it became."""
        try:
            row = self._once_more_on_disconnect("heartbeat", self._beat)
        except SQLAlchemyError as exc:
            # never kill the task because the database is unreachable; retry next beat
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                self._metrics.incr(WORKER_OUTAGE)
                log.error("TaskInstance %s: database unreachable: heartbeat of job %s failed: "
                          "%s; the task keeps running, retrying every %.1f s", self.key,
                          self._job_id, exc, self._heartbeat)
            else:
                log.debug("TaskInstance %s: heartbeat of job %s failed again: %s", self.key,
                          self._job_id, exc)
            return None
        if self._outage_since is not None:
            log.error("TaskInstance %s: database reachable again after %.1f s; heartbeat of "
                      "job %s resumed", self.key, time.monotonic() - self._outage_since,
                      self._job_id)
            self._outage_since = None
        if row is None:
            return "deleted"
        if row.try_number != self.try_number or row.job_id != self._job_id:
            return f"{row.state} (try {row.try_number}, job {row.job_id})"
        if row.state != TaskInstanceState.RUNNING:
            return str(row.state)
        return None

    def _beat(self) -> Any:
        with session_scope(self._factory) as session:
            session.execute(update(Job).where(Job.id == self._job_id)
                            .values(latest_heartbeat=utcnow()))
            return session.execute(
                sql_select(TaskInstance.state, TaskInstance.try_number,
                           TaskInstance.job_id).where(*self._key_clause())
            ).one_or_none()

    def _wait(self, pidfd: int | None, timeout: float) -> None:
        """Sleep until the task process exits, a signal arrives, or ``timeout`` passes."""
        assert self._wakeup is not None
        fds = [self._wakeup[0]] + ([pidfd] if pidfd is not None else [])
        if self._channel is not None:
            fds.append(self._channel.fileno())
        ready, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        self._serve_channel()
        if self._wakeup[0] in ready:
            try:
                while os.read(self._wakeup[0], 512):
                    pass
            except BlockingIOError:
                pass

    def _kill(self, child: TaskProcessHandle, pidfd: int | None) -> None:
        """SIGTERM the task process's group, SIGKILL after the grace period, reap it."""
        kill_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._kill_grace
        while child.poll() is None and time.monotonic() < deadline:
            self._wait(pidfd, min(deadline - time.monotonic(), 0.5))
        if child.poll() is None:
            log.warning("TaskInstance %s: task process %d still alive %.1f s after SIGTERM; "
                        "sending SIGKILL", self.key, child.pid, self._kill_grace)
            kill_group(child.pid, signal.SIGKILL)
            while child.poll() is None:
                self._wait(pidfd, 0.5)
        kill_group(child.pid, signal.SIGKILL)  # whatever it left behind in its group

    def _on_task_exit(self, child: TaskProcessHandle, code: int) -> SupervisorResult:
        if self._started is not None:  # forked: this process writes the outcome
            self._serve_channel()  # anything it sent before it exited
            deadline = time.monotonic() + self._settings.scheduler.zombie_threshold
            while (self._pending is not None and time.monotonic() < deadline
                   and not self._terminate_requested):
                time.sleep(max(self._pending_retry_at - time.monotonic(), 0.05))  # backoff
                self._serve_channel()
            if self._recorded is None:
                return self._fail_try(SupervisorStatus.TASK_PROCESS_DIED, describe_exit(code),
                                      pid=child.pid, exit_code=code)
            won, written = self._recorded
            state: str | None = written
            if not won:
                with session_scope(self._factory) as session:
                    state = session.scalar(sql_select(TaskInstance.state).where(
                        *self._key_clause(), TaskInstance.try_number == self.try_number))
            log.info("TaskInstance %s: try %d: task process %d exited (%s); state %s",
                     self.key, self.try_number, child.pid, code, state)
            return self._result(SupervisorStatus.COMPLETED, state=state, pid=child.pid,
                                exit_code=code)
        with session_scope(self._factory) as session:
            row = session.execute(
                sql_select(TaskInstance.state).where(*self._ours_clause())
            ).one_or_none()
        if row is not None:  # still RUNNING under this job: nobody recorded an outcome
            return self._fail_try(SupervisorStatus.TASK_PROCESS_DIED, describe_exit(code),
                                  pid=child.pid, exit_code=code)
        with session_scope(self._factory) as session:
            now_state = session.scalar(
                sql_select(TaskInstance.state).where(
                    *self._key_clause(), TaskInstance.try_number == self.try_number))
        log.info("TaskInstance %s: try %d: task process %d exited (%s); state %s", self.key,
                 self.try_number, child.pid, code, now_state)
        return self._result(SupervisorStatus.COMPLETED, state=now_state, pid=child.pid,
                            exit_code=code)

    def _fail_try(self, status: SupervisorStatus, reason: str, **values: Any) -> SupervisorResult:
        """Record the running try failed / up_for_retry with ``reason`` (compare-and-set)."""
        return self._once_more_on_disconnect(
            "recording the failure", lambda: self._fail_try_once(status, reason, **values))

    def _fail_try_once(self, status: SupervisorStatus, reason: str,
                       **values: Any) -> SupervisorResult:
        with session_scope(self._factory) as session:
            ti = session.scalars(sql_select(TaskInstance).where(*self._key_clause())).first()
        state: str | None = None
        if ti is not None:
            with task_log_handler(self._log_path()):
                log.error("TaskInstance %s: try %d: %s", self.key, self.try_number, reason)
                result = record_failure(self._factory, self.key, try_number=self.try_number,
                                        max_tries=ti.max_tries,
                                        start_date=ti.start_date or utcnow(), reason=reason,
                                        on_recorded=lambda session, new_state: (
                                            self._request_callback(session, new_state, reason)))
            state = result.state.value if result.recorded else None
        return self._result(status, state=state, reason=reason, **values)

    def _request_callback(self, session: Session, new_state: TaskInstanceState,
                          reason: str) -> None:
        """In the transaction of the won compare-and-set: when the task has the callback for
        ``new_state``, a request for the DAG processor to run it (the supervisor has no DAG
        object). The file is the processor's own (``serialized_dag.fileloc``), or this
        command's DAG file when the DAG is not serialized."""
        kind = task_kind(new_state)
        if kind is None:
            return
        known, fileloc = serialized_task_callback_fileloc(session, self.key.dag_id,
                                                          self.key.task_id, kind)
        if known and fileloc is None:
            return  # the task has no such callback
        if fileloc is None:
            examples = EXAMPLES_FOLDER if self._settings.core.load_examples else None
            try:
                fileloc = str(resolve_dag_file(self.command.dag_file,
                                               self._settings.dags_folder, examples))
            except PayloadError as exc:
                log.warning("TaskInstance %s: try %d: %s not requested: %s", self.key,
                            self.try_number, kind.callback_name, exc)
                return
        enqueue_callback(session, kind=kind, dag_id=self.key.dag_id, fileloc=fileloc,
                         run_id=self.key.run_id, task_id=self.key.task_id,
                         try_number=self.try_number, message=reason)

    def _log_path(self) -> Path:
        return task_log_path(self._settings.log_folder, self.key, self.try_number)

    # ----------------------------------------------------------------------- signals

    def _on_sigterm(self, _signum: int, _frame: FrameType | None) -> None:
        self._terminate_requested = True

    def _install_signal_handlers(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._wakeup = (read_fd, write_fd)
        self._previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        # wakes the select when the task process exits (where pidfds are not available)
        self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)

    def _restore_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        for fd in self._wakeup or ():
            os.close(fd)
        self._wakeup = None
