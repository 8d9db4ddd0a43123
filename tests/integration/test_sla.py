"""SLA misses (squall.scheduler.sla): a task of a scheduled run that had not succeeded by
``data_interval_end + sla`` gives one ``sla_miss`` row, one ``sla_miss_callback`` call with
Airflow 2's arguments (in a child of the DAG processor) and one e-mail to the SMTP server
the test starts; on SQLite and PostgreSQL. ``squall dags sla-misses`` lists them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagModel, SerializedDagModel, SlaMiss, TaskInstance, utcnow
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.dag_processing.serialization import deserialize_dag
from squall.runs.run_creation import create_dag_run
from squall.scheduler.dag_processor import parse_and_sync_once
from squall.scheduler.sla import SlaChecker
from squall.sdk.dag import DAG
from squall.sdk.timetables.base import DataInterval
from tests.support.smtp import SmtpServer, running_smtp_server

TI = TaskInstanceState

DAG_FILE = '''
import json
import os
from datetime import timedelta

import pendulum
from squall import DAG, EmptyOperator


def missed(dag, task_list, blocking_task_list, slas, blocking_tis):
    with open(os.path.join(MARKERS, "sla_miss_callback"), "a") as f:
        f.write(json.dumps({
            "dag_id": dag.dag_id, "task_list": task_list,
            "blocking_task_list": blocking_task_list,
            "slas": [[s.task_id, s.execution_date.isoformat(), s.run_id] for s in slas],
            "blocking_tis": sorted([ti.task_id, ti.state, ti.task.task_id]
                                   for ti in blocking_tis),
            "pid": os.getpid(),
        }) + "\\n")


with DAG("sla", schedule=timedelta(hours=1), catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), sla_miss_callback=missed,
         default_args={"email": "sla@example.com"}):
    slow = EmptyOperator(task_id="slow", sla=timedelta(seconds=30))
    fast = EmptyOperator(task_id="fast", sla=timedelta(seconds=30))
    relaxed = EmptyOperator(task_id="relaxed", sla=timedelta(hours=5))
    none = EmptyOperator(task_id="none")
'''


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    yield from running_smtp_server()


def _markers(path: Path) -> list[dict[str, Any]]:
    file = path / "sla_miss_callback"
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


def _setup(db_url: str, tmp_path: Path, sf: SessionFactory, smtp: SmtpServer,
           ) -> tuple[Settings, DAG, Path]:
    markers = tmp_path / "markers"
    markers.mkdir()
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
        "database": {"sql_alchemy_conn": db_url},
        "core": {"dags_folder": str(tmp_path / "dags"), "dagbag_import_timeout": 20},
        "scheduler": {"callback_timeout": 20}, "smtp": smtp.settings()})
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "sla.py").write_text(DAG_FILE.replace("MARKERS", repr(str(markers))))
    result = parse_and_sync_once(settings, sf)
    assert set(result.serialized) == {"sla"}, result.import_errors
    with session_scope(sf) as session:
        dag = deserialize_dag(session.get_one(SerializedDagModel, "sla").data)
        session.execute(update(DagModel).where(DagModel.dag_id == "sla")
                        .values(is_paused=False))
    return settings, dag, markers


def _run(sf: SessionFactory, dag: DAG, end: datetime, run_type: DagRunType) -> str:
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=run_type, logical_date=end - timedelta(
            hours=1), data_interval=DataInterval(end - timedelta(hours=1), end),
            state=DagRunState.RUNNING, external_trigger=run_type == DagRunType.MANUAL)
        return run.run_id


def _set(sf: SessionFactory, run_id: str, task_id: str, state: TaskInstanceState,
         end_date: datetime | None = None) -> None:
    with session_scope(sf) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == task_id)
            .values(state=state.value, end_date=end_date))


def _misses(sf: SessionFactory) -> list[SlaMiss]:
    with session_scope(sf) as session:
        rows = list(session.scalars(select(SlaMiss).order_by(SlaMiss.execution_date,
                                                             SlaMiss.task_id)))
        session.expunge_all()
        return rows


def test_a_miss_is_recorded_and_notified_once(db_url: str, tmp_path: Path,
                                              session_factory: SessionFactory,
                                              smtp_server: SmtpServer) -> None:
    sf = session_factory
    settings, dag, markers = _setup(db_url, tmp_path, sf, smtp_server)
    now = utcnow()
    end = now.replace(microsecond=0) - timedelta(minutes=5)
    run_id = _run(sf, dag, end, DagRunType.SCHEDULED)
    _set(sf, run_id, "slow", TI.RUNNING)
    _set(sf, run_id, "fast", TI.SUCCESS, end + timedelta(seconds=10))  # in time
    # a manual run is never checked, however late
    _run(sf, dag, end - timedelta(hours=1), DagRunType.MANUAL)

    checker = SlaChecker(settings, sf)
    assert checker.check() == 1
    [miss] = _misses(sf)
    assert (miss.dag_id, miss.task_id, miss.run_id) == ("sla", "slow", run_id)
    assert miss.execution_date == end - timedelta(hours=1)
    assert miss.deadline == end + timedelta(seconds=30)
    assert miss.notification_sent and miss.email_sent

    [call] = _markers(markers)
    assert call["pid"] != os.getpid()  # in a child of the processor
    stamp = (end - timedelta(hours=1)).isoformat()
    assert call["task_list"] == f"slow on {stamp}"
    assert call["slas"] == [["slow", stamp, run_id]]
    assert call["blocking_tis"] == [["none", "none", "none"], ["relaxed", "none", "relaxed"],
                                    ["slow", "running", "slow"]]
    assert f"slow on {stamp}" in call["blocking_task_list"]
    [mail] = smtp_server.messages
    assert mail.subject == "[squall] SLA miss on DAG=sla"
    assert mail.rcpt_tos == ["sla@example.com"]
    assert f"slow on {stamp}" in mail.text()

    # checked again (and by a second processor): nothing new, nothing notified twice
    assert checker.check() == 0
    assert SlaChecker(settings, sf).check() == 0
    _set(sf, run_id, "slow", TI.SUCCESS, utcnow())  # late success: still a miss, once
    assert checker.check() == 0
    assert len(_misses(sf)) == 1 and len(_markers(markers)) == 1
    assert len(smtp_server.messages) == 1


def test_no_miss_before_the_deadline_or_for_a_paused_dag(
        db_url: str, tmp_path: Path, session_factory: SessionFactory,
        smtp_server: SmtpServer) -> None:
    sf = session_factory
    settings, dag, markers = _setup(db_url, tmp_path, sf, smtp_server)
    end = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    run_id = _run(sf, dag, end, DagRunType.SCHEDULED)
    checker = SlaChecker(settings, sf)
    assert checker.check() == 0  # deadlines at end + 30 s, end + 5 h
    with session_scope(sf) as session:
        session.execute(update(DagModel).where(DagModel.dag_id == "sla")
                        .values(is_paused=True))
    assert checker.check(now=end + timedelta(minutes=1)) == 0
    with session_scope(sf) as session:
        session.execute(update(DagModel).where(DagModel.dag_id == "sla")
                        .values(is_paused=False))
    assert checker.check(now=end + timedelta(minutes=1)) == 2  # slow and fast
    assert {m.task_id for m in _misses(sf)} == {"slow", "fast"}
    assert all(m.run_id == run_id for m in _misses(sf))
    [call] = _markers(markers)
    assert sorted(s[0] for s in call["slas"]) == ["fast", "slow"]


def test_dags_sla_misses_cli(db_url: str, tmp_path: Path, session_factory: SessionFactory,
                            smtp_server: SmtpServer) -> None:
    sf = session_factory
    settings, dag, _ = _setup(db_url, tmp_path, sf, smtp_server)
    end = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    run_id = _run(sf, dag, end, DagRunType.SCHEDULED)
    assert SlaChecker(settings, sf).check() == 2  # slow and fast; relaxed is in time
    env = {**os.environ, "SQUALL_HOME": str(tmp_path),
           "SQUALL__DATABASE__SQL_ALCHEMY_CONN": db_url,
           "SQUALL__CORE__DAGS_FOLDER": str(tmp_path / "dags")}
    out = subprocess.run([sys.executable, "-m", "squall", "dags", "sla-misses", "sla", "-o",
                          "json"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sorted(r["task_id"] for r in rows) == ["fast", "slow"]
    assert {r["run_id"] for r in rows} == {run_id}
    assert all(r["notification_sent"] for r in rows)
    missing = subprocess.run([sys.executable, "-m", "squall", "dags", "sla-misses", "nope"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "'nope' is not in the metadata database" in (
        missing.stderr + missing.stdout)


QUIET_DAG = '''
from datetime import timedelta

import pendulum
from squall import DAG, EmptyOperator

with DAG("sla", schedule=timedelta(hours=1), catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="slow", sla=timedelta(seconds=30))
'''


def test_without_callback_or_email_the_miss_is_recorded_and_left_unclaimed(
        db_url: str, tmp_path: Path, session_factory: SessionFactory,
        smtp_server: SmtpServer) -> None:
    sf = session_factory
    settings, _, _ = _setup(db_url, tmp_path, sf, smtp_server)
    (tmp_path / "dags" / "sla.py").write_text(QUIET_DAG)
    parse_and_sync_once(settings, sf)
    with session_scope(sf) as session:
        dag = deserialize_dag(session.get_one(SerializedDagModel, "sla").data)
    assert dag.task_ids == ["slow"]
    run_id = _run(sf, dag, utcnow().replace(microsecond=0) - timedelta(minutes=5),
                  DagRunType.SCHEDULED)
    checker = SlaChecker(settings, sf)
    assert checker.check() == 1
    assert checker.check() == 0
    [miss] = _misses(sf)
    assert (miss.task_id, miss.run_id) == ("slow", run_id)
    assert not miss.notification_sent and not miss.email_sent
    assert smtp_server.messages == []
