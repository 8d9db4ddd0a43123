"""Deferrable tasks through a real cluster (Redis + PostgreSQL, a scheduler, a Celery worker
with one slot, ``squall triggerer``): a task that defers frees its worker slot, waits
DEFERRED while the triggerer runs its trigger, and resumes on a worker in its
``next_method`` with the event when the trigger fires, as the same try; a trigger that
raised fails it, a trigger timeout fails it, and a clear of a deferred task instance
deletes its trigger and starts the next try.

The test fires a trigger by writing the file its ``FileEventTrigger`` waits for (the
payload is the file's JSON). One write goes straight to the rows
(``tests.support.deferral.fire_trigger``): an outcome for a trigger a clear has deleted, a
fault a triggerer does not produce on cue. States as Airflow 2.10 gives them
(``airflow/models/taskinstance.py``: ``_defer_task``, ``_execute_task``;
``airflow/models/trigger.py``: ``Trigger.submit_event`` / ``submit_failure``;
``airflow/jobs/scheduler_job_runner.py``: ``check_trigger_timeouts``;
``clear_task_instances``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import Job, TaskInstance, Trigger
from squall.common.state import TRIGGER_TIMEOUT_ERROR
from squall.execution import xcom
from tests.integration.test_cluster import executions, make_cluster
from tests.support.cluster import Cluster
from tests.support.deferral import fire_trigger
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

DAG_FILE = '''
import datetime
import os

import pendulum

from squall import DAG, PythonOperator
from squall.sdk.operators.base import BaseOperator
from tests.support.deferral import FailingTrigger, FileEventTrigger

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]
EVENTS = os.path.join(os.path.dirname(LOG), "events")


def record(what, ti):
    with open(LOG, "a") as f:
        f.write(f"{what} {ti.task_id} {ti.run_id} {ti.try_number}\\n")


class WaitForEvent(BaseOperator):
    def __init__(self, *, wait_timeout=None, failing=False, **kwargs):
        super().__init__(**kwargs)
        self.wait_timeout = wait_timeout
        self.failing = failing

    def execute(self, context):
        ti = context["ti"]
        record("execute", ti)
        path = os.path.join(EVENTS, f"{ti.dag_id}.{ti.run_id}.{ti.try_number}.json")
        trigger = FailingTrigger("boom") if self.failing else FileEventTrigger(path)
        self.defer(trigger=trigger, method_name="resume",
                   kwargs={"deferred_in_try": ti.try_number}, timeout=self.wait_timeout)

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

with DAG("deferring_failing", schedule=None, start_date=start):
    WaitForEvent(task_id="wait", failing=True) >> PythonOperator(task_id="after",
                                                                 python_callable=after)

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
    c.start("triggerer", ["triggerer"])
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


def fire(cluster: Cluster, dag_id: str, run_id: str, try_number: int, payload: Any) -> None:
    """Fire the try's FileEventTrigger: write its file (renamed into place, so the trigger
    never reads half of it)."""
    events = cluster.home / "events"
    events.mkdir(exist_ok=True)
    part = events / f".{dag_id}.{try_number}.part"
    part.write_text(json.dumps(payload))
    part.rename(events / f"{dag_id}.{run_id}.{try_number}.json")


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

    fire(cluster, "deferring", run_id, 1, {"fired": 42})
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
    """The triggerer resumes the task in ``__fail__`` with Airflow's ``{"error": "Trigger
    failure", "traceback": [...]}`` (``Trigger.submit_failure``); ``BaseOperator.
    resume_execution`` raises TaskDeferralError: the try fails (no retries)."""
    run_id = cluster.trigger("deferring_failing")
    assert cluster.wait_for_run("deferring_failing", run_id) == "failed", cluster.logs()
    wait = ti_of(cluster, "deferring_failing", run_id)
    assert (wait.state, wait.try_number) == ("failed", 1)
    assert wait.state_reason == "TaskDeferralError: Trigger failure"
    assert ti_of(cluster, "deferring_failing", run_id, "after").state == "upstream_failed"
    logs = cluster.logs("triggerer", tail=400)
    assert "FailingTrigger) of deferring_failing.wait" in logs and "RuntimeError: boom" in logs


def test_a_trigger_timeout_fails_the_task(cluster: Cluster) -> None:
    run_id = cluster.trigger("deferring_timeout")
    # nobody fires it: the scheduler's check_trigger_timeouts schedules it to fail (the
    # reason below says it deferred and timed out; not waiting to see it deferred, since
    # `dags trigger` may take longer than its 8 s wait on a loaded machine)
    assert cluster.wait_for_run("deferring_timeout", run_id) == "failed", cluster.logs()
    wait = ti_of(cluster, "deferring_timeout", run_id)
    assert (wait.state, wait.try_number) == ("failed", 1)
    assert wait.state_reason == f"TaskDeferralError: {TRIGGER_TIMEOUT_ERROR}"
    # the triggerer cancels the trigger of a task instance no longer deferred; the row goes
    wait_until(lambda: trigger_ids(cluster) == set(), 30,
               message=f"the timed-out trigger's row deleted\n{cluster.logs()}")


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
    # a late outcome for the deleted trigger (a triggerer that had not seen the clear yet)
    # moves nothing: written straight to the rows, as no triggerer produces it on cue
    assert fire_trigger(cluster.session_factory, first.trigger_id, "late") == 0
    fire(cluster, "deferring", run_id, 1, "first")  # the first try's file: nobody waits
    fire(cluster, "deferring", run_id, 2, "second")
    assert cluster.wait_for_run("deferring", run_id) == "success", cluster.logs()
    assert (ti_of(cluster, "deferring", run_id).try_number,
            returned(cluster, "deferring", run_id)) == (2, {"event": "second",
                                                            "deferred_in_try": 2})
