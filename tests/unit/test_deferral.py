"""Deferral without a database: what a deferring try stores (squall.execution.deferral), how a
resumed one calls the task (BaseOperator.resume_execution, Airflow 2.10's
``airflow/models/baseoperator.py``), the trigger timeout, and the state sets a deferred task
instance is in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from squall.common.errors import SerializationError, TaskDeferralError, TaskDeferred, TaskSkipped
from squall.common.state import (
    FAIL_STOP_SKIP_STATES,
    IN_FLIGHT_STATES,
    MARK_RUN_FAILED_FAILS,
    OCCUPYING_STATES,
    TIMEOUT_SKIP_STATES,
    TRIGGER_FAIL_METHOD,
    UNFINISHED_STATES,
    TaskInstanceState,
)
from squall.execution.deferral import Resume, deferral_of, resume_of, trigger_timeout
from squall.execution.runner import OutcomeKind, TryOutcome, outcome_record
from squall.sdk.operators.base import BaseOperator, Context
from squall.sdk.sensors.base import BaseSensorOperator
from squall.sdk.triggers import serde
from tests.support.deferral import PayloadTrigger

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class Resumable(BaseOperator):
    def execute(self, context: Context) -> Any:
        self.defer(trigger=PayloadTrigger(payload=1), method_name="done",
                   kwargs={"n": 1, "when": NOW}, timeout=timedelta(minutes=5))

    def done(self, context: Context, event: Any = None, **kwargs: Any) -> Any:
        return {"event": event, **kwargs}


class Sensor(BaseSensorOperator):
    def poke(self, context: Context) -> bool:
        return False

    def done(self, context: Context, event: Any = None) -> Any:
        raise ValueError("bad event")


def deferred(**values: Any) -> TaskDeferred:
    values.setdefault("trigger", PayloadTrigger(payload={"at": NOW}))
    values.setdefault("method_name", "done")
    return TaskDeferred(**values)


def test_defer_raises_task_deferred_with_what_it_was_given() -> None:
    with pytest.raises(TaskDeferred) as caught:
        Resumable(task_id="t").execute({})  # type: ignore[typeddict-item]
    assert (caught.value.method_name, caught.value.kwargs["n"], caught.value.timeout) == (
        "done", 1, timedelta(minutes=5))


def test_deferral_stores_the_trigger_and_the_resumption() -> None:
    d = deferral_of(deferred(kwargs={"when": NOW, "ids": (1, 2)}, timeout=timedelta(1)))
    assert d.classpath == "tests.support.deferral.PayloadTrigger"
    assert serde.loads(d.kwargs) == {"payload": {"at": NOW}, "delay": 0.0}
    assert serde.from_json(d.next_kwargs) == {"when": NOW, "ids": (1, 2)}
    assert (d.next_method, d.timeout) == ("done", timedelta(1))


@pytest.mark.parametrize(("values", "message"), [
    ({"trigger": PayloadTrigger(payload=object())}, "PayloadTrigger kwargs.payload: a object"),
    ({"kwargs": {"conn": object()}}, "done kwargs.conn: a object cannot be stored"),
    ({"trigger": "not a trigger"}, "trigger must be a BaseTrigger, not str"),
    ({"timeout": 5}, "timeout must be a timedelta"),
])
def test_what_cannot_be_stored_is_named(values: dict[str, Any], message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        deferral_of(deferred(**values))


def test_trigger_timeout() -> None:
    start = NOW - timedelta(minutes=1)
    assert trigger_timeout(None, None, start_date=start, now=NOW) is None
    assert trigger_timeout(timedelta(minutes=5), None, start_date=start, now=NOW) == (
        NOW + timedelta(minutes=5))
    # the earlier of the two (Airflow's _defer_task)
    assert trigger_timeout(timedelta(minutes=5), timedelta(minutes=2), start_date=start,
                           now=NOW) == start + timedelta(minutes=2)
    assert trigger_timeout(None, timedelta(minutes=2), start_date=start,
                           now=NOW) == start + timedelta(minutes=2)


def test_a_deferred_outcome_is_recorded_with_its_trigger() -> None:
    task = Resumable(task_id="t", execution_timeout=timedelta(minutes=2))
    outcome = TryOutcome(OutcomeKind.DEFERRED, deferral=deferral_of(deferred(
        timeout=timedelta(hours=1), kwargs={"n": 2})))
    record = outcome_record(task, outcome, try_number=1, max_tries=0, start_date=NOW)
    assert record.state == TaskInstanceState.DEFERRED
    assert record.trigger is not None
    assert record.trigger[0] == "tests.support.deferral.PayloadTrigger"
    assert record.values["next_method"] == "done"
    assert record.values["next_kwargs"] == {"n": 2}
    assert record.values["trigger_timeout"] == NOW + timedelta(minutes=2)
    assert record.values["end_date"] is None
    # any other outcome leaves nothing to resume
    done = outcome_record(task, TryOutcome(OutcomeKind.SUCCESS), try_number=1, max_tries=0,
                          start_date=NOW)
    assert done.trigger is None
    assert {k: done.values[k] for k in ("next_method", "next_kwargs", "trigger_id",
                                        "trigger_timeout")} == dict.fromkeys(
        ("next_method", "next_kwargs", "trigger_id", "trigger_timeout"))


def test_resume_execution_calls_next_method_with_the_event() -> None:
    task = Resumable(task_id="t")
    resume = resume_of("done", serde.to_json({"n": 3, "event": {"at": NOW}}))
    assert resume is not None
    assert task.resume_execution(resume.next_method, resume.kwargs(), {}) == {  # type: ignore[arg-type]
        "event": {"at": NOW}, "n": 3}
    assert resume_of(None, {"x": 1}) is None


def test_fail_raises_task_deferral_error_with_the_error() -> None:
    task = Resumable(task_id="t")
    with pytest.raises(TaskDeferralError, match=r"^Trigger/execution timeout$"):
        task.resume_execution(TRIGGER_FAIL_METHOD, {"error": "Trigger/execution timeout"},
                              {})  # type: ignore[arg-type]
    with pytest.raises(TaskDeferralError, match=r"^Unknown$"):
        task.resume_execution(TRIGGER_FAIL_METHOD, None, {})  # type: ignore[arg-type]
    with pytest.raises(TaskDeferralError, match="has no method 'nope'"):
        task.resume_execution("nope", None, {})  # type: ignore[arg-type]


def test_a_soft_fail_sensor_skips_when_its_deferral_fails() -> None:
    soft = Sensor(task_id="s", soft_fail=True)
    with pytest.raises(TaskSkipped, match="Trigger/execution timeout"):
        soft.resume_execution(TRIGGER_FAIL_METHOD, {"error": "Trigger/execution timeout"},
                              {})  # type: ignore[arg-type]
    hard = Sensor(task_id="h")
    with pytest.raises(TaskDeferralError):
        hard.resume_execution(TRIGGER_FAIL_METHOD, {"error": "x"}, {})  # type: ignore[arg-type]
    # a plain exception of the resumed method is the method's failure, not a skip
    with pytest.raises(ValueError, match="bad event"):
        soft.resume_execution("done", {"event": 1}, {})  # type: ignore[arg-type]


def test_resume_counts_the_execution_timeout_from_the_first_start() -> None:
    resume = Resume(next_method="done")
    assert resume.used(None) == timedelta(0)
    assert resume.used(datetime.now(UTC) - timedelta(minutes=3)) >= timedelta(minutes=3)


def test_deferred_is_unfinished_in_flight_and_holds_no_slot() -> None:
    d = TaskInstanceState.DEFERRED
    assert d in UNFINISHED_STATES and d in IN_FLIGHT_STATES  # its run goes on
    assert d not in OCCUPYING_STATES  # Airflow's pools: include_deferred=False
    # Airflow: a timed-out run and fail_stop skip it; marking the run failed fails it
    assert d in TIMEOUT_SKIP_STATES and d in FAIL_STOP_SKIP_STATES
    assert d in MARK_RUN_FAILED_FAILS

