"""The retry rule (squall.execution.outcome.RetryPolicy) and the state_reason clip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from squall.common.models import MAX_STATE_REASON, TaskInstance, clip_reason
from squall.common.state import TaskInstanceState
from squall.execution.deferral import NO_RESUME
from squall.execution.outcome import RetryPolicy
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context

TI = TaskInstanceState
NOW = datetime(2024, 2, 1, 12, tzinfo=UTC)


class Noop(BaseOperator):
    def execute(self, context: Context) -> Any:
        return None


@pytest.mark.parametrize(
    ("try_number", "max_tries", "expected"),
    [(1, 0, TI.FAILED), (1, 2, TI.UP_FOR_RETRY), (2, 2, TI.UP_FOR_RETRY), (3, 2, TI.FAILED)],
)
def test_a_failed_try_is_retried_while_tries_remain(try_number: int, max_tries: int,
                                                    expected: TI) -> None:
    assert RetryPolicy(max_tries=max_tries).after_failure(try_number, now=NOW).state is expected


def test_next_retry_at_uses_the_task_retry_delay() -> None:
    task = Noop(task_id="x", retry_delay=timedelta(seconds=10),
                retry_exponential_backoff=True)
    policy = RetryPolicy(max_tries=3, task=task)
    assert policy.after_failure(1, now=NOW).next_retry_at == NOW + timedelta(seconds=10)
    assert policy.after_failure(3, now=NOW).next_retry_at == NOW + timedelta(seconds=40)
    assert policy.after_failure(4, now=NOW).next_retry_at is None  # failed


def test_without_a_task_a_retry_may_start_at_once() -> None:
    assert RetryPolicy(max_tries=1).after_failure(1, now=NOW).next_retry_at == NOW


def test_no_retry_fails_whatever_the_tries_left() -> None:
    failed = RetryPolicy(max_tries=5).after_failure(1, now=NOW, retry=False)
    assert (failed.state, failed.next_retry_at) == (TI.FAILED, None)


def test_values_clip_the_reason_and_set_next_retry_at_only_for_a_retry() -> None:
    retried = RetryPolicy(max_tries=1).after_failure(1, now=NOW, reason="x" * 5000)
    # a failed try leaves nothing to resume: a retry starts in execute (ADR 29)
    assert retried.values(end_date=NOW) == {
        "state_reason": "x" * MAX_STATE_REASON, "end_date": NOW, "next_retry_at": NOW,
        **NO_RESUME}
    failed = RetryPolicy(max_tries=0).after_failure(1, now=NOW, reason="boom")
    assert failed.values(end_date=NOW) == {"state_reason": "boom", "end_date": NOW,
                                           **NO_RESUME}


def test_for_task_instance_takes_the_task_from_its_dag() -> None:
    with DAG("retry_policy", schedule=None, start_date=NOW) as dag:
        task = Noop(task_id="t", retries=2, retry_delay=timedelta(minutes=5))
    ti = TaskInstance(dag_id="retry_policy", task_id="t", run_id="r", max_tries=2)
    assert RetryPolicy.for_task_instance(ti, {"retry_policy": dag}) == RetryPolicy(2, task)
    assert RetryPolicy.for_task_instance(ti, {}) == RetryPolicy(2, None)


def test_clip_reason() -> None:
    assert clip_reason("short") == "short"
    assert len(clip_reason("y" * (MAX_STATE_REASON + 1))) == MAX_STATE_REASON
