"""Deferrable tasks through a real cluster (Redis + PostgreSQL, a scheduler, a Celery worker
with one slot): a task that defers frees its worker slot, waits DEFERRED, and resumes on a
worker in its ``next_method`` with the event when its trigger fires, as the same try; a
trigger that raised fails it, a trigger timeout fails it, and a clear of a deferred task
instance deletes its trigger and starts the next try.

The triggerer service is written at the same time elsewhere: the trigger is fired here by
doing what its contract says (``tests.support.deferral.fire_trigger`` / ``fail_trigger``,
stand-ins until the triggerer lands). States as Airflow 2.10 gives them
(``airflow/models/taskinstance.py``: ``_defer_task``, ``_execute_task``; ``airflow/jobs/
scheduler_job_runner.py``: ``check_trigger_timeouts``; ``clear_task_instances``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import Job, TaskInstance, Trigger
from squall.execution import xcom
from tests.integration.test_cluster import executions, make_cluster
from tests.support.cluster import Cluster
from tests.support.deferral import fail_trigger, fire_trigger
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

DAG_FILE = '''
import datetime
import os

import pendulum

from squall import DAG, PythonOperator
from squall.sdk.operators.base import BaseOperator
from tests.support.deferral import PayloadTrigger

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]


def record(what, ti):
    with open(LOG, "a") as f:
        f.write(f"{what} {ti.task_id} {ti.run_id} {ti.try_number}\\n")


class WaitForEvent(BaseOperator):
    def __init__(self, *, wait_timeout=None, **kwargs):
        super().__init__(**kwargs)
        self.wait_timeout = wait_timeout

    def execute(self, context):
        record("execute", context["ti"])
        self.defer(trigger=PayloadTrigger(payload="never fired here"), method_name="resume",
                   kwargs={"deferred_in_try": context["ti"].try_number},
                   timeout=self.wait_timeout)

    def resume(self, context, event=None, deferred_in_try=None):
        record("resume", context["ti"])
        return {"event": event, "deferred_in_try": deferred_in_try}


def after(ti):
    record("execute", ti)


start = pendulum.datetime(2024, 1, 1, tz="UTC")
with DAG("deferring", schedule=None, start_date=start):
    WaitForEvent(task_id="wait") >> PythonOperator(task_id="after", python_callable=after)

with DAG("deferring_timeout", schedule=None, start_date=start):
    WaitForEvent(task_id="wait", wait_timeout=datetime.timedelta(seconds=8))

with DAG("meanwhile", schedule=None, start_date=start):
    PythonOperator(task_id="other", python_callable=after)
'''


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    c.extra_env["SQUALL_TEST_EXEC_LOG"] = str(c.home / "executions.log")
    c.extra_env["SQUALL__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL"] = "0.5"
    (c.dags_folder / "deferring.py").write_text(DAG_FILE)
    c.cli("db", "migrate")
    c.start_scheduler()
    c.start_worker(concurrency=1)
    yield c
    c.stop_all()


def ti_of(cluster: Cluster, dag_id: str, run_id: str, task_id: str = "wait") -> TaskInstance:
    return cluster.task_instances(dag_id, run_id)[task_id]


def wait_deferred(cluster: Cluster, dag_id: str, run_id: str, try_number: int = 1
                  ) -> TaskInstance:
    def deferred() -> bool:
        ti = ti_of(cluster, dag_id, run_id)
        return ti.state == "deferred" and ti.try_number == try_number

    wait_until(deferred, 90, interval=0.2,
               message=f"{dag_id} {run_id} wait to defer\n{cluster.logs()}")
    return ti_of(cluster, dag_id, run_id)


def trigger_ids(cluster: Cluster) -> set[int]:
    with session_scope(cluster.session_factory) as session:
        return set(session.scalars(select(Trigger.id)))


def returned(cluster: Cluster, dag_id: str, run_id: str) -> Any:
    with session_scope(cluster.session_factory) as session:
        return xcom.pull(session, dag_id=dag_id, run_id=run_id, task_ids="wait")


def test_a_deferred_task_frees_its_slot_and_resumes_with_the_event(cluster: Cluster) -> None:
    exec_log = cluster.home / "executions.log"
    run_id = cluster.trigger("deferring")
    ti = wait_deferred(cluster, "deferring", run_id)
    assert ti.next_method == "resume" and ti.trigger_id in trigger_ids(cluster)
    # the try's supervisor ended normally: its job row is not running (no slot held) ...
    with session_scope(cluster.session_factory) as session:
        job = session.get(Job, ti.job_id)
        assert job is not None and job.state == "success", job
    # ... and the one-slot worker runs another DAG's task meanwhile
    other = cluster.trigger("meanwhile")
    assert cluster.wait_for_run("meanwhile", other) == "success", cluster.logs()
    assert ti_of(cluster, "deferring", run_id).state == "deferred"
    assert cluster.run_state("deferring", run_id) == "running"  # deferred: still running
    table = cluster.cli("tasks", "states-for-dag-run", "deferring", run_id).stdout
    assert "deferred" in table, table

    assert fire_trigger(cluster.session_factory, ti.trigger_id, {"fired": 42}) == 1
    assert cluster.wait_for_run("deferring", run_id) == "success", cluster.logs()
    tis = {t: (x.state, x.try_number) for t, x in
           cluster.task_instances("deferring", run_id).items()}
    assert tis == {"wait": ("success", 1), "after": ("success", 1)}
    # executed once, resumed once, in next_method with the event, as try 1
    runs = executions(exec_log)
    assert runs[("execute", "wait", run_id, "1")] == 1
    assert runs[("resume", "wait", run_id, "1")] == 1
    assert returned(cluster, "deferring", run_id) == {"event": {"fired": 42},
                                                      "deferred_in_try": 1}
    assert trigger_ids(cluster) == set()


def test_a_trigger_that_raised_fails_the_task(cluster: Cluster) -> None:
    run_id = cluster.trigger("deferring")
    ti = wait_deferred(cluster, "deferring", run_id)
    fail_trigger(cluster.session_factory, ti.trigger_id,
                 "Trigger PayloadTrigger of deferring.wait raised RuntimeError: boom",
                 ["Traceback (most recent call last):", "RuntimeError: boom"])
    # BaseOperator.resume_execution raises TaskDeferralError: the try fails (no retries)
    assert cluster.wait_for_run("deferring", run_id) == "failed", cluster.logs()
    wait = ti_of(cluster, "deferring", run_id)
    assert (wait.state, wait.try_number) == ("failed", 1)
    assert wait.state_reason == ("TaskDeferralError: Trigger PayloadTrigger of deferring.wait "
                                 "raised RuntimeError: boom")
    assert ti_of(cluster, "deferring", run_id, "after").state == "upstream_failed"


def test_a_trigger_timeout_fails_the_task(cluster: Cluster) -> None:
    run_id = cluster.trigger("deferring_timeout")
    wait_deferred(cluster, "deferring_timeout", run_id)
    # nobody fires it: the scheduler's check_trigger_timeouts schedules it to fail
    assert cluster.wait_for_run("deferring_timeout", run_id) == "failed", cluster.logs()
    wait = ti_of(cluster, "deferring_timeout", run_id)
    assert (wait.state, wait.try_number) == ("failed", 1)
    assert wait.state_reason == "TaskDeferralError: Trigger/execution timeout"
    assert trigger_ids(cluster) == set()


def test_clearing_a_deferred_task_deletes_its_trigger_and_runs_the_next_try(
        cluster: Cluster) -> None:
    run_id = cluster.trigger("deferring")
    first = wait_deferred(cluster, "deferring", run_id)
    out = cluster.cli("tasks", "clear", "deferring", "-t", "^wait$", "--run-id", run_id,
                      "-y").stdout
    assert "Cleared" in out, out
    second = wait_deferred(cluster, "deferring", run_id, try_number=2)
    assert first.trigger_id not in trigger_ids(cluster)
    assert trigger_ids(cluster) == {second.trigger_id}
    assert fire_trigger(cluster.session_factory, first.trigger_id, "late") == 0
    assert fire_trigger(cluster.session_factory, second.trigger_id, "second") == 1
    assert cluster.wait_for_run("deferring", run_id) == "success", cluster.logs()
    assert (ti_of(cluster, "deferring", run_id).try_number,
            returned(cluster, "deferring", run_id)) == (2, {"event": "second",
                                                            "deferred_in_try": 2})
