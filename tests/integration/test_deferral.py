"""Deferral on the database, SQLite and PostgreSQL: a try that defers (its outcome write), a
try that resumes (the worker's start and the runner), the scheduler's trigger timeouts and
unused-trigger sweep, clearing and marking a deferred task instance, and new tries.

Each state is Airflow 2.10's (``airflow/models/taskinstance.py``: ``_defer_task``,
``_execute_task``, ``clear_task_instances``; ``airflow/jobs/scheduler_job_runner.py``:
``check_trigger_timeouts``; ``airflow/models/trigger.py``: ``Trigger.clean_unused``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import (
    DagRun,
    TaskInstance,
    TaskInstanceKey,
    Trigger,
    compare_and_set_state,
    utcnow,
)
from squall.common.payload import TaskRunCommand
from squall.common.settings import Settings
from squall.common.state import (
    TRIGGER_FAIL_METHOD,
    TRIGGER_TIMEOUT_ERROR,
    DagRunState,
    DagRunType,
    TaskInstanceState,
)
from squall.execution import xcom
from squall.execution.deferral import resume_of
from squall.execution.runner import TryHooks, TrySpec, run_try
from squall.runs.clear import clear_task_instances
from squall.runs.mark import apply_marks, select_marks
from squall.runs.mark_run import mark_run
from squall.runs.run_creation import create_dag_run
from squall.runs.ti_updates import schedule_tis
from squall.scheduler.watchdog import clean_unused_triggers, time_out_deferred
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context
from squall.sdk.sensors.base import BaseSensorOperator
from squall.sdk.triggers import serde
from squall.worker.try_writes import TryWrites
from tests.support.deferral import PayloadTrigger, fail_trigger, fire_trigger
from tests.support.scheduling import sync_dags

TI = TaskInstanceState
NOW = datetime(2024, 2, 10, 12, 0, tzinfo=UTC)


class Waits(BaseOperator):
    """Defers to a PayloadTrigger, then returns the event it resumed with."""

    def __init__(self, *, timeout: timedelta | None = None, defer_kwargs: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self.defer_kwargs = defer_kwargs if defer_kwargs is not None else {"note": "kept"}

    def execute(self, context: Context) -> Any:
        context["ti"].xcom_push("before", "pushed before deferring")
        self.defer(trigger=PayloadTrigger(payload={"at": NOW}), method_name="done",
                   kwargs=self.defer_kwargs, timeout=self.timeout)

    def done(self, context: Context, event: Any = None, note: str = "") -> Any:
        return {"event": event, "note": note}


class Unstorable(BaseOperator):
    def execute(self, context: Context) -> Any:
        self.defer(trigger=PayloadTrigger(payload=object()), method_name="done")


class WaitsSensor(BaseSensorOperator):
    def poke(self, context: Context) -> bool:
        self.defer(trigger=PayloadTrigger(), method_name="done")
        return False  # pragma: no cover - defer raises

    def done(self, context: Context, event: Any = None) -> None:
        return None


def make_dag(retries: int = 0) -> DAG:
    dag = DAG("defer", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC))
    with dag:
        Waits(task_id="waits", retries=retries)
        Waits(task_id="limited", timeout=timedelta(seconds=30),
              execution_timeout=timedelta(seconds=10))
        Unstorable(task_id="unstorable", retries=1)
        WaitsSensor(task_id="sensor", soft_fail=True)
        WaitsSensor(task_id="hard_sensor", retries=1)
    return dag


def setup_run(sf: SessionFactory, dag: DAG) -> str:
    sync_dags(sf, dag, now=NOW)
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 2, 9, tzinfo=UTC), data_interval=None,
                             state=DagRunState.RUNNING, external_trigger=True, now=NOW)
        return run.run_id


def key(run_id: str, task_id: str) -> TaskInstanceKey:
    return TaskInstanceKey("defer", task_id, run_id, -1)


def set_ti(sf: SessionFactory, run_id: str, task_id: str, **values: Any) -> None:
    values.setdefault("try_number", 1)
    with session_scope(sf) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == "defer", TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id).values(**values))


def ti(sf: SessionFactory, run_id: str, task_id: str) -> TaskInstance:
    with session_scope(sf) as session:
        row = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == "defer", TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id)).one()
        session.expunge(row)
        return row


def triggers(sf: SessionFactory) -> dict[int, Trigger]:
    with session_scope(sf) as session:
        rows = {t.id: t for t in session.scalars(select(Trigger))}
        session.expunge_all()
        return rows


def run_one(sf: SessionFactory, dag: DAG, run_id: str, task_id: str,
            start_date: datetime | None = None) -> Any:
    """Run try 1 of ``task_id`` as a worker's task process does: the row RUNNING, the try's
    resumption read from it (as the worker's start transaction reads it)."""
    row = ti(sf, run_id, task_id)
    assert row.state == TI.RUNNING
    with session_scope(sf) as session:
        dag_run = session.scalars(select(DagRun).where(DagRun.run_id == run_id)).one()
        session.expunge(dag_run)
    spec = TrySpec(dag.get_task(task_id), dag_run, try_number=row.try_number,
                   max_tries=row.max_tries, start_date=start_date or row.start_date or utcnow(),
                   resume=resume_of(row.next_method, row.next_kwargs))
    return run_try(spec, sf, TryHooks())


def start_running(sf: SessionFactory, run_id: str, task_id: str) -> None:
    set_ti(sf, run_id, task_id, state=TI.RUNNING, start_date=utcnow())


def defer_it(sf: SessionFactory, dag: DAG, run_id: str, task_id: str = "waits") -> TaskInstance:
    start_running(sf, run_id, task_id)
    result = run_one(sf, dag, run_id, task_id)
    assert (result.state, result.recorded) == (TI.DEFERRED, True)
    return ti(sf, run_id, task_id)


# --------------------------------------------------------------------------- deferring


def test_a_try_that_defers_writes_its_trigger_and_deferred_in_one_go(
        session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    row = defer_it(session_factory, dag, run_id)
    # Airflow's _defer_task: state deferred, trigger_id, next_method, next_kwargs; the try
    # number stays; no end date (the try is not over)
    assert (row.state, row.try_number, row.next_method) == (TI.DEFERRED, 1, "done")
    assert row.next_kwargs == {"note": "kept"}
    assert row.end_date is None and row.trigger_timeout is None
    trigger = triggers(session_factory)[row.trigger_id]
    assert trigger.classpath == "tests.support.deferral.PayloadTrigger"
    assert serde.loads(trigger.kwargs) == {"payload": {"at": NOW}, "delay": 0.0}
    assert trigger.triggerer_id is None


def test_trigger_timeout_is_the_earlier_of_timeout_and_execution_timeout(
        session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    start_running(session_factory, run_id, "limited")
    started = ti(session_factory, run_id, "limited").start_date
    assert started is not None
    result = run_one(session_factory, dag, run_id, "limited", start_date=started)
    assert result.state == TI.DEFERRED
    row = ti(session_factory, run_id, "limited")
    # _defer_task: min(now + timeout, start_date + execution_timeout)
    assert row.trigger_timeout == started + timedelta(seconds=10)


def test_a_trigger_that_cannot_be_stored_fails_the_try_with_the_reason(
        session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    start_running(session_factory, run_id, "unstorable")
    set_ti(session_factory, run_id, "unstorable", state=TI.RUNNING, max_tries=1)
    result = run_one(session_factory, dag, run_id, "unstorable")
    row = ti(session_factory, run_id, "unstorable")
    # retried as any failure of the task's code (Airflow: handle_failure)
    assert (result.state, row.state) == (TI.UP_FOR_RETRY, TI.UP_FOR_RETRY)
    assert "cannot be stored with a trigger" in (row.state_reason or "")
    assert "payload" in (row.state_reason or "")
    assert triggers(session_factory) == {}
    assert row.trigger_id is None and row.next_method is None


def test_a_lost_compare_and_set_leaves_no_trigger_row(session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    start_running(session_factory, run_id, "waits")

    class MarkedMeanwhile(Waits):
        def execute(self, context: Context) -> Any:
            set_ti(session_factory, run_id, "waits", state=TI.FAILED)  # marked by hand
            return super().execute(context)

    task = MarkedMeanwhile(task_id="waits")
    task.dag = dag
    with session_scope(session_factory) as session:
        dag_run = session.scalars(select(DagRun).where(DagRun.run_id == run_id)).one()
        session.expunge(dag_run)
    result = run_try(TrySpec(task, dag_run, try_number=1, max_tries=0, start_date=utcnow()),
                     session_factory, TryHooks())
    assert (result.state, result.recorded) == (TI.DEFERRED, False)
    assert ti(session_factory, run_id, "waits").state == TI.FAILED
    assert triggers(session_factory) == {}


# --------------------------------------------------------------------------- resuming


def queue_resumed(sf: SessionFactory, run_id: str, task_id: str, celery_id: str) -> None:
    """The scheduler queued the SCHEDULED (fired) task instance again, same try."""
    with session_scope(sf) as session:
        assert compare_and_set_state(session, key(run_id, task_id), expected=TI.SCHEDULED,
                                     try_number=1, new_state=TI.QUEUED,
                                     external_executor_id=celery_id, queued_dttm=utcnow())


def test_a_fired_trigger_resumes_the_same_try_in_next_method(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    deferred = defer_it(session_factory, dag, run_id)
    first_start = deferred.start_date
    assert fire_trigger(session_factory, deferred.trigger_id, {"fired": True}) == 1
    row = ti(session_factory, run_id, "waits")
    assert (row.state, row.try_number, row.trigger_id) == (TI.SCHEDULED, 1, None)
    assert triggers(session_factory) == {}
    queue_resumed(session_factory, run_id, "waits", "celery-2")
    # the worker's start: same try, start date and XComs kept, the resumption read
    writes = TryWrites(TaskRunCommand(dag_id="defer", task_id="waits", run_id=run_id,
                                      try_number=1, dag_file="DAGS_FOLDER/d.py",
                                      queue="default"),
                       settings=Settings.load(env={"SQUALL_HOME": str(tmp_path)}),
                       factory=session_factory, celery_task_id="celery-2", worker_name="w")
    started = writes.start(task_pid=None)
    assert started is not None and started.resume is not None
    assert started.resume.next_method == "done"
    assert started.resume.kwargs() == {"note": "kept", "event": {"fired": True}}
    assert started.start_date == first_start
    with session_scope(session_factory) as session:
        assert xcom.pull(session, dag_id="defer", run_id=run_id, task_ids="waits",
                         key="before") == "pushed before deferring"
    result = run_one(session_factory, dag, run_id, "waits", start_date=started.start_date)
    assert (result.state, result.recorded) == (TI.SUCCESS, True)
    row = ti(session_factory, run_id, "waits")
    assert (row.state, row.try_number, row.next_method, row.next_kwargs) == (
        TI.SUCCESS, 1, None, None)
    assert row.start_date == first_start
    with session_scope(session_factory) as session:
        assert xcom.pull(session, dag_id="defer", run_id=run_id, task_ids="waits") == {
            "event": {"fired": True}, "note": "kept"}


def test_a_trigger_that_raised_fails_the_try_and_honours_retries(
        session_factory: SessionFactory) -> None:
    dag = make_dag(retries=1)
    run_id = setup_run(session_factory, dag)
    set_ti(session_factory, run_id, "waits", max_tries=1)
    deferred = defer_it(session_factory, dag, run_id)
    fail_trigger(session_factory, deferred.trigger_id, "PayloadTrigger 7 (defer.waits) raised "
                 "ValueError: boom", ["Traceback ...", "ValueError: boom"])
    set_ti(session_factory, run_id, "waits", state=TI.RUNNING)
    result = run_one(session_factory, dag, run_id, "waits")
    row = ti(session_factory, run_id, "waits")
    # BaseOperator.resume_execution: __fail__ raises TaskDeferralError; handle_failure
    # retries it (try 1 of max_tries 1)
    assert (result.state, row.state, row.try_number) == (TI.UP_FOR_RETRY, TI.UP_FOR_RETRY, 1)
    assert row.state_reason == ("TaskDeferralError: PayloadTrigger 7 (defer.waits) raised "
                                "ValueError: boom")
    assert (row.next_method, row.next_kwargs, row.trigger_id) == (None, None, None)
    # the retry is a new try that starts in execute
    with session_scope(session_factory) as session:
        row = session.scalars(select(TaskInstance).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "waits")).one()
        row.next_method = "done"  # even a stale one is dropped by a new try
        session.flush()
        assert schedule_tis(session, [row], now=utcnow()) == 1
    row = ti(session_factory, run_id, "waits")
    assert (row.state, row.try_number, row.next_method) == (TI.SCHEDULED, 2, None)


def test_a_soft_fail_sensor_whose_trigger_failed_is_skipped(
        session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    for task_id, expected in (("sensor", TI.SKIPPED), ("hard_sensor", TI.UP_FOR_RETRY)):
        set_ti(session_factory, run_id, task_id, max_tries=1)
        deferred = defer_it(session_factory, dag, run_id, task_id)
        fail_trigger(session_factory, deferred.trigger_id, TRIGGER_TIMEOUT_ERROR)
        set_ti(session_factory, run_id, task_id, state=TI.RUNNING)
        # BaseSensorOperator.resume_execution: soft_fail turns the failure into a skip
        assert run_one(session_factory, dag, run_id, task_id).state == expected


# --------------------------------------------------------------------------- the scheduler


def test_trigger_timeout_schedules_the_try_to_fail(session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    deferred = defer_it(session_factory, dag, run_id)
    now = utcnow()
    with session_scope(session_factory) as session:
        assert time_out_deferred(session, now=now) == 0  # no timeout: waits for ever
    set_ti(session_factory, run_id, "waits", trigger_timeout=now - timedelta(seconds=1))
    with session_scope(session_factory) as session:
        assert time_out_deferred(session, now=now) == 1
    row = ti(session_factory, run_id, "waits")
    # check_trigger_timeouts: scheduled, __fail__ with "Trigger/execution timeout"
    assert (row.state, row.try_number, row.trigger_id) == (TI.SCHEDULED, 1, None)
    assert (row.next_method, row.next_kwargs) == (TRIGGER_FAIL_METHOD,
                                                  {"error": TRIGGER_TIMEOUT_ERROR})
    assert deferred.trigger_id not in triggers(session_factory)
    set_ti(session_factory, run_id, "waits", state=TI.RUNNING)
    result = run_one(session_factory, dag, run_id, "waits")
    row = ti(session_factory, run_id, "waits")
    assert (result.state, row.state) == (TI.FAILED, TI.FAILED)
    assert row.state_reason == f"TaskDeferralError: {TRIGGER_TIMEOUT_ERROR}"


def test_unused_triggers_are_swept(session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    waiting = defer_it(session_factory, dag, run_id, "waits")
    skipped = defer_it(session_factory, dag, run_id, "sensor")
    # a timed-out run skips its deferred task instances in bulk (as Airflow's scheduler);
    # their trigger rows go with the sweep
    set_ti(session_factory, run_id, "sensor", state=TI.SKIPPED)
    with session_scope(session_factory) as session:
        orphan = Trigger(classpath="x.Y", kwargs="{}", created_date=utcnow())
        session.add(orphan)
        session.flush()
        orphan_id = orphan.id
    with session_scope(session_factory) as session:
        assert clean_unused_triggers(session) == 2
    assert set(triggers(session_factory)) == {waiting.trigger_id}
    assert ti(session_factory, run_id, "sensor").trigger_id is None
    assert skipped.trigger_id != orphan_id


def test_clearing_a_deferred_task_instance_deletes_its_trigger(
        session_factory: SessionFactory) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    deferred = defer_it(session_factory, dag, run_id)
    with session_scope(session_factory) as session:
        rows = session.scalars(select(TaskInstance).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "waits")).all()
        result = clear_task_instances(session, rows, dag, utcnow())
    assert [(c.old_state, c.new_state) for c in result.cleared] == [(TI.DEFERRED, TI.NONE)]
    row = ti(session_factory, run_id, "waits")
    # clear_task_instances: state None, clear_next_method_args; the trigger goes
    assert (row.state, row.try_number, row.next_method, row.next_kwargs, row.trigger_id) == (
        TI.NONE, 1, None, None, None)
    assert triggers(session_factory) == {}
    # a late event for the cleared try finds nothing to move
    assert fire_trigger(session_factory, deferred.trigger_id, "late") == 0
    assert ti(session_factory, run_id, "waits").state == TI.NONE


@pytest.mark.parametrize("how", ["task", "run"])
def test_marking_a_deferred_task_instance_deletes_its_trigger(
        session_factory: SessionFactory, how: str) -> None:
    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    defer_it(session_factory, dag, run_id)
    with session_scope(session_factory) as session:
        if how == "task":
            selection = select_marks(session, dag, task_id="waits", run_id=run_id,
                                     state=TI.SUCCESS)
            assert len(apply_marks(session, dag, selection, now=utcnow(),
                                   reason="marked").changed) == 1
        else:
            # set_dag_run_state_to_failed: deferred is one of its running states -> failed
            assert mark_run(session, "defer", run_id, DagRunState.FAILED, now=utcnow(),
                            reason="marked") is not None
    row = ti(session_factory, run_id, "waits")
    assert row.state == (TI.SUCCESS if how == "task" else TI.FAILED)
    assert (row.next_method, row.trigger_id) == (None, None)
    assert triggers(session_factory) == {}


# --------------------------------------------------------------------------- the API


def test_the_api_shows_a_deferred_task_instance_with_its_trigger_and_triggerer(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    from urllib.parse import quote

    from squall.common.models import Job
    from tests.support.api import serve

    dag = make_dag()
    run_id = setup_run(session_factory, dag)
    deferred = defer_it(session_factory, dag, run_id)
    with session_scope(session_factory) as session:
        job = Job(job_type="TriggererJob", state="running", hostname="t1", pid=7,
                  start_date=NOW, latest_heartbeat=NOW)
        session.add(job)
        session.flush()
        job_id = job.id
        session.execute(update(Trigger).where(Trigger.id == deferred.trigger_id)
                        .values(triggerer_id=job_id))
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    base = f"/api/v1/dags/defer/dagRuns/{quote(run_id, safe='')}/taskInstances"
    with serve(settings, session_factory) as api:
        body = api.get(f"{base}/waits").json()
        # Airflow 2.10's TaskInstance: trigger (TriggerSchema), triggerer_job (JobSchema)
        assert body["state"] == "deferred" and body["try_number"] == 1
        assert body["trigger"] == {
            "id": deferred.trigger_id, "classpath": "tests.support.deferral.PayloadTrigger",
            "kwargs": str({"payload": {"at": NOW}, "delay": 0.0}),
            "created_date": body["trigger"]["created_date"], "triggerer_id": job_id}
        assert body["triggerer_job"]["id"] == job_id
        assert body["triggerer_job"]["job_type"] == "TriggererJob"
        assert body["triggerer_job"]["hostname"] == "t1"
        listed = api.get(base, params={"state": "deferred"}).json()["task_instances"]
        assert [t["task_id"] for t in listed] == ["waits"]
        other = api.get(f"{base}/limited").json()
        assert (other["trigger"], other["triggerer_job"]) == (None, None)
        pool = api.get("/api/v1/pools/default_pool").json()
        # a deferred task instance holds no slot; Airflow counts it in deferred_slots
        assert (pool["deferred_slots"], pool["occupied_slots"]) == (1, 0)


# --------------------------------------------------------------------------- dags test


class DefersTo(BaseOperator):
    def __init__(self, *, trigger: Any, wait: timedelta | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trigger = trigger
        self.wait = wait

    def execute(self, context: Context) -> Any:
        self.defer(trigger=self.trigger, method_name="done", kwargs={"n": 1},
                   timeout=self.wait)

    def done(self, context: Context, event: Any = None, n: int = 0) -> Any:
        return {"event": event, "n": n, "try": context["ti"].try_number}


def test_dags_test_runs_triggers_inline(session_factory: SessionFactory) -> None:
    from squall.scheduler.local_run import run_dag_locally
    from tests.support.deferral import FailingTrigger

    dag = DAG("inline", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC))
    with dag:
        DefersTo(task_id="fires", trigger=PayloadTrigger(payload="hello"))
        DefersTo(task_id="raises", trigger=FailingTrigger("no luck"))
        DefersTo(task_id="times_out", trigger=PayloadTrigger(payload="late", delay=30),
                 wait=timedelta(seconds=0.5))
    result = run_dag_locally(dag, session_factory)
    states = {t.task_id: (t.state, t.try_number, t.state_reason) for t in result.task_instances}
    # Airflow 2.10's dags test runs the trigger inline (_run_inline_trigger) and resumes
    assert states["fires"] == ("success", 1, None)
    assert states["raises"][:2] == ("failed", 1)
    assert "RuntimeError: no luck" in (states["raises"][2] or "")
    assert states["times_out"] == ("failed", 1, f"TaskDeferralError: {TRIGGER_TIMEOUT_ERROR}")
    with session_scope(session_factory) as session:
        assert xcom.pull(session, dag_id="inline", run_id=result.run_id,
                         task_ids="fires") == {"event": "hello", "n": 1, "try": 1}
    assert triggers(session_factory) == {}


def test_tasks_test_runs_the_trigger_inline(session_factory: SessionFactory) -> None:
    from squall.scheduler.local_run import run_task_locally

    dag = DAG("inline_task", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC))
    with dag:
        DefersTo(task_id="fires", trigger=PayloadTrigger(payload="hi"))
    summary = run_task_locally(dag, "fires", session_factory)
    # airflow tasks test: _run_inline_trigger, then the task's next_method
    assert (summary.state, summary.try_number) == ("success", 1)


def test_dags_test_gives_inline_triggers_the_database(session_factory: SessionFactory) -> None:
    """A trigger that reads the metadata database (WorkflowTrigger, of a deferrable
    ExternalTaskSensor) works under ``dags test``: run_dag_locally installs its session
    factory for the triggers it runs inline (ADR 31), as the triggerer does."""
    from squall.scheduler.local_run import ensure_dag_row, run_dag_locally
    from squall.sdk.operators.empty import EmptyOperator
    from squall.sdk.sensors.external_task import ExternalTaskSensor
    from squall.sdk.triggers.metadata import install_session_factory

    start = datetime(2024, 1, 1, tzinfo=UTC)
    logical = datetime(2024, 3, 1, tzinfo=UTC)
    upstream = DAG("upstream_done", schedule=None, start_date=start)
    with upstream:
        EmptyOperator(task_id="work")
    with session_scope(session_factory) as session:
        ensure_dag_row(session, upstream)
        session.add(DagRun(dag_id="upstream_done", run_id="done", run_type="manual",
                           logical_date=logical, state=DagRunState.SUCCESS.value,
                           start_date=logical, end_date=logical))
    dag = DAG("waits_inline", schedule=None, start_date=start)
    with dag:
        ExternalTaskSensor(task_id="wait", external_dag_id="upstream_done",
                           external_task_id=None, deferrable=True, poll_interval=0.2,
                           execution_timeout=timedelta(seconds=20))
    install_session_factory(None)  # whatever a test before left
    result = run_dag_locally(dag, session_factory, logical_date=logical)
    states = {t.task_id: (t.state, t.state_reason) for t in result.task_instances}
    assert states == {"wait": ("success", None)}
