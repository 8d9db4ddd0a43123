"""The deferrable sensors and operators of Airflow 2.10: ``TimeDeltaSensorAsync``,
``DateTimeSensorAsync``, ``TimeSensorAsync``, ``FileSensor(deferrable=True)``,
``ExternalTaskSensor(deferrable=True)`` and ``TriggerDagRunOperator(deferrable=True,
wait_for_completion=True)``: what ``execute`` defers with (trigger, method, timeout), and
what the resumed try does with the trigger's event (``resume_execution``), as Airflow
2.10.5 does (checked in /work/ref/airflow-venv with ``airflow dags test`` and by calling
``resume_execution`` on its sensors)."""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import (
    Reschedule,
    SquallError,
    TaskDeferralError,
    TaskDeferred,
    TaskSkipped,
)
from squall.common.models import DagRun
from squall.common.state import TRIGGER_FAIL_METHOD, DagRunState
from squall.dag_processing.serialization import serialize_dag
from squall.runs.trigger import trigger_dag_run
from squall.scheduler.local_run import ensure_dag_row
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.operators.trigger_dagrun import TriggerDagRunOperator, install_dag_run_trigger
from squall.sdk.sensors.date_time import DateTimeSensorAsync, TimeSensorAsync
from squall.sdk.sensors.external_task import ExternalTaskSensor
from squall.sdk.sensors.filesystem import FileSensor
from squall.sdk.sensors.time_delta import TimeDeltaSensorAsync
from squall.sdk.triggers import serde
from squall.sdk.triggers.external_task import DagStateTrigger, WorkflowTrigger
from squall.sdk.triggers.file import FileTrigger
from squall.sdk.triggers.temporal import DateTimeTrigger
from tests.unit.fake_ti import FakeTI, make_context, run_task

START = pendulum.datetime(2024, 1, 1, tz="UTC")
TIMEOUT = "Trigger/execution timeout"  # the scheduler's error for a timed-out deferral


def deferral(task: BaseOperator, ti: FakeTI | None = None, **kwargs: Any) -> TaskDeferred:
    """What ``task`` (rendered and executed as the runner does) defers with."""
    with pytest.raises(TaskDeferred) as info:
        run_task(task, ti, **kwargs)
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    # the trigger can be stored in the trigger table and rebuilt from it
    _classpath, trigger_kwargs = deferred.trigger.serialize()
    assert serde.loads(serde.dumps(trigger_kwargs)) == trigger_kwargs
    return deferred


def resume(task: BaseOperator, event: Any, context: Context | None = None) -> Any:
    """The resumed try: ``execute_complete(context, event=event)``."""
    return task.resume_execution("execute_complete", {"event": event},
                                 context if context is not None else make_context(task))


def resume_failed(task: BaseOperator, error: str = TIMEOUT) -> Any:
    """The resumed try of a deferral that timed out or whose trigger failed."""
    return task.resume_execution(TRIGGER_FAIL_METHOD, {"error": error}, make_context(task))


# --------------------------------------------------------------------------- resume_execution


class Resumable(BaseOperator):
    def execute(self, context: Context) -> None:
        self.defer(trigger=DateTimeTrigger(START), method_name="done",
                   kwargs={"extra": 1}, timeout=datetime.timedelta(minutes=5))

    def done(self, context: Context, event: Any = None, extra: int = 0) -> Any:
        return (event, extra)


def test_resume_execution_calls_the_method_with_the_event_and_kwargs(
        caplog: pytest.LogCaptureFixture) -> None:
    """airflow/models/baseoperator.py: ``BaseOperator.resume_execution``."""
    with DAG("r", start_date=START, schedule=None):
        task = Resumable(task_id="t")
    with pytest.raises(TaskDeferred) as info:
        run_task(task)
    assert (info.value.method_name, info.value.kwargs, info.value.timeout) == (
        "done", {"extra": 1}, datetime.timedelta(minutes=5))
    assert task.resume_execution("done", {"event": "e", "extra": 2}, make_context(task)) == (
        "e", 2)
    with caplog.at_level(logging.ERROR), pytest.raises(TaskDeferralError, match=r"^boom$"):
        task.resume_execution(TRIGGER_FAIL_METHOD, {"error": "boom", "traceback": ["Traceback\n",
                                                                          "ValueError: x\n"]},
                              make_context(task))
    assert "Trigger failed:" in caplog.text and "ValueError: x" in caplog.text
    with pytest.raises(TaskDeferralError, match=r"^Unknown$"):
        task.resume_execution(TRIGGER_FAIL_METHOD, None, make_context(task))


# --------------------------------------------------------------------------- TimeDeltaSensorAsync


def _in_dag(task_factory: Any, **dag_kwargs: Any) -> Any:
    dag_kwargs.setdefault("start_date", START)
    dag_kwargs.setdefault("schedule", "@daily")
    with DAG("deferring", **dag_kwargs):
        return task_factory()


def test_time_delta_sensor_async_defers_until_the_end_of_the_interval_plus_delta() -> None:
    """airflow/sensors/time_delta.py: ``TimeDeltaSensorAsync.execute``."""
    sensor = _in_dag(lambda: TimeDeltaSensorAsync(task_id="s", delta=datetime.timedelta(hours=2),
                                                  timeout=5))
    end = pendulum.now("UTC").add(days=1)
    deferred = deferral(sensor, data_interval_end=end)
    assert isinstance(deferred.trigger, DateTimeTrigger)
    assert deferred.trigger.moment == end.add(hours=2)
    assert deferred.trigger.end_from_trigger is False
    assert deferred.timeout is None  # the sensor's timeout does not apply
    assert resume(sensor, deferred.trigger.moment) is None


def test_time_delta_sensor_async_in_the_past_returns_true_without_deferring() -> None:
    """Airflow 2.10 returns True (so the task's XCom return_value is True), checked with
    ``airflow dags test``."""
    sensor = _in_dag(lambda: TimeDeltaSensorAsync(task_id="s", delta=datetime.timedelta(1),
                                                  end_from_trigger=True))
    assert run_task(sensor, data_interval_end=START) is True
    deferred = deferral(sensor, data_interval_end=pendulum.now("UTC").add(hours=1))
    assert deferred.trigger.end_from_trigger is True


# --------------------------------------------------------------------------- DateTimeSensorAsync


def test_date_time_sensor_async_always_defers_even_in_the_past() -> None:
    """airflow/sensors/date_time.py: ``DateTimeSensorAsync.execute`` defers whatever the
    time; a trigger at a past moment fires at once (the task succeeds, XCom None)."""
    sensor = _in_dag(lambda: DateTimeSensorAsync(task_id="s", target_time="{{ ds }}T06:30:00",
                                                 timeout=1))
    deferred = deferral(sensor, logical_date=START)
    assert deferred.trigger.moment == START.add(hours=6, minutes=30)
    assert deferred.timeout is None
    assert resume(sensor, deferred.trigger.moment) is None
    future = _in_dag(lambda: DateTimeSensorAsync(
        task_id="f", target_time=pendulum.datetime(2100, 1, 1, tz="Asia/Tokyo")))
    assert deferral(future).trigger.moment == pendulum.datetime(2099, 12, 31, 15, tz="UTC")


def test_date_time_sensor_async_reads_a_naive_target_in_the_default_time_zone() -> None:
    sensor = _in_dag(lambda: DateTimeSensorAsync(task_id="s", target_time="2030-01-01 12:00",
                                                 start_from_trigger=True,
                                                 end_from_trigger=True))
    deferred = deferral(sensor)
    assert deferred.trigger.moment == pendulum.datetime(2030, 1, 1, 12, tz="UTC")
    assert deferred.trigger.end_from_trigger is True


# --------------------------------------------------------------------------- TimeSensorAsync


def test_time_sensor_async_waits_for_the_time_today_in_the_dags_time_zone() -> None:
    """airflow/sensors/time_sensor.py: ``TimeSensorAsync.__init__`` computes
    ``target_datetime`` once: ``datetime.combine(datetime.today(), target_time,
    dag.timezone)`` in UTC (Airflow gives 09:30 UTC for 10:30 Europe/Amsterdam in winter)."""
    tz = pendulum.timezone("Europe/Amsterdam")
    sensor = _in_dag(lambda: TimeSensorAsync(task_id="s", target_time=datetime.time(10, 30)),
                     start_date=pendulum.datetime(2024, 1, 1, tz=tz))
    today = datetime.date.today()
    expected = pendulum.instance(datetime.datetime.combine(
        today, datetime.time(10, 30), tzinfo=tz)).in_timezone("UTC")
    assert sensor.target_datetime == expected
    deferred = deferral(sensor, logical_date=START)  # the run's date plays no part
    assert deferred.trigger.moment == expected and deferred.timeout is None
    assert resume(sensor, expected) is None


def test_time_sensor_async_outside_a_dag_uses_utc_at_execute() -> None:
    sensor = TimeSensorAsync(task_id="s", target_time=datetime.time(23, 59, 59))
    assert sensor.target_datetime is None
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    moment = info.value.trigger.moment
    assert (moment.hour, moment.minute, moment.tzinfo is not None) == (23, 59, True)


# --------------------------------------------------------------------------- FileSensor


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def test_deferrable_file_sensor_succeeds_at_once_when_the_file_is_there(tmp_path: Path) -> None:
    """airflow/sensors/filesystem.py: ``FileSensor.execute`` pokes once before deferring."""
    (tmp_path / "here.csv").write_text("x")
    sensor = _in_dag(lambda: FileSensor(task_id="s", filepath=str(tmp_path / "*.csv"),
                                        deferrable=True))
    assert run_task(sensor) is None


def test_deferrable_file_sensor_hands_the_wait_to_a_file_trigger(in_tmp: Path) -> None:
    sensor = _in_dag(lambda: FileSensor(task_id="s", filepath="{{ ds }}/*.csv", recursive=True,
                                        deferrable=True, poke_interval=7, timeout=600))
    deferred = deferral(sensor, logical_date=START)
    trigger = deferred.trigger
    assert isinstance(trigger, FileTrigger)
    # a relative path is the worker's, made absolute: the triggerer has another cwd
    assert (trigger.filepath, trigger.recursive, trigger.poke_interval) == (
        str(in_tmp / "2024-01-01" / "*.csv"), True, 7.0)
    assert deferred.timeout == datetime.timedelta(seconds=600)
    assert resume(sensor, True) is None


def test_deferrable_file_sensor_fails_or_skips_when_the_wait_fails() -> None:
    """``FileSensor.execute_complete`` fails on a false event; a timed-out deferral fails
    with TaskDeferralError; both skip with soft_fail (``BaseSensorOperator.
    resume_execution``)."""
    hard = _in_dag(lambda: FileSensor(task_id="h", filepath="/nope", deferrable=True))
    soft = _in_dag(lambda: FileSensor(task_id="s", filepath="/nope", deferrable=True,
                                      soft_fail=True))
    with pytest.raises(SquallError, match="h task failed as /nope not found"):
        resume(hard, False)
    with pytest.raises(TaskDeferralError, match=TIMEOUT):
        resume_failed(hard)
    with pytest.raises(TaskSkipped, match="s task failed as /nope not found"):
        resume(soft, None)
    with pytest.raises(TaskSkipped, match=TIMEOUT):
        resume_failed(soft)


def test_a_soft_fail_sensor_still_fails_on_an_error_that_is_not_airflows() -> None:
    class Broken(FileSensor):
        def execute_complete(self, context: Context, event: bool | None = None) -> None:
            raise ValueError("a bug")

    soft = _in_dag(lambda: Broken(task_id="s", filepath="/nope", deferrable=True,
                                  soft_fail=True))
    with pytest.raises(ValueError, match="a bug"):
        resume(soft, True)


def test_file_sensor_without_deferrable_pokes(tmp_path: Path) -> None:
    sensor = _in_dag(lambda: FileSensor(task_id="s", filepath=str(tmp_path / "x"),
                                        mode="reschedule"))
    with pytest.raises(Reschedule):
        run_task(sensor)


# --------------------------------------------------------------------------- ExternalTaskSensor


def test_deferrable_external_task_sensor_defers_to_a_workflow_trigger() -> None:
    """airflow/sensors/external_task.py: ``ExternalTaskSensor.execute`` with deferrable
    passes only allowed_states, and ``execution_timeout`` as the deferral's timeout."""
    sensor = _in_dag(lambda: ExternalTaskSensor(
        task_id="s", external_dag_id="other", external_task_ids=["a", "b"],
        failed_states=["failed"], execution_delta=datetime.timedelta(hours=1),
        deferrable=True, poll_interval=3, soft_fail=True,
        execution_timeout=datetime.timedelta(minutes=10)))
    deferred = deferral(sensor, logical_date=START)
    trigger = deferred.trigger
    assert isinstance(trigger, WorkflowTrigger)
    assert trigger.serialize()[1] == {
        "external_dag_id": "other", "external_task_ids": ["a", "b"],
        "external_task_group_id": None, "failed_states": None, "skipped_states": None,
        "allowed_states": ["success"], "execution_dates": [START.subtract(hours=1)],
        "poke_interval": 3.0, "soft_fail": True}
    assert deferred.timeout == datetime.timedelta(minutes=10)
    group = _in_dag(lambda: ExternalTaskSensor(task_id="g", external_dag_id="other",
                                               external_task_group_id="grp", deferrable=True))
    deferred = deferral(group, logical_date=START)
    assert deferred.trigger.external_task_group_id == "grp" and deferred.timeout is None


@pytest.mark.parametrize(("status", "soft_fail", "outcome"), [
    ("success", False, None),
    ("success", True, None),
    ("skipped", False, "skipped: External job has skipped skipping."),
    ("skipped", True, "skipped: External job has skipped skipping."),
    ("failed", False, "failed: Error occurred while trying to retrieve task status."),
    ("failed", True, "skipped: External job has failed skipping."),
    ("timeout", False, "failed: Error occurred while trying to retrieve task status."),
    ("timeout", True, "skipped: External job has failed skipping."),
])
def test_deferrable_external_task_sensor_resumes_as_airflow(status: str, soft_fail: bool,
                                                            outcome: str | None) -> None:
    """``ExternalTaskSensor.execute_complete``, as Airflow 2.10.5 answers each event."""
    sensor = _in_dag(lambda: ExternalTaskSensor(task_id="s", external_dag_id="o",
                                                external_task_id="t", deferrable=True,
                                                soft_fail=soft_fail))
    try:
        got = resume(sensor, {"status": status})
    except TaskSkipped as exc:
        got = f"skipped: {exc}"
    except SquallError as exc:
        got = f"failed: {exc}"
    assert got == outcome or (outcome is not None and str(got).startswith(outcome))


# --------------------------------------------------------------------------- TriggerDagRun


@pytest.fixture
def target(sqlite_session_factory: SessionFactory) -> Iterator[SessionFactory]:
    """The test database with DAG ``target`` in it, and run creation installed."""
    with DAG("target", start_date=START, schedule=None) as dag:
        EmptyOperator(task_id="t")
    from squall.common.models import SerializedDagModel

    with session_scope(sqlite_session_factory) as session:
        ensure_dag_row(session, dag)
        session.merge(SerializedDagModel(dag_id="target", fileloc="x.py",
                                         data=serialize_dag(dag), dag_hash="h"))
    install_dag_run_trigger(trigger_dag_run)
    yield sqlite_session_factory
    install_dag_run_trigger(None)


class DbTI(FakeTI):
    def __init__(self, task: Any, factory: SessionFactory) -> None:
        super().__init__(task)
        self.session_factory = factory


def _set_state(factory: SessionFactory, state: str) -> None:
    with session_scope(factory) as session:
        session.execute(update(DagRun).where(DagRun.dag_id == "target").values(state=state))


def test_deferrable_trigger_dag_run_waits_in_a_dag_state_trigger(
        target: SessionFactory) -> None:
    """airflow/operators/trigger_dagrun.py: ``execute`` creates the run, pushes its XComs,
    then defers to ``DagStateTrigger(states=allowed + failed, poll_interval=poke_interval)``
    with no timeout; ``execute_complete`` reads the run at the event's logical date."""
    factory = target
    op = _in_dag(lambda: TriggerDagRunOperator(
        task_id="go", trigger_dag_id="target", logical_date="{{ ds }}T05:00:00+00:00",
        wait_for_completion=True, deferrable=True, poke_interval=4,
        failed_states=["failed", "queued"]))
    ti = DbTI(op, factory)
    deferred = deferral(op, ti, logical_date=START)
    at = START.add(hours=5)
    assert ti.xcoms[("go", "trigger_run_id")] == f"manual__{at.isoformat()}"
    assert ti.xcoms[("go", "trigger_execution_date_iso")] == at.isoformat()
    trigger = deferred.trigger
    assert isinstance(trigger, DagStateTrigger)
    assert (trigger.dag_id, trigger.states, trigger.execution_dates, trigger.poll_interval) == (
        "target", ["success", "failed", "queued"], [at], 4.0)
    assert deferred.timeout is None
    with session_scope(factory) as session:
        assert session.scalars(select(DagRun.logical_date).where(
            DagRun.dag_id == "target")).all() == [at]

    # the event is the trigger's serialize(), as stored in next_kwargs and read back
    event = serde.from_json(serde.to_json(trigger.serialize()))
    context = make_context(op, DbTI(op, factory), logical_date=START)
    _set_state(factory, DagRunState.SUCCESS)
    assert resume(op, event, context) is None
    _set_state(factory, DagRunState.FAILED)
    with pytest.raises(SquallError, match="target failed with failed state failed"):
        resume(op, event, context)
    _set_state(factory, DagRunState.RUNNING)
    with pytest.raises(SquallError, match=r"target return running which is not in "
                                          r"\['failed', 'queued'\] or \['success'\]"):
        resume(op, event, context)
    missing = ("x", {"execution_dates": [START.add(days=9)]})
    with pytest.raises(SquallError, match="No DAG run found for DAG target"):
        resume(op, missing, context)


def test_deferrable_trigger_dag_run_without_waiting_does_not_defer(
        target: SessionFactory) -> None:
    op = _in_dag(lambda: TriggerDagRunOperator(task_id="go", trigger_dag_id="target",
                                               deferrable=True))
    assert run_task(op, DbTI(op, target)) is None
    with session_scope(target) as session:
        assert session.scalar(select(DagRun.state).where(DagRun.dag_id == "target")) == (
            DagRunState.QUEUED)
