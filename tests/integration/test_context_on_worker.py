"""The ``prev_*_success`` context keys of a try run by a Celery worker.

A worker's supervisor reads the DAG's latest successful earlier run in the try's start
transaction and hands it to the task process with the go-ahead, so that the task process
opens no database connection for it (W1 lost a quarter of its throughput to that
connection). This checks that the keys a task renders there are the database's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import DagRun, TaskInstance, XCom
from tests.integration.test_cluster import make_cluster
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration

DAG_FILE = '''
import pendulum
from squall import DAG, BashOperator

with DAG("prev_success", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):
    BashOperator(task_id="show", do_xcom_push=True,
                 bash_command="echo '{{ prev_start_date_success }}|"
                              "{{ prev_data_interval_start_success }}|"
                              "{{ prev_execution_date_success }}'")
'''


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def _shown(cluster: Cluster, run_id: str) -> list[str]:
    with session_scope(cluster.session_factory) as session:
        text = session.scalar(select(XCom.value).where(
            XCom.dag_id == "prev_success", XCom.run_id == run_id, XCom.task_id == "show"))
    assert text is not None, cluster.logs()
    return str(json.loads(text)).split("|")


def test_prev_success_keys_on_a_worker(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    (cluster.dags_folder / "prev_success.py").write_text(DAG_FILE)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker()
    first = cluster.trigger("prev_success", "-e", "2024-03-01T00:00:00+00:00")
    assert cluster.wait_for_run("prev_success", first) == "success", cluster.logs()
    assert _shown(cluster, first) == ["None", "None", "None"]

    second = cluster.trigger("prev_success", "-e", "2024-03-02T00:00:00+00:00")
    assert cluster.wait_for_run("prev_success", second) == "success", cluster.logs()
    with session_scope(cluster.session_factory) as session:
        started = session.scalar(select(TaskInstance.start_date).where(
            TaskInstance.dag_id == "prev_success", TaskInstance.run_id == first))
        run = session.execute(select(DagRun.logical_date, DagRun.data_interval_start).where(
            DagRun.dag_id == "prev_success", DagRun.run_id == first)).one()
    assert started is not None
    shown = [pendulum.parse(value) for value in _shown(cluster, second)]
    assert shown == [pendulum.instance(started), pendulum.instance(run.data_interval_start),
                     pendulum.instance(run.logical_date)]
