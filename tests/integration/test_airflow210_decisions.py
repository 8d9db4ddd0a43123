"""The run decisions behind issue 24's Airflow 2.7-2.10 arguments, on the metadata database
(the helpers of ``test_dagrun_ops``): ``fail_stop``, ``max_consecutive_failed_dag_runs``,
``ignore_first_depends_on_past`` and ``wait_for_past_depends_before_skipping``."""

from __future__ import annotations

from sqlalchemy import select

from squall.common.db import SessionFactory
from squall.common.models import DagModel
from squall.common.state import DagRunState
from tests.integration.test_dagrun_ops import (
    DAY1,
    DAY2,
    TI,
    Noop,
    make_dag,
    scheduled_run,
    set_ti,
    states_of,
    step,
    tis_of,
)


def test_fail_stop_fails_the_running_and_skips_the_rest(session_factory: SessionFactory) -> None:
    """airflow/models/taskinstance.py _stop_remaining_tasks: every task instance of the run
    but the failed one and those already succeeded or failed: running -> failed, any other
    -> skipped."""
    dag = make_dag("fail_stop", fail_stop=True)
    with dag:
        a, b, c, d = (Noop(task_id=t) for t in "abcd")
        a >> c
        b >> d
    run = scheduled_run(session_factory, dag)
    set_ti(session_factory, "fail_stop", run, "a", state=TI.FAILED)
    set_ti(session_factory, "fail_stop", run, "b", state=TI.RUNNING)
    result = step(session_factory, dag, run)
    assert states_of(session_factory, "fail_stop", run) == {
        "a": "failed", "b": "failed", "c": "skipped", "d": "skipped"}
    assert tis_of(session_factory, "fail_stop", run)["c"].state_reason == (
        "stopped by the DAG's fail_stop: a failed")
    # the leaves: c skipped, d skipped: the run succeeds, as Airflow's update_state decides
    assert (result.state, result.finished_now) == (DagRunState.SUCCESS, True)

    plain = make_dag("no_fail_stop")
    with plain:
        Noop(task_id="a") >> Noop(task_id="c")
        Noop(task_id="b")
    run = scheduled_run(session_factory, plain)
    set_ti(session_factory, "no_fail_stop", run, "a", state=TI.FAILED)
    set_ti(session_factory, "no_fail_stop", run, "b", state=TI.RUNNING)
    step(session_factory, plain, run)
    assert states_of(session_factory, "no_fail_stop", run) == {
        "a": "failed", "b": "running", "c": "upstream_failed"}


def _paused(sf: SessionFactory, dag_id: str) -> bool:
    with sf() as session:
        return bool(session.scalar(select(DagModel.is_paused).where(DagModel.dag_id == dag_id)))


def test_max_consecutive_failed_dag_runs_pauses_the_dag(session_factory: SessionFactory) -> None:
    """airflow/models/dagrun.py DagRun._check_last_n_dagruns_failed: the last N runs by
    logical date all failed (checked when a run fails because a task failed)."""
    dag = make_dag("fails", max_consecutive_failed_dag_runs=2)
    with dag:
        Noop(task_id="t")
    first = scheduled_run(session_factory, dag)
    set_ti(session_factory, "fails", first, "t", state=TI.FAILED)
    result = step(session_factory, dag, first)
    assert result.state == DagRunState.FAILED and not _paused(session_factory, "fails")
    assert result.reason == "task failure: t"
    second = scheduled_run(session_factory, dag, DAY2)
    set_ti(session_factory, "fails", second, "t", state=TI.FAILED)
    result = step(session_factory, dag, second)
    assert result.state == DagRunState.FAILED and _paused(session_factory, "fails")
    assert result.reason == (
        "task failure: t; DAG paused: its last 2 runs failed (max_consecutive_failed_dag_runs=2)")


def test_a_success_between_failures_does_not_pause(session_factory: SessionFactory) -> None:
    dag = make_dag("mixed", max_consecutive_failed_dag_runs=2)
    with dag:
        Noop(task_id="t")
    first = scheduled_run(session_factory, dag, DAY1)
    set_ti(session_factory, "mixed", first, "t", state=TI.SUCCESS)
    assert step(session_factory, dag, first).state == DagRunState.SUCCESS
    second = scheduled_run(session_factory, dag, DAY2)
    set_ti(session_factory, "mixed", second, "t", state=TI.FAILED)
    assert step(session_factory, dag, second).state == DagRunState.FAILED
    assert not _paused(session_factory, "mixed")


def test_ignore_first_depends_on_past(session_factory: SessionFactory) -> None:
    """airflow/ti_deps/deps/prev_dagrun_dep.py: the previous run has no instance of the
    task: it runs with ignore_first_depends_on_past (Airflow 2.10's default), else waits."""
    for ignore_first in (True, False):
        dag_id = f"first_{str(ignore_first).lower()}"
        old = make_dag(dag_id)
        with old:
            Noop(task_id="u")
        run1 = scheduled_run(session_factory, old)
        set_ti(session_factory, dag_id, run1, "u", state=TI.SUCCESS)
        new = make_dag(dag_id)
        with new:
            Noop(task_id="t", depends_on_past=True, ignore_first_depends_on_past=ignore_first)
        run2 = scheduled_run(session_factory, new, DAY2)
        result = step(session_factory, new, run2)
        if ignore_first:
            assert [ti.task_id for ti in result.schedulable] == ["t"]
        else:
            assert result.schedulable == [] and result.state == DagRunState.RUNNING
            assert "has not run yet" in result.waiting_on_past["t"]


def test_wait_for_past_depends_before_skipping(session_factory: SessionFactory) -> None:
    """airflow/ti_deps/deps/trigger_rule_dep.py: a task instance to be skipped by its
    trigger rule waits while its past depends are not met."""
    for wait in (True, False):
        dag_id = f"skip_wait_{str(wait).lower()}"
        dag = make_dag(dag_id)
        with dag:
            Noop(task_id="s") >> Noop(task_id="t", depends_on_past=True,
                                      wait_for_past_depends_before_skipping=wait)
        run1 = scheduled_run(session_factory, dag)
        set_ti(session_factory, dag_id, run1, "s t", state=TI.FAILED)
        run2 = scheduled_run(session_factory, dag, DAY2)
        set_ti(session_factory, dag_id, run2, "s", state=TI.SKIPPED)
        result = step(session_factory, dag, run2)
        t = tis_of(session_factory, dag_id, run2)["t"]
        if wait:
            assert t.state == TI.NONE and result.state == DagRunState.RUNNING
            assert result.waiting_on_past["t"].startswith(
                "Task should be skipped but the past depends are not met: depends_on_past")
            set_ti(session_factory, dag_id, run1, "t", state=TI.SUCCESS)
            step(session_factory, dag, run2)
            assert tis_of(session_factory, dag_id, run2)["t"].state == TI.SKIPPED
        else:
            assert t.state == TI.SKIPPED
