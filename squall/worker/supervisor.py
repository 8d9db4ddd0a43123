"""The LocalTaskJob supervisor: one per task-run command a worker accepts (ADR 9).

Process model (one line per process, parent first)::

    celery worker            preloads Squall's modules, forks its pool
      pool process           squall.run_task -> execute_command() -> LocalTaskJob.run():
                             the supervisor, on this process's long-lived engine
        fork server          one per pool process, forked at worker_process_init (``[celery]
                             worker_fork_server``, ADR 21): loads the task, forks, reaps
          task process       run_forked_task_process(): run_try, outcome sent back (forked
                             by the fork server, or by the pool process with it off; or a new
                             interpreter, ``python -m squall tasks run ... --raw``, which
                             records its own outcome)

The task process is forked first, with its task from the fork server's own DAG file cache
(with the server off, the pool process's launcher's; or loading it itself: how is the
worker's :class:`~squall.worker.launcher.TryLauncher`, chosen when it started), and
waits; the server sends its exit code on a status pipe, which the watch reads instead of
``waitpid``. The pool process's orphans include the task process's (the server is no
subreaper), and the server, a child from before the try, is never swept (ADR 12). One
transaction then inserts the ``job`` row, moves the task instance QUEUED -> RUNNING with one
compare-and-set (state, try number and Celery task id; the task process's pid is recorded),
deletes the task's XComs and reads its run; the task process gets that as its go-ahead. A
lost compare-and-set (a duplicate delivery, a cleared or finished task instance) leaves
nothing behind, and the waiting task process is killed. While the task runs the supervisor
heartbeats every ``[scheduler] job_heartbeat_sec`` and kills the task process's group when
the row stops being RUNNING under this job and try (a try cleared by ``squall tasks clear``
is RESTARTING: once every process of it is gone the supervisor moves the row to ``none``,
for its next try). The task process sends its outcome; the supervisor writes it by
compare-and-set from RUNNING, with the job row's end, in one transaction, and answers
whether it won (callbacks run in the task process after that). A task process that exits
without an outcome, and a SIGTERM to the supervisor, end the try as failed (or up_for_retry)
with the reason recorded; when the task has the matching ``on_failure_callback`` /
``on_retry_callback``, a ``callback_request`` for the DAG processor is inserted in the same
transaction (the supervisor runs no user code).

This module is the watch loop; every database write is :class:`~squall.worker.try_writes.
TryWrites`, and starting, talking to and killing the task process is
:class:`~squall.worker.children.TaskProcessControl`.

A heartbeat that fails because the database is unreachable does not stop the task at once:
the next heartbeat tries again (the outage is logged once at ERROR, counted as
``worker.outage``, and once when it is over: :class:`~squall.common.outage.Outage`), and a
row *read* as changed kills the task (``scheduler.tasks.killed_externally``). But every
successful heartbeat renews a lease (:mod:`squall.worker.lease`, ADR 17): ``[scheduler]
zombie_threshold`` less a safety margin, on the monotonic clock; a heartbeat runs on a
thread of its own and is waited for only while the lease lasts, since across a partition a
call hangs rather than fails. When the lease runs out without a successful heartbeat the
supervisor stops the try itself, before the scheduler may call it a zombie and start the
next try: every process of the try is killed, as for a changed row
(ADR 12), and the failure ("heartbeat lease lost") is written by compare-and-set on state,
try number and job once the database answers again, or not at all if it does not answer
within ``zombie_threshold`` (the scheduler's zombie handling then ends the try). Counted as
``worker.lease_lost``.

:class:`SupervisorStatus` says how the supervisor's work ended; it is not a task instance
state (that is in ``SupervisorResult.state``).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from types import FrameType
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from squall.common.db import make_session_factory
from squall.common.errors import SquallError
from squall.common.lease_terms import kill_grace_for, lease_terms
from squall.common.metrics import (
    TASKS_KILLED_EXTERNALLY,
    WORKER_LEASE_LOST,
    WORKER_OUTAGE,
    LogMetrics,
    Metrics,
)
from squall.common.outage import Outage
from squall.common.payload import TaskRunCommand
from squall.common.procutil import (
    end_descendants,
    has_children,
    quick_child_pids,
    set_child_subreaper,
)
from squall.common.settings import Settings
from squall.execution.runner import task_log_handler
from squall.worker.children import (
    TaskProcessControl,
    TaskProcessHandle,
    describe_exit,
    open_pidfd,
)
from squall.worker.fork_server import ForkServer
from squall.worker.launcher import LaunchKind, TryLauncher
from squall.worker.lease import HeartbeatLease
from squall.worker.task_process import MSG_OUTCOME, TaskProcessSpec
from squall.worker.try_writes import TryWrites

log = logging.getLogger(__name__)

REASON_SIGTERM = "supervisor received SIGTERM"
#: how often an outcome the database could not take is written again
OUTCOME_RETRY_SECONDS = 1.0


class SupervisorStatus(StrEnum):
    """How a supervisor's work on one command ended (not a task instance state)."""

    COMPLETED = "completed"  # the task process ran the try and recorded its outcome
    SKIPPED_DUPLICATE = "skipped_duplicate"  # not QUEUED for this try and Celery task id
    KILLED = "killed"  # the row changed under it; the task process was killed
    TASK_PROCESS_DIED = "task_process_died"  # exited without recording; recorded failed
    TERMINATED = "terminated"  # the supervisor got SIGTERM; recorded failed
    LEASE_LOST = "lease_lost"  # no successful heartbeat for the lease; killed, failed if it could


class HeartbeatBlocked(SquallError):
    """A heartbeat did not return before the lease ran out (or is still hanging)."""


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
    """Supervises one try of one task instance (see the module docstring).

    ``writes`` (made from ``engine`` when not given) is every database write of the try;
    ``launcher`` is how the task process is started, the worker's, chosen when it started
    (:mod:`squall.worker.launcher`; default: by the settings, without a fork server).
    """

    def __init__(self, command: TaskRunCommand, *, settings: Settings, engine: Engine,
                 celery_task_id: str, worker_name: str,
                 child_close_fds: Sequence[int] = (),
                 metrics: Metrics | None = None,
                 writes: TryWrites | None = None,
                 launcher: TryLauncher | None = None) -> None:
        self.command = command
        self.key = command.key
        self.try_number = command.try_number
        self._settings = settings
        self._heartbeat = settings.scheduler.job_heartbeat_sec
        self.writes = writes if writes is not None else TryWrites(
            command, settings=settings, factory=make_session_factory(engine),
            celery_task_id=celery_task_id, worker_name=worker_name)
        spec = TaskProcessSpec(key=self.key, try_number=self.try_number, job_id=0,
                               dag_file=command.dag_file, hostname=worker_name)
        #: the task process gets ``kill_grace`` seconds after SIGTERM before SIGKILL
        self._children = TaskProcessControl(settings=settings, engine=engine, spec=spec,
                                            kill_grace=kill_grace_for(self._heartbeat))
        self._child_close_fds = tuple(child_close_fds)
        self._engine = engine
        self._launcher = (launcher if launcher is not None
                          else TryLauncher(settings).without_fork_server())
        #: forks the task process (``fork_server``, once started in :meth:`run`); None:
        #: this process does
        self._fork_server: ForkServer | None = None
        self._terminate_requested = False
        self._wakeup: tuple[int, int] | None = None
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1
        self._recorded: tuple[bool, str] | None = None  # (won, state) of the written outcome
        self._pending: tuple[str, Any] | None = None  # a message not answered yet
        self._pending_retry_at = 0.0
        self._pending_failed = False  # a write of the pending message failed (logged once)
        self._metrics: Metrics = metrics if metrics is not None else LogMetrics()
        self._outage = Outage(f"TaskInstance {self.key}", self._metrics, WORKER_OUTAGE,
                              logger=log)
        #: seconds without a successful heartbeat after which the try stops itself (ADR 17)
        self.lease_seconds = lease_terms(settings.scheduler.zombie_threshold,
                                         self._heartbeat).lease
        self._lease: HeartbeatLease | None = None  # from just before the start transaction
        self._before: set[int] = set()  # this process's children before the try
        self._hung_beat: threading.Thread | None = None  # a heartbeat given up on, not returned
        self._watched: TaskProcessHandle | None = None  # the task process being watched
        self._forked: TaskProcessHandle | None = None  # the try's task process, once forked

    # ----------------------------------------------------------------------- lifecycle

    def run(self) -> SupervisorResult:
        # before anything of the try exists, so the server inherits none of it; it is a
        # child from before the try, so the sweep leaves it alone
        self._fork_server = self._launcher.server(self._engine)
        self._install_signal_handlers()
        # orphans of the try's processes come to this process, so none escapes the sweep
        set_child_subreaper()
        self._before = set(quick_child_pids()) if has_children() else set()
        try:
            return self._run()
        finally:
            self._end_server_forked_task_process()
            self._end_leftovers(self._before)
            # a try stopped by `squall tasks clear` runs again once its processes are gone
            self.writes.end_restart()
            self._restore_signal_handlers()

    def _end_server_forked_task_process(self) -> None:
        """The fork server's subtree is not swept: end a task process it forked that the try
        left running (an error out of the start or the watch)."""
        child, self._forked = self._forked, None
        if child is not None and child.status_fd is not None:
            self._children.end_if_running(child)

    def _end_leftovers(self, before: set[int]) -> None:
        """End what the try's processes left running (a background command, a daemon, a
        grandchild of a killed task process): the try's processes end with it. Only this
        process's children that were not there before the try; a system call says when
        there are none, the usual case."""
        if not has_children() or set(quick_child_pids()) <= before:
            return
        ended = end_descendants(self._children.kill_grace, exclude=before)
        if ended:
            log.warning("TaskInstance %s: try %d: ended %d process(es) the try left running: "
                        "%s", self.key, self.try_number, len(ended),
                        ", ".join(str(pid) for pid in ended))

    def _run(self) -> SupervisorResult:
        if self._launcher.kind == LaunchKind.NEW_INTERPRETER:
            return self._run_new_interpreter()
        # The task process is forked first and waits for the go-ahead: its pid then goes
        # into the start transaction, and it loads the DAG file while that transaction runs.
        server = self._fork_server
        loaded = (None if server is not None
                  else self._launcher.cached_task(self.command.dag_file, self.key))
        child = self._children.fork(loaded,
                                    close_in_child=(*(self._wakeup or ()),
                                                    *self._child_close_fds),
                                    server=server)
        self._forked = child
        self._lease = HeartbeatLease(self.lease_seconds)
        started = self.writes.start(task_pid=child.pid)
        if started is None:
            self._children.release(child, None)
            return self._result(SupervisorStatus.SKIPPED_DUPLICATE, reason=self.writes.refusal)
        result: SupervisorResult | None = None
        try:
            if self._terminate_requested:
                self._children.release(child, None)
                result = self._fail_try(SupervisorStatus.TERMINATED, REASON_SIGTERM)
            else:
                self._children.release(child, started)
                result = self._watch(child)
            return result
        finally:
            self._finish_job(result)

    def _run_new_interpreter(self) -> SupervisorResult:
        self._lease = HeartbeatLease(self.lease_seconds)
        started = self.writes.start(task_pid=None)
        if started is None:
            return self._result(SupervisorStatus.SKIPPED_DUPLICATE, reason=self.writes.refusal)
        result: SupervisorResult | None = None
        try:
            if self._terminate_requested:
                result = self._fail_try(SupervisorStatus.TERMINATED, REASON_SIGTERM)
            else:
                child = self._children.start_new_interpreter(started.job_id)
                self.writes.record_pid(child.pid)
                result = self._watch(child)
            return result
        finally:
            self._finish_job(result)

    def _result(self, status: SupervisorStatus, **values: Any) -> SupervisorResult:
        return SupervisorResult(status=status, dag_id=self.key.dag_id,
                                task_id=self.key.task_id, run_id=self.key.run_id,
                                try_number=self.try_number, job_id=self.writes.job_id,
                                **values)

    def _finish_job(self, result: SupervisorResult | None) -> None:
        self._children.close_channel()
        self.writes.finish_job(
            result is not None and result.status == SupervisorStatus.COMPLETED)

    # ----------------------------------------------------------------------- watching

    def _watch(self, child: TaskProcessHandle) -> SupervisorResult:
        # what select waits on for the task process's exit: its status pipe when the fork
        # server forked it (readable when the server reaped it), else a pidfd
        pidfd = open_pidfd(child.pid) if child.status_fd is None else None
        self._watched = child
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
                if self._lease is not None and self._lease.lost():
                    return self._on_lease_lost(child, pidfd)
                now = time.monotonic()
                if now < next_beat:
                    wait = next_beat - now
                    if self._lease is not None:
                        wait = min(wait, self._lease.remaining())
                    if self._pending is not None:
                        wait = min(wait, max(self._pending_retry_at - now, 0.0))
                    self._wait(pidfd, wait)
                    continue
                next_beat = now + self._heartbeat
                changed = self.heartbeat()
                if changed is not None and self._children.is_recording():
                    log.debug("TaskInstance %s: %s by the task process itself", self.key,
                              changed)
                elif changed is not None:
                    with task_log_handler(self.writes.log_path()):
                        log.warning("TaskInstance %s: state changed externally to %s; killing",
                                    self.key, changed)
                    self._kill(child, pidfd)
                    self._metrics.incr(TASKS_KILLED_EXTERNALLY)
                    return self._result(SupervisorStatus.KILLED, pid=child.pid,
                                        exit_code=child.returncode,
                                        reason=f"state changed externally to {changed}")
        finally:
            if pidfd is not None:
                os.close(pidfd)
            self._watched = None
            child.close()
            self._children.close_status_pipe()

    def heartbeat(self) -> str | None:
        """Beat the job row; None while the row is still this job's running try, else what
        it became. A database that cannot be reached is an outage (logged once, counted
        once): None, and the next heartbeat tries again; the task keeps running until the
        lease runs out. A heartbeat that succeeds renews the lease from when it was sent."""
        sent_at = time.monotonic()
        try:
            changed = self._beat_within_the_lease()
        except HeartbeatBlocked as exc:
            # the lease ran out while it hung (or it still hangs): the watch loop ends the try
            self._outage.failed("heartbeat of job %s hangs: %s", self.writes.job_id, exc)
            return None
        except SQLAlchemyError as exc:
            # not killed for this alone; retry next beat until the lease runs out
            self._outage.failed("heartbeat of job %s failed: %s; the task keeps running, "
                                "retrying every %.1f s, for at most %.1f s (the lease)",
                                self.writes.job_id, exc, self._heartbeat, self.lease_seconds)
            return None
        if self._lease is not None:
            self._lease.renew(sent_at)
        self._outage.ok("; heartbeat of job %s resumed", self.writes.job_id)
        return changed

    def _beat_within_the_lease(self) -> str | None:
        """``writes.heartbeat()``, waited for no longer than the lease has left.

        Across a partition a database call does not fail, it hangs: the packets of an open
        connection are dropped and the kernel retransmits them for many minutes. The call
        therefore runs on a thread of its own, and the watch loop gets control back when
        the lease runs out (or on SIGTERM) even if the call has not returned, so it can end
        the try in time (ADR 17). A call given up on is left to finish or fail on its own
        (it holds one pooled connection until then), and no second call is started while
        it hangs: :class:`HeartbeatBlocked`."""
        if self._lease is None:
            return self.writes.heartbeat()
        if self._hung_beat is not None and self._hung_beat.is_alive():
            raise HeartbeatBlocked(f"the heartbeat sent {self._lease.since_renewed():.1f} s "
                                   "ago or later has not returned yet")
        self._hung_beat = None
        outcome: list[Any] = []
        done = threading.Event()

        def beat() -> None:
            try:
                outcome.append(("value", self.writes.heartbeat()))
            except BaseException as exc:  # handed to the watch loop's thread
                outcome.append(("error", exc))
            finally:
                done.set()

        thread = threading.Thread(target=beat, daemon=True,
                                  name=f"heartbeat-job-{self.writes.job_id}")
        thread.start()
        while not done.wait(min(0.1, max(self._lease.remaining(), 0.0))):
            if self._lease.lost() or self._terminate_requested:
                self._hung_beat = thread
                raise HeartbeatBlocked(f"no answer for {self._lease.since_renewed():.1f} s "
                                       "(a hung connection)")
        kind, value = outcome[0]
        if kind == "error":
            raise value
        return value

    def _on_lease_lost(self, child: TaskProcessHandle, pidfd: int | None) -> SupervisorResult:
        """No successful heartbeat for the lease: end every process of the try now, then
        record the failure if the database answers in time (ADR 17)."""
        assert self._lease is not None
        reason = (f"heartbeat lease lost: no database for {self._lease.since_renewed():.1f} s "
                  f"(lease {self.lease_seconds:g} s)")
        with task_log_handler(self.writes.log_path()):
            log.error("TaskInstance %s: try %d: %s; killing task process %d and every "
                      "process of the try", self.key, self.try_number, reason, child.pid)
        self._kill(child, pidfd)
        self._end_leftovers(self._before)
        self._metrics.incr(WORKER_LEASE_LOST)
        if self._pending is not None:
            log.warning("TaskInstance %s: try %d: its outcome (%s) was never written; the "
                        "try is recorded failed instead", self.key, self.try_number,
                        self._pending[0])
            self._pending = None
        state = self._fail_when_the_database_answers(reason)
        return self._result(SupervisorStatus.LEASE_LOST, state=state, pid=child.pid,
                            exit_code=child.returncode, reason=reason)

    def _fail_when_the_database_answers(self, reason: str) -> str | None:
        """Record the failure by compare-and-set, retrying every :data:`OUTCOME_RETRY_SECONDS`
        for up to ``zombie_threshold`` (or until SIGTERM); the state written, or None (lost,
        or never written: the scheduler's zombie handling ends the try)."""
        deadline = time.monotonic() + self._settings.scheduler.zombie_threshold
        while True:
            try:
                state = self.writes.fail(reason)
            except SQLAlchemyError as exc:
                self._outage.failed("the lost lease's failure is not written yet: %s", exc)
                if time.monotonic() >= deadline or self._terminate_requested:
                    log.error("TaskInstance %s: try %d: the database did not answer; "
                              "exiting without writing (the scheduler's zombie handling "
                              "ends the try)", self.key, self.try_number)
                    return None
                self._sleep(min(OUTCOME_RETRY_SECONDS, deadline - time.monotonic()))
                continue
            self._outage.ok("; the lost lease's failure written by compare-and-set (%s)",
                            state or "lost: the row had moved on")
            return state

    def _sleep(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or until a signal arrives."""
        assert self._wakeup is not None
        ready, _, _ = select.select([self._wakeup[0]], [], [], max(timeout, 0.0))
        if ready:
            try:
                while os.read(self._wakeup[0], 512):
                    pass
            except BlockingIOError:
                pass

    def _wait(self, pidfd: int | None, timeout: float) -> None:
        """Sleep until the task process exits, a signal arrives, or ``timeout`` passes."""
        assert self._wakeup is not None
        fds = [self._wakeup[0]] + ([pidfd] if pidfd is not None else [])
        if self._watched is not None and self._watched.status_fd is not None:
            fds.append(self._watched.status_fd)
        if self._children.channel is not None:
            fds.append(self._children.channel.fileno())
        ready, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        self._serve_channel()
        if self._wakeup[0] in ready:
            try:
                while os.read(self._wakeup[0], 512):
                    pass
            except BlockingIOError:
                pass

    def _kill(self, child: TaskProcessHandle, pidfd: int | None) -> None:
        """SIGTERM the task process's group, SIGKILL after the grace period, reap it (the
        channel is served meanwhile)."""
        self._children.kill(child, lambda seconds: self._wait(pidfd, seconds))

    def _on_task_exit(self, child: TaskProcessHandle, code: int) -> SupervisorResult:
        if not self._settings.core.execute_tasks_new_python_interpreter:
            # forked: the task process sent its outcome, and this process writes it
            self._serve_channel()  # anything it sent before it exited
            deadline = time.monotonic() + self._settings.scheduler.zombie_threshold
            while (self._pending is not None and time.monotonic() < deadline
                   and not self._terminate_requested):
                time.sleep(max(self._pending_retry_at - time.monotonic(), 0.05))  # backoff
                self._serve_channel()
            if self._recorded is None:
                return self._fail_try(SupervisorStatus.TASK_PROCESS_DIED,
                                      child.describe_exit(code), pid=child.pid,
                                      exit_code=code)
            won, written = self._recorded
            state: str | None = written if won else self.writes.state()
            log.info("TaskInstance %s: try %d: task process %d exited (%s); state %s",
                     self.key, self.try_number, child.pid, code, state)
            return self._result(SupervisorStatus.COMPLETED, state=state, pid=child.pid,
                                exit_code=code)
        if self.writes.still_running():  # nobody recorded an outcome
            return self._fail_try(SupervisorStatus.TASK_PROCESS_DIED, describe_exit(code),
                                  pid=child.pid, exit_code=code)
        now_state = self.writes.state()
        log.info("TaskInstance %s: try %d: task process %d exited (%s); state %s", self.key,
                 self.try_number, child.pid, code, now_state)
        return self._result(SupervisorStatus.COMPLETED, state=now_state, pid=child.pid,
                            exit_code=code)

    def _fail_try(self, status: SupervisorStatus, reason: str, **values: Any) -> SupervisorResult:
        """Record the running try failed / up_for_retry with ``reason`` (compare-and-set)."""
        return self._result(status, state=self.writes.fail(reason), reason=reason, **values)

    # ----------------------------------------------------------------------- the outcome

    def _serve_channel(self) -> None:
        """Answer what the forked task process sent: write its outcome (or its load error)
        by compare-and-set, finishing the job row in the same transaction, and tell it
        whether that won. While the database cannot be written the outcome stays pending
        (the task process waits for its answer) and is tried again every
        :data:`OUTCOME_RETRY_SECONDS`."""
        if self._pending is None:
            self._pending = self._children.receive()
        if self._pending is None or time.monotonic() < self._pending_retry_at:
            return
        try:
            won, state = self._write_pending(*self._pending)
        except SQLAlchemyError as exc:
            # one outage, counted once (heartbeats share it); the pending outcome is logged
            # once even when a heartbeat found the outage first
            self._outage.failed("the try's outcome is not written yet: %s; retrying every "
                                "%.1f s", exc, OUTCOME_RETRY_SECONDS,
                                notice=not self._pending_failed)
            self._pending_failed = True
            self._pending_retry_at = time.monotonic() + OUTCOME_RETRY_SECONDS
            return
        self._outage.ok("; outcome written")
        self._pending = None
        self._recorded = (won, state)
        self._children.answer(won)

    def _write_pending(self, kind: str, payload: Any) -> tuple[bool, str]:
        if kind == MSG_OUTCOME:
            return self.writes.write_outcome(payload), payload.state.value
        result = self.writes.record_load_error(str(payload))
        return result.recorded, result.state.value

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
