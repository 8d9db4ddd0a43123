"""E-mail (squall.sdk.email, squall.execution.email_alerts, EmailOperator) against a real
SMTP server (aiosmtpd, started by the test): a failed or retried try of a task with
``email`` sends Airflow's alert from the task process or, for a try that ended elsewhere,
from the DAG processor's callback runner; an unreachable server is logged and changes no
state."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import EmailError
from squall.common.metrics import LogMetrics
from squall.common.models import (
    DagRun,
    Job,
    SerializedDagModel,
    TaskInstance,
    TaskInstanceKey,
    utcnow,
)
from squall.common.settings import Settings, SmtpSettings
from squall.common.state import DagRunState, DagRunType, JobState, TaskInstanceState
from squall.dag_processing.serialization import deserialize_dag
from squall.execution.email_alerts import TryAlert, send_alert
from squall.runs.run_creation import create_dag_run
from squall.scheduler.callback_runner import run_pending_callbacks
from squall.scheduler.dag_processor import parse_and_sync_once
from squall.scheduler.watchdog import fail_zombies
from squall.sdk.dag import DAG
from squall.sdk.email import send_email
from squall.sdk.operators.email import EmailOperator
from squall.sdk.operators.empty import EmptyOperator
from tests.support.services import free_port, wait_until
from tests.support.smtp import SmtpServer, running_smtp_server

TI = TaskInstanceState


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    yield from running_smtp_server()

DAG_FILE = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("mail", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         default_args={"email": ["ops@example.com", "oncall@example.com"]}):
    EmptyOperator(task_id="t", retries=1)
    EmptyOperator(task_id="quiet", email_on_failure=False, email_on_retry=False)
    EmptyOperator(task_id="nobody", email=None)
'''


def smtp_settings(server: SmtpServer | None = None, **extra: Any) -> SmtpSettings:
    if server is None:  # nothing listens there
        return SmtpSettings(smtp_host="127.0.0.1", smtp_port=free_port(),
                            smtp_starttls=False, smtp_timeout=2, smtp_retry_limit=3, **extra)
    return SmtpSettings(**{**server.settings(), **extra})


def test_send_email_to_cc_bcc_and_files(smtp_server: SmtpServer, tmp_path: Path) -> None:
    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n")
    send_email("a@example.com; b@example.com", "Hello", "<b>hi</b>", files=[str(report)],
               cc=["c@example.com"], bcc="d@example.com",
               smtp=smtp_settings(smtp_server, smtp_mail_from="squall@test"))
    [got] = smtp_server.messages
    assert got.mail_from == "squall@test"
    assert sorted(got.rcpt_tos) == ["a@example.com", "b@example.com", "c@example.com",
                                    "d@example.com"]
    assert got.subject == "Hello"
    assert got.message["To"] == "a@example.com, b@example.com"
    assert got.message["Cc"] == "c@example.com" and got.message["Bcc"] is None
    assert "<b>hi</b>" in got.text()
    [attached] = [p for p in got.message.walk() if p.get_filename()]
    assert attached.get_filename() == "report.csv"
    assert attached.get_payload(decode=True) == b"a,b\n1,2\n"


def test_unreachable_server_raises_after_the_retry_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="squall.sdk.email")
    with pytest.raises(EmailError, match=r"unreachable after 3 attempt\(s\)"):
        send_email("a@example.com", "Hello", "hi", smtp=smtp_settings(smtp_password="hunter2",
                                                                     smtp_user="u"))
    attempts = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(attempts) == 3
    assert "hunter2" not in caplog.text


def test_no_recipient_and_dryrun(smtp_server: SmtpServer) -> None:
    with pytest.raises(EmailError, match="no recipient"):
        send_email([], "Hello", "hi", smtp=smtp_settings(smtp_server))
    send_email("a@example.com", "Hello", "hi", dryrun=True, smtp=smtp_settings(smtp_server))
    assert smtp_server.messages == []


def test_alert_content_and_a_server_that_refuses_nothing_raises(
        smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    task = EmptyOperator(task_id="t", email="ops@example.com")
    alert = TryAlert(key=TaskInstanceKey("d", "t", "manual__1"), try_number=2, max_tries=3,
                     state=TI.UP_FOR_RETRY, exception="ValueError: boom <3",
                     hostname="w1", log_path=Path("/logs/attempt=2.log"))
    assert send_alert(smtp_settings(smtp_server), task, alert, airflow_compat=True)
    [got] = smtp_server.messages
    assert got.subject == "Airflow alert: <TaskInstance: d.t manual__1 [up_for_retry]>"
    body = got.text()
    for part in ("Try 2 out of 4", "ValueError: boom &lt;3", "w1:/logs/attempt=2.log",
                 "/api/v1/dags/d/dagRuns/manual__1/taskInstances/t/logs/2"):
        assert part in body, body
    # no server: logged, False, never raised
    assert not send_alert(smtp_settings(), task, alert)
    assert "e-mail was not sent" in caplog.text
    # email_on_retry=False: nothing to send
    quiet = EmptyOperator(task_id="q", email="ops@example.com", email_on_retry=False)
    assert not send_alert(smtp_settings(smtp_server), quiet, alert)
    assert len(smtp_server.messages) == 1


def test_email_operator_sends_its_rendered_message(smtp_server: SmtpServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in smtp_server.env().items():
        monkeypatch.setenv(name, value)
    with DAG("op", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
        op = EmailOperator(task_id="send", to="{{ params.to }}", subject="Run {{ ds }}",
                           html_content="<p>{{ params.msg }}</p>", cc="c@example.com",
                           params={"to": "x@example.com", "msg": "done"})
    op.render_template_fields({"ds": "2024-01-01", "params": op.params})
    op.execute({})
    [got] = smtp_server.messages
    assert got.subject == "Run 2024-01-01"
    assert sorted(got.rcpt_tos) == ["c@example.com", "x@example.com"]
    assert "<p>done</p>" in got.text()


def _setup(db_url: str, tmp_path: Path, sf: SessionFactory,
           smtp: dict[str, Any]) -> tuple[Settings, DAG, str]:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
        "database": {"sql_alchemy_conn": db_url},
        "core": {"dags_folder": str(tmp_path / "dags"), "dagbag_import_timeout": 20},
        "scheduler": {"callback_timeout": 20}, "smtp": smtp})
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "mail.py").write_text(DAG_FILE)
    result = parse_and_sync_once(settings, sf)
    assert set(result.serialized) == {"mail"}, result.import_errors
    with session_scope(sf) as session:
        dag = deserialize_dag(session.get_one(SerializedDagModel, "mail").data)
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 2, 9, tzinfo=utcnow().tzinfo),
                             data_interval=None, state=DagRunState.RUNNING,
                             external_trigger=True, now=utcnow())
        return settings, dag, run.run_id


def _zombie(sf: SessionFactory, dag: DAG, run_id: str, task_id: str, try_number: int,
            max_tries: int) -> None:
    stale = utcnow() - timedelta(seconds=400)
    with session_scope(sf) as session:
        job = Job(job_type="LocalTaskJob", state=JobState.RUNNING.value, hostname="w1",
                  pid=1, start_date=stale, latest_heartbeat=stale)
        session.add(job)
        session.flush()
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == "mail", TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id).values(
                state=TI.RUNNING.value, job_id=job.id, try_number=try_number,
                max_tries=max_tries, start_date=stale))
    with session_scope(sf) as session:
        fail_zombies(session, {dag.dag_id: dag}, now=utcnow(), threshold=300,
                     metrics=LogMetrics())


def test_zombie_alerts_go_out_from_the_callback_runner(
        db_url: str, tmp_path: Path, session_factory: SessionFactory,
        smtp_server: SmtpServer) -> None:
    settings, dag, run_id = _setup(db_url, tmp_path, session_factory, smtp_server.settings())
    assert dag.get_task("t").email_on_failure and dag.get_task("t").email == [
        "ops@example.com", "oncall@example.com"]  # carried in the serialized DAG
    _zombie(session_factory, dag, run_id, "t", 1, 1)
    _zombie(session_factory, dag, run_id, "quiet", 1, 0)
    _zombie(session_factory, dag, run_id, "nobody", 1, 0)
    # only "t" asks for anything: a retry request, though it has no callback
    assert smtp_server.messages == []  # the watchdog sends nothing itself
    assert run_pending_callbacks(settings, session_factory) == 1
    [retry] = smtp_server.messages
    assert retry.subject == f"Squall alert: <TaskInstance: mail.t {run_id} [up_for_retry]>"
    assert sorted(retry.rcpt_tos) == ["oncall@example.com", "ops@example.com"]
    assert "Try 1 out of 2" in retry.text() and "zombie" in retry.text()

    _zombie(session_factory, dag, run_id, "t", 2, 1)
    assert run_pending_callbacks(settings, session_factory) == 1
    assert run_pending_callbacks(settings, session_factory) == 0
    wait_until(lambda: len(smtp_server.messages) == 2, timeout=5)
    failure = smtp_server.messages[1]
    assert failure.subject.endswith(f"mail.t {run_id} [failed]>")
    assert "Try 2 out of 2" in failure.text()
    assert len(smtp_server.messages) == 2


def test_unreachable_server_changes_no_state(db_url: str, tmp_path: Path,
                                             session_factory: SessionFactory) -> None:
    unreachable = {"smtp_host": "127.0.0.1", "smtp_port": free_port(),
                   "smtp_starttls": False, "smtp_timeout": 2, "smtp_retry_limit": 2}
    settings, dag, run_id = _setup(db_url, tmp_path, session_factory, unreachable)
    _zombie(session_factory, dag, run_id, "t", 2, 1)

    def row() -> tuple[Any, ...]:
        with session_scope(session_factory) as session:
            ti = session.scalars(select(TaskInstance).where(
                TaskInstance.task_id == "t")).one()
            run = session.scalars(select(DagRun).where(DagRun.run_id == run_id)).one()
            return ti.state, ti.end_date, ti.try_number, ti.state_reason, run.state

    before = row()
    assert before[0] == TI.FAILED
    # the request is run (the e-mail failing inside it is logged by the child)
    assert run_pending_callbacks(settings, session_factory) == 1
    assert row() == before


def _fail() -> None:
    raise ValueError("the source table is empty")


@pytest.mark.parametrize("reachable", [True, False], ids=["server", "no-server"])
def test_a_failed_try_alerts_from_the_task_process(
        reachable: bool, session_factory: SessionFactory, smtp_server: SmtpServer,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """run_try, as a worker's task process calls it: the outcome is recorded first, then
    the alert is sent; without a server it is logged and the state is the same."""
    from squall.common.models import compare_and_set_state
    from squall.execution.runner import TryHooks, TrySpec, run_try
    from squall.execution.try_hooks import EmailAlerts, TaskCallbacks
    from squall.sdk.operators.python import PythonOperator
    from tests.support.scheduling import sync_dags

    with DAG("alerting", schedule=None,
             start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
        task = PythonOperator(task_id="load", python_callable=_fail, retries=0,
                              email="data@example.com")
    sync_dags(session_factory, dag)
    start = utcnow()
    with session_scope(session_factory) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 3, 1, tzinfo=start.tzinfo),
                             data_interval=None, state=DagRunState.RUNNING,
                             external_trigger=True)
        key = TaskInstanceKey("alerting", "load", run.run_id)
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == run.run_id).values(try_number=1, state=TI.SCHEDULED.value))
        assert compare_and_set_state(session, key, expected=TI.SCHEDULED, try_number=1,
                                     new_state=TI.RUNNING, start_date=start)
        session.expunge(run)
    smtp = smtp_settings(smtp_server if reachable else None)
    caplog.set_level(logging.INFO)
    result = run_try(TrySpec(task, run, try_number=1, max_tries=0, start_date=start,
                             hostname="w7", log_path=tmp_path / "attempt=1.log"),
                     session_factory, TryHooks(hooks=(TaskCallbacks(), EmailAlerts(smtp))))
    assert (result.state, result.recorded) == (TI.FAILED, True)
    with session_scope(session_factory) as session:
        row = session.get_one(TaskInstance, ("alerting", "load", run.run_id, -1))
        assert row.state == TI.FAILED and "the source table is empty" in (row.state_reason
                                                                          or "")
    if reachable:
        [alert] = smtp_server.messages
        assert alert.subject == (f"Squall alert: <TaskInstance: alerting.load {run.run_id} "
                                 "[failed]>")
        body = alert.text()
        for part in ("Task: load", f"Run: {run.run_id}", "Try 1 out of 1",
                     "ValueError: the source table is empty", "Host: w7",
                     f"w7:{tmp_path / 'attempt=1.log'}"):
            assert part in body, body
    else:
        assert smtp_server.messages == []
        assert "the failed e-mail was not sent" in caplog.text
        assert "the failed e-mail was not sent" in (tmp_path / "attempt=1.log").read_text()
