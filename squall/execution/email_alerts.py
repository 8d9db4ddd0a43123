"""Failure and retry e-mail of a task (``email``, ``email_on_failure``, ``email_on_retry``).

A try that ends FAILED sends one message to the task's ``email`` when ``email_on_failure``
(Airflow's default: on), one that ends UP_FOR_RETRY when ``email_on_retry``. It is sent
where the task's ``on_failure_callback`` / ``on_retry_callback`` runs (ADR 8): by the task
process that recorded the outcome, or, for a try that ended elsewhere (a zombie, a task
process that died), by the DAG processor's callback runner; never by the scheduler or a
supervisor. Sending never raises: an unreachable server is logged, and no state changes.

The message is Airflow 2's default alert: the subject ``Squall alert: <TaskInstance:
dag.task run_id [failed]>`` (``Airflow alert: ...`` under ``[core] airflow_compat``), the
body the try number out of the tries allowed, the exception, the log's file and API path,
and the host.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from squall.common.errors import EmailError
from squall.common.models import TaskInstanceKey
from squall.common.settings import SmtpSettings
from squall.common.state import TaskInstanceState
from squall.sdk.email import get_email_address_list, send_email

log = logging.getLogger(__name__)


def wants_email(task: Any, state: TaskInstanceState) -> bool:
    """Whether a try of ``task`` ending in ``state`` sends an alert."""
    if not get_email_address_list(getattr(task, "email", None)):
        return False
    if state == TaskInstanceState.FAILED:
        return bool(getattr(task, "email_on_failure", True))
    if state == TaskInstanceState.UP_FOR_RETRY:
        return bool(getattr(task, "email_on_retry", True))
    return False


@dataclass(frozen=True)
class TryAlert:
    """What an alert says about one try."""

    key: TaskInstanceKey
    try_number: int
    max_tries: int
    state: TaskInstanceState
    exception: str
    hostname: str
    log_path: Path | None = None

    def subject(self, *, airflow_compat: bool = False) -> str:
        name = "Airflow" if airflow_compat else "Squall"
        return (f"{name} alert: <TaskInstance: {self.key.dag_id}.{self.key.task_id} "
                f"{self.key.run_id} [{self.state.value}]>")

    def api_log_path(self) -> str:
        k = self.key
        return (f"/api/v1/dags/{quote(k.dag_id, safe='')}/dagRuns/{quote(k.run_id, safe='')}"
                f"/taskInstances/{quote(k.task_id, safe='')}/logs/{self.try_number}")

    def html_content(self) -> str:
        e = html.escape
        exception = e(self.exception).replace("\n", "<br>")
        where = f"{e(self.hostname)}:{e(str(self.log_path))}" if self.log_path else "-"
        return (f"DAG: {e(self.key.dag_id)}<br>\n"
                f"Task: {e(self.key.task_id)}<br>\n"
                f"Run: {e(self.key.run_id)}<br>\n"
                f"State: {e(self.state.value)}<br>\n"
                f"Try {self.try_number} out of {self.max_tries + 1}<br>\n"
                f"Exception:<br>{exception}<br>\n"
                f"Log: {where}<br>\n"
                f"Log (API): {e(self.api_log_path())}<br>\n"
                f"Host: {e(self.hostname)}<br>\n")


def send_alert(smtp: SmtpSettings, task: Any, alert: TryAlert, *,
               airflow_compat: bool = False) -> bool:
    """Send ``alert`` to ``task.email`` when the task asks for it; whether one was sent.
    Never raises (a failure is logged)."""
    if not wants_email(task, alert.state):
        return False
    subject = alert.subject(airflow_compat=airflow_compat)
    try:
        send_email(task.email, subject, alert.html_content(), smtp=smtp)
    except EmailError as exc:
        log.error("TaskInstance %s: try %d: the %s e-mail was not sent: %s; the task's "
                  "state is unchanged", alert.key, alert.try_number, alert.state.value, exc)
        return False
    except Exception:
        log.exception("TaskInstance %s: try %d: sending the %s e-mail failed; the task's "
                      "state is unchanged", alert.key, alert.try_number, alert.state.value)
        return False
    return True
