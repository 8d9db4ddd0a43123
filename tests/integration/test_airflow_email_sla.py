"""Airflow 2 DAG files that use e-mail and SLAs in Airflow's idiom
(tests/integration/airflow2_alert_dags/), under [core] airflow_compat, with a real SMTP
server started by the test: through ``squall dags test``, and through a cluster of real
processes (scheduler with its DAG processor, Celery worker, Redis, PostgreSQL), where a
failing task's alert comes from the worker's task process and an SLA miss is recorded,
called back and e-mailed once."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import SlaMiss
from tests.integration.test_cluster import make_cluster
from tests.support.cluster import Cluster
from tests.support.services import wait_until
from tests.support.smtp import SmtpServer, running_smtp_server

DAGS = Path(__file__).parent / "airflow2_alert_dags"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    yield from running_smtp_server()


def _prepare(cluster: Cluster, smtp: SmtpServer, marker: Path) -> None:
    for path in DAGS.glob("*.py"):
        shutil.copy(path, cluster.dags_folder / path.name)
    cluster.extra_env.update({"SQUALL__CORE__AIRFLOW_COMPAT": "true",
                              "SLA_MARKER": str(marker), **smtp.env()})


def _states(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, str]:
    return {t: ti.state for t, ti in cluster.task_instances(dag_id, run_id).items()}


def test_email_dag_under_dags_test(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    _prepare(cluster, smtp_server, tmp_path / "sla.jsonl")
    cluster.cli("db", "migrate")
    proc = cluster.cli("dags", "test", "af2_email", "2024-01-01", "-o", "json", check=False)
    assert proc.returncode == 1, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert {t["task_id"]: t["state"] for t in result["task_instances"]} == {
        "notify": "success", "broken": "failed", "quiet": "failed"}
    # EmailOperator sent its rendered message; dags test sends no failure alert
    [sent] = smtp_server.messages
    assert sent.subject == "[af2_email] run 2024-01-01"
    assert sent.rcpt_tos == ["team@example.com"]
    assert "<p>af2_email ran on 2024-01-01</p>" in sent.text()


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def test_email_and_sla_through_a_cluster(pg_cluster: Cluster, tmp_path: Path,
                                         smtp_server: SmtpServer) -> None:
    cluster = pg_cluster
    marker = tmp_path / "sla.jsonl"
    _prepare(cluster, smtp_server, marker)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    run_id = cluster.trigger("af2_email")
    assert cluster.wait_for_run("af2_email", run_id) == "failed"
    assert _states(cluster, "af2_email", run_id) == {
        "notify": "success", "broken": "failed", "quiet": "failed"}

    def by_subject(fragment: str) -> list[Any]:
        return [m for m in smtp_server.messages if fragment in m.subject]

    # one alert for broken (quiet has email_on_failure=False), from the worker's task process
    wait_until(lambda: by_subject("af2_email.broken"), timeout=30)
    [alert] = by_subject("af2_email.broken")
    assert alert.subject == f"Airflow alert: <TaskInstance: af2_email.broken {run_id} [failed]>"
    assert alert.rcpt_tos == ["oncall@example.com"]
    body = alert.text()
    for part in ("Task: broken", f"Run: {run_id}", "Try 1 out of 1", "exit code 3",
                 "/taskInstances/broken/logs/1"):
        assert part in body, body
    assert not by_subject("af2_email.quiet")
    assert len(by_subject("[af2_email] run")) == 1  # the EmailOperator's

    # the scheduled run of af2_sla: slow missed its 1 s SLA (counted from the interval's
    # end, long past): one row, one callback, one e-mail, and the run goes on
    def misses() -> list[SlaMiss]:
        with session_scope(cluster.session_factory) as session:
            rows = list(session.scalars(select(SlaMiss).where(SlaMiss.dag_id == "af2_sla")))
            session.expunge_all()
            return rows

    wait_until(lambda: marker.exists() and by_subject("SLA miss"), timeout=60)
    [miss] = misses()
    assert (miss.task_id, miss.notification_sent) == ("slow", True)
    assert miss.run_id.startswith("scheduled__")
    assert cluster.wait_for_run("af2_sla", miss.run_id) == "success"
    wait_until(lambda: misses()[0].email_sent, timeout=10)
    [sla_mail] = by_subject("SLA miss")
    assert sla_mail.subject == "[airflow] SLA miss on DAG=af2_sla"
    assert sla_mail.rcpt_tos == ["sla@example.com"] and "slow on " in sla_mail.text()
    listed = cluster.cli_json("dags", "sla-misses", "af2_sla")
    assert [(m["task_id"], m["run_id"]) for m in listed] == [("slow", miss.run_id)]
    # a manual run, never checked (Airflow checks scheduled runs only); while it runs the
    # processor checks again: still one row, one callback, one e-mail
    manual = cluster.trigger("af2_sla")
    assert cluster.wait_for_run("af2_sla", manual) == "success"
    [call] = [json.loads(line) for line in marker.read_text().splitlines()]
    assert call["tasks"] == ["slow"] and call["dag_id"] == "af2_sla"
    assert len(misses()) == 1 and len(by_subject("SLA miss")) == 1
