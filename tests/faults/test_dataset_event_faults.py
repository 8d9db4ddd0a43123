"""Fault: a producer's try is killed after its task code succeeded but before its outcome
was written. Its dataset event belongs to the outcome's transaction, so there is none for
that try; the retry's success records exactly one (Airflow 2.10:
``TaskInstance._run_raw_task`` registers the dataset changes in the session that saves the
SUCCESS state; issue 25's fault scenario)."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, text

from squall.common.db import session_scope
from squall.common.models import DatasetEvent, DatasetModel, TaskInstance
from tests.faults.conftest import trigger
from tests.faults.helpers import sigkill_tree
from tests.support.airflow_files import COMPAT
from tests.support.cluster import Cluster
from tests.support.faults import process_gone
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

PRODUCER = '''
"""Try 1 says when its code starts, waits for the test's go, says when its code ended
(returning normally: a success); try 2 just succeeds."""
import os
import time
from pathlib import Path

import pendulum
from airflow.datasets import Dataset
from airflow.decorators import dag, task

MARKS = Path(os.environ["SQUALL_TEST_MARKS"])


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def ds_fault_producer():
    @task(outlets=[Dataset("s3://faults/out")], retries=1,
          retry_delay=pendulum.duration(seconds=0))
    def produce(*, ti, outlet_events):
        outlet_events[Dataset("s3://faults/out")].extra = {"try": ti.try_number}
        if ti.try_number == 1:
            (MARKS / "started").write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while not (MARKS / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            (MARKS / "ended").write_text("ok")


    produce()


ds_fault_producer()
'''


def events(cluster: Cluster) -> list[tuple[object, ...]]:
    with session_scope(cluster.session_factory) as session:
        return [tuple(r) for r in session.execute(
            select(DatasetEvent.source_try_number, DatasetEvent.extra)
            .join(DatasetModel, DatasetModel.id == DatasetEvent.dataset_id)
            .where(DatasetModel.uri == "s3://faults/out"))]


@contextmanager
def ti_row_locked(cluster: Cluster, dag_id: str, task_id: str) -> Iterator[Connection]:
    """Hold ``FOR UPDATE`` on the task instance's row (in a transaction of this test's own)
    until the block ends: a writer of the row waits meanwhile."""
    engine = cluster.session_factory.kw["bind"]
    with engine.connect() as conn:
        conn.execute(select(TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id).with_for_update())
        try:
            yield conn
        finally:
            conn.rollback()


def a_writer_waits_on_a_row_lock(conn: Connection) -> bool:
    return bool(conn.execute(text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database() AND pid <> pg_backend_pid() "
        "AND query ILIKE '%task_instance%'")).scalar())


def test_try_killed_before_its_outcome_records_no_event_and_the_retry_one(
        cluster_factory: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = cluster_factory("redis-pg")
    marks = tmp_path / "marks"
    marks.mkdir()
    cluster.extra_env.update({**COMPAT, "SQUALL_TEST_MARKS": str(marks)})
    (cluster.dags_folder / "ds_fault_producer.py").write_text(textwrap.dedent(PRODUCER))
    cluster.start_scheduler()
    w1 = cluster.start_worker("w1", concurrency=1)
    wait_until(lambda: cluster.cli("dags", "list").stdout.count("ds_fault_producer"), 60,
               message="the producer DAG to be parsed")
    run_id = trigger(cluster, "ds_fault_producer")
    wait_until(lambda: (marks / "started").exists(), 60, message="try 1's code to start")

    with ti_row_locked(cluster, "ds_fault_producer", "produce") as conn:
        (marks / "go").touch()
        wait_until(lambda: (marks / "ended").exists(), 30, message="try 1's code to end")
        # the supervisor's outcome write (the compare-and-set to success, with the event)
        # waits on the row: the code has succeeded and nothing is written yet
        wait_until(lambda: a_writer_waits_on_a_row_lock(conn), 90,
                   message="the outcome write to wait on the task instance's row")
        w1.stopped = True
        killed = sigkill_tree(w1.process.pid)
        w1.process.wait(10)
        wait_until(lambda: all(process_gone(pid) for pid in killed), 10,
                   message="the worker's processes to be gone")
    started = time.monotonic()
    # the killed try's transaction never committed: no success, no event (the scheduler
    # may already be failing the zombie into a retry)
    ti = cluster.task_instances("ds_fault_producer", run_id)["produce"]
    assert ti.state != "success", ti.state_reason
    assert events(cluster) == []

    # the zombie is failed into a retry, which another worker runs to success
    cluster.start_worker("w2", concurrency=1)
    assert cluster.wait_for_run("ds_fault_producer", run_id, timeout=60) == "success", \
        cluster.logs()
    ti = cluster.task_instances("ds_fault_producer", run_id)["produce"]
    assert (ti.state, ti.try_number) == ("success", 2), ti.state_reason
    assert events(cluster) == [(2, {"try": 2})]
    assert time.monotonic() - started < 60
