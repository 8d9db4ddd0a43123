"""The usual steps around a try (:class:`~squall.execution.runner.TryHook`), and the sets of
them each kind of process registers once where it starts.

* :class:`RunAsUser`: a task with ``run_as_user`` runs as that user (a worker's task
  process, as Airflow's ``run_as_user``); elsewhere the switch is only noted in the log.
* :class:`TaskCallbacks`: ``on_success_callback`` / ``on_failure_callback`` /
  ``on_retry_callback`` / ``on_skipped_callback``, after the outcome was recorded.
* :class:`EmailAlerts`: the failure / retry e-mail of a task with ``email``, after its
  callback (:mod:`~squall.execution.email_alerts`); sent by workers only.
* :class:`CodeEnded`: tells someone the task's code has ended (a new-interpreter task
  process's supervisor, which then tells the task's own state change from an external one).

:func:`local_hooks` is the set of ``squall dags test`` / ``tasks test`` (the process that
runs the try records it and sends no e-mail); a worker's task process builds its own
(:mod:`squall.worker.task_process`).
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
from collections.abc import Callable

from squall.common.settings import SmtpSettings
from squall.common.state import TaskInstanceState
from squall.execution.email_alerts import TryAlert, send_alert, wants_email
from squall.execution.runner import (
    DbTaskInstance,
    TryHook,
    TryHooks,
    TryResult,
    TrySpec,
    run_callback,
)
from squall.sdk.operators.base import BaseOperator, Context

log = logging.getLogger(__name__)


class RunAsUser(TryHook):
    """With ``switch`` (a worker's task process, never ``dags test``'s own process), a task
    with ``run_as_user`` runs as that user (:func:`become_run_as_user`); without, that it
    does not is logged."""

    def __init__(self, *, switch: bool) -> None:
        self.switch = switch

    def before_execute(self, task: BaseOperator, ti: DbTaskInstance) -> str | None:
        if self.switch:
            return become_run_as_user(task)
        if task.run_as_user:
            log.info("TaskInstance %s: run_as_user=%s is applied by workers only; running "
                     "as this process's user", ti.key, task.run_as_user)
        return None


class TaskCallbacks(TryHook):
    """The task's callback for the recorded state (:func:`run_callbacks`)."""

    def outcome_written(self, spec: TrySpec, ti: DbTaskInstance, context: Context,
                        result: TryResult) -> None:
        run_callbacks(ti.task, context, result)


class EmailAlerts(TryHook):
    """The failure / retry e-mail of a task with ``email``, through ``smtp`` (None: not
    sent, and that it is not is logged)."""

    def __init__(self, smtp: SmtpSettings | None, *, airflow_compat: bool = False) -> None:
        self.smtp = smtp
        self.airflow_compat = airflow_compat

    def outcome_written(self, spec: TrySpec, ti: DbTaskInstance, context: Context,
                        result: TryResult) -> None:
        if not (result.recorded and wants_email(ti.task, result.state)):
            return
        if self.smtp is None:
            log.info("TaskInstance %s: the %s e-mail is sent by workers only", ti.key,
                     result.state.value)
            return
        send_alert(self.smtp, ti.task, TryAlert(
            key=ti.key, try_number=ti.try_number, max_tries=ti.max_tries,
            state=result.state, exception=result.outcome.error or "",
            hostname=ti.hostname, log_path=spec.log_path), airflow_compat=self.airflow_compat)


class CodeEnded(TryHook):
    """Calls ``notify()`` when the task's code has ended, before its outcome is written."""

    def __init__(self, notify: Callable[[], None]) -> None:
        self.notify = notify

    def code_ended(self, ti: DbTaskInstance) -> None:
        self.notify()


def local_hooks() -> TryHooks:
    """The steps of a try run in the caller's own process (``squall dags test``, ``tasks
    test``, a local backfill): callbacks; no user switch, no e-mail."""
    return TryHooks(hooks=(RunAsUser(switch=False), TaskCallbacks(), EmailAlerts(None)))


def run_callbacks(task: BaseOperator, context: Context, result: TryResult) -> None:
    """on_success / on_failure / on_retry, after the state is recorded; errors are logged."""
    if not result.recorded:
        return
    callback = {
        TaskInstanceState.SUCCESS: task.on_success_callback,
        TaskInstanceState.FAILED: task.on_failure_callback,
        TaskInstanceState.UP_FOR_RETRY: task.on_retry_callback,
        # Airflow 2.9+: the task raised AirflowSkipException (TaskSkipped)
        TaskInstanceState.SKIPPED: task.on_skipped_callback,
    }.get(result.state)
    if callback is None:
        return
    if result.outcome.exception is not None:
        context = {**context, "exception": result.outcome.exception}
    for one in callback if isinstance(callback, list | tuple) else [callback]:
        run_callback(one, context, f"{result.state.value} callback")


def become_run_as_user(task: BaseOperator) -> str | None:
    """Switch this (task) process to ``task.run_as_user``, as Airflow's ``run_as_user``:
    its groups, group and user, and ``HOME`` / ``USER`` / ``LOGNAME``. Only root may
    switch; a process that already runs as that user stays as it is. Returns why it could
    not (the try then fails without retry), or None."""
    user = task.run_as_user
    if not user:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"run_as_user={user!r}: no such user on {socket.gethostname()}"
    if os.geteuid() == entry.pw_uid:
        return None
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return (f"run_as_user={user!r}: the worker runs as {me!r} (uid {os.geteuid()}), not "
                "root, so it cannot switch users; run the worker as root or leave "
                "run_as_user out")
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    log.info("Task %s: running as %s (uid %d, gid %d)", task.task_id, entry.pw_name,
             entry.pw_uid, entry.pw_gid)
    return None
