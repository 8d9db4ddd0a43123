"""DAG run bookkeeping (squall.scheduler: run_creation, decisions, ti_updates) on SQLite and
PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from sqlalchemy import Engine, delete, event, select, update
from sqlalchemy.orm import Session

from squall.common.db import SessionFactory
from squall.common.errors import DagNotFound, DagRunAlreadyExists
from squall.common.models import DagModel, DagRun, TaskInstance
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.runs.run_creation import create_dag_run, verify_integrity
from squall.runs.ti_updates import schedule_tis
from squall.scheduler.decisions import RunUpdate, update_dag_run
from squall.scheduler.local_run import PAST_POLL_SECONDS, run_dag_locally
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context
from squall.sdk.trigger_rule import TriggerRule, WeightRule

TI = TaskInstanceState
START = datetime(2024, 1, 1, tzinfo=UTC)
DAY1 = datetime(2024, 1, 2, tzinfo=UTC)
DAY2 = datetime(2024, 1, 3, tzinfo=UTC)
NOW = datetime(2024, 2, 1, 12, tzinfo=UTC)


class Noop(BaseOperator):
    def execute(self, context: Context) -> Any:
        return None


# --------------------------------------------------------------------------- helpers


def make_dag(dag_id: str = "d", **kwargs: Any) -> DAG:
    kwargs.setdefault("start_date", START)
    kwargs.setdefault("schedule", None)
    return DAG(dag_id, **kwargs)


def chain_dag(dag_id: str, n: int, **task_kwargs: Any) -> DAG:
    dag = make_dag(dag_id)
    with dag:
        prev = None
        for i in range(n):
            task = Noop(task_id=f"t{i}", **task_kwargs)
            if prev is not None:
                prev >> task
            prev = task
    return dag


def new_run(sf: SessionFactory, dag: DAG, logical_date: datetime = DAY1,
            state: DagRunState = DagRunState.QUEUED, **kwargs: Any) -> str:
    """Sync the dag row (once), create a run, commit; return its run_id."""
    kwargs.setdefault("run_type", DagRunType.MANUAL)
    with sf() as session:
        if session.get(DagModel, dag.dag_id) is None:
            session.add(DagModel(dag_id=dag.dag_id, fileloc=dag.fileloc))
            session.flush()
        run = create_dag_run(session, dag, logical_date=logical_date,
                             data_interval=kwargs.pop("data_interval", None), state=state,
                             now=kwargs.pop("now", NOW), **kwargs)
        session.commit()
        return run.run_id


def get_run(session: Session, dag_id: str, run_id: str) -> DagRun:
    return session.execute(
        select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    ).scalar_one()


def step(sf: SessionFactory, dag: DAG, run_id: str, now: datetime = NOW,
         **kwargs: Any) -> RunUpdate:
    """One update_dag_run in a session of its own, committed."""
    with sf() as session:
        result = update_dag_run(session, dag, get_run(session, dag.dag_id, run_id), now=now,
                                **kwargs)
        session.commit()
        return result


def tis_of(sf: SessionFactory, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
    with sf() as session:
        return {ti.task_id: ti for ti in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id,
                                       TaskInstance.run_id == run_id))}


def states_of(sf: SessionFactory, dag_id: str, run_id: str) -> dict[str, str]:
    return {tid: ti.state for tid, ti in tis_of(sf, dag_id, run_id).items()}


def set_ti(sf: SessionFactory, dag_id: str, run_id: str, task_ids: str,
           **values: Any) -> None:
    """Set columns of task instances by hand (simulating workers); commits."""
    if "state" in values:
        values["state"] = str(values["state"])
    with sf() as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
            TaskInstance.task_id.in_(task_ids.split()),
        ).values(**values))
        session.commit()


def ids(tis: list[TaskInstance]) -> list[str]:
    return [ti.task_id for ti in tis]


@contextmanager
def count_statements(sf: SessionFactory) -> Iterator[list[str]]:
    """Collect the SQL statements sent on the factory's engine (transaction control aside)."""
    engine = sf.kw["bind"]
    assert isinstance(engine, Engine)
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in {"SELECT", "UPDATE", "INSERT",
                                                             "DELETE"}:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def schedule_all(sf: SessionFactory, dag: DAG, run_id: str, now: datetime = NOW) -> list[str]:
    """update + schedule_tis in one transaction, as the scheduler does; returns task ids."""
    with sf() as session:
        result = update_dag_run(session, dag, get_run(session, dag.dag_id, run_id), now=now)
        schedule_tis(session, result.schedulable, now=now)
        session.commit()
        return ids(result.schedulable)


# --------------------------------------------------------------------------- creating runs


def test_create_run_and_task_instances(session_factory: SessionFactory) -> None:
    dag = make_dag("create")
    with dag:
        a = Noop(task_id="a", pool="p1", pool_slots=2, queue="q1",
                 executor_config={"cpu": 1})
        b = Noop(task_id="b", retries=2)
        c = Noop(task_id="c")
        d = Noop(task_id="d", priority_weight=7, weight_rule=WeightRule.ABSOLUTE)
        a >> b >> c
    run_id = new_run(session_factory, dag, conf={"x": 1})
    assert run_id == f"manual__{DAY1.isoformat()}"

    with session_factory() as session:
        run = get_run(session, "create", run_id)
        assert run.state == DagRunState.QUEUED
        assert run.run_type == DagRunType.MANUAL
        assert run.logical_date == DAY1
        assert (run.data_interval_start, run.data_interval_end) == (DAY1, DAY1)
        assert run.conf == {"x": 1}
        assert run.queued_at == NOW
        assert run.start_date is None and run.end_date is None

    tis = tis_of(session_factory, "create", run_id)
    assert set(tis) == {"a", "b", "c", "d"}
    assert all(ti.state == TI.NONE and ti.try_number == 0 for ti in tis.values())
    assert {t: ti.priority_weight for t, ti in tis.items()} == {"a": 3, "b": 2, "c": 1, "d": 7}
    assert (tis["a"].pool, tis["a"].pool_slots, tis["a"].queue) == ("p1", 2, "q1")
    assert tis["a"].executor_config == {"cpu": 1}
    assert tis["b"].max_tries == 2 and tis["a"].max_tries == 0
    assert (tis["c"].pool, tis["c"].queue) == ("default_pool", "default")
    assert tis["c"].operator == "Noop"
    del b, c, d


def test_create_running_run_with_explicit_interval(session_factory: SessionFactory) -> None:
    from squall.sdk.timetables import DataInterval

    dag = chain_dag("explicit", 1)
    interval = DataInterval(start=pendulum.instance(DAY1 - timedelta(days=1)),
                            end=pendulum.instance(DAY1))
    run_id = new_run(session_factory, dag, run_type=DagRunType.SCHEDULED,
                     data_interval=interval, state=DagRunState.RUNNING, run_id="custom")
    with session_factory() as session:
        run = get_run(session, "explicit", run_id)
        assert run.run_id == "custom" and run.run_type == "scheduled"
        assert run.data_interval_start == DAY1 - timedelta(days=1)
        assert run.state == DagRunState.RUNNING and run.start_date == NOW


def test_tasks_outside_their_dates_are_not_created(session_factory: SessionFactory) -> None:
    dag = make_dag("dates")
    with dag:
        Noop(task_id="normal")
        Noop(task_id="later", start_date=DAY1 + timedelta(hours=1))
        Noop(task_id="ended", end_date=DAY1 - timedelta(hours=1))
    run_id = new_run(session_factory, dag)
    assert set(tis_of(session_factory, "dates", run_id)) == {"normal"}


def test_duplicate_run_raises(session_factory: SessionFactory) -> None:
    dag = chain_dag("dup", 2)
    run_id = new_run(session_factory, dag)
    with pytest.raises(DagRunAlreadyExists) as excinfo:
        new_run(session_factory, dag)  # same run_id and logical date
    assert run_id in str(excinfo.value)
    with pytest.raises(DagRunAlreadyExists) as excinfo:
        new_run(session_factory, dag, run_id="other")  # same logical date
    assert "'other'" in str(excinfo.value) and run_id in str(excinfo.value)
    with pytest.raises(DagRunAlreadyExists):
        new_run(session_factory, dag, logical_date=DAY2, run_id=run_id)  # same run_id
    with session_factory() as session:
        assert len(session.scalars(select(DagRun)).all()) == 1


def test_missing_dag_row_raises(session_factory: SessionFactory) -> None:
    dag = chain_dag("norow", 1)
    with session_factory() as session, pytest.raises(DagNotFound):
        create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=DAY1,
                       data_interval=None)


def test_verify_integrity_removes_restores_and_adds(session_factory: SessionFactory) -> None:
    full = chain_dag("integrity", 3)  # t0 >> t1 >> t2
    run_id = new_run(session_factory, full)
    smaller = chain_dag("integrity", 2)
    with smaller:
        Noop(task_id="extra")
    with session_factory() as session:
        changes = verify_integrity(session, smaller, get_run(session, "integrity", run_id))
        session.commit()
    assert (changes.created, changes.removed, changes.restored) == (["extra"], ["t2"], [])
    assert states_of(session_factory, "integrity", run_id) == {
        "t0": TI.NONE, "t1": TI.NONE, "t2": TI.REMOVED, "extra": TI.NONE}

    with session_factory() as session:
        changes = verify_integrity(session, full, get_run(session, "integrity", run_id))
        session.commit()
    assert (changes.created, changes.removed, changes.restored) == ([], ["extra"], ["t2"])
    assert states_of(session_factory, "integrity", run_id) == {
        "t0": TI.NONE, "t1": TI.NONE, "t2": TI.NONE, "extra": TI.REMOVED}


# --------------------------------------------------------------------------- updating runs


def test_scheduling_order_roots_first(session_factory: SessionFactory) -> None:
    dag = make_dag("order")
    with dag:
        a = Noop(task_id="a")
        b = Noop(task_id="b")
        c = Noop(task_id="c")
        d = Noop(task_id="d")
        lone = Noop(task_id="lone")
        a >> [b, c] >> d
    run_id = new_run(session_factory, dag)

    first = step(session_factory, dag, run_id)
    assert first.state == DagRunState.RUNNING and not first.finished_now
    assert ids(first.schedulable) == ["a", "lone"]  # priority weight 4 before 1
    with session_factory() as session:
        run = get_run(session, "order", run_id)
        assert run.state == DagRunState.RUNNING
        assert run.start_date == NOW and run.last_scheduling_decision == NOW

    assert schedule_all(session_factory, dag, run_id) == ["a", "lone"]
    # a and lone are in flight: nothing to schedule, the run goes on
    waiting = step(session_factory, dag, run_id)
    assert (waiting.schedulable, waiting.state) == ([], DagRunState.RUNNING)

    set_ti(session_factory, "order", run_id, "a lone", state=TI.SUCCESS)
    assert schedule_all(session_factory, dag, run_id) == ["b", "c"]
    set_ti(session_factory, "order", run_id, "b", state=TI.SUCCESS)
    assert step(session_factory, dag, run_id).schedulable == []
    set_ti(session_factory, "order", run_id, "c", state=TI.SUCCESS)
    assert schedule_all(session_factory, dag, run_id) == ["d"]
    set_ti(session_factory, "order", run_id, "d", state=TI.SUCCESS)

    later = NOW + timedelta(minutes=5)
    done = step(session_factory, dag, run_id, now=later)
    assert (done.state, done.finished_now, done.schedulable) == (DagRunState.SUCCESS, True, [])
    with session_factory() as session:
        run = get_run(session, "order", run_id)
        assert run.state == DagRunState.SUCCESS and run.end_date == later
    again = step(session_factory, dag, run_id)
    assert (again.state, again.finished_now) == (DagRunState.SUCCESS, False)
    del a, b, c, d, lone


def test_queued_run_not_started_without_admission(session_factory: SessionFactory) -> None:
    dag = chain_dag("admission", 2)
    run_id = new_run(session_factory, dag)
    result = step(session_factory, dag, run_id, may_start=False)
    assert (result.state, result.schedulable) == (DagRunState.QUEUED, [])
    with session_factory() as session:
        assert get_run(session, "admission", run_id).start_date is None


def test_upstream_failed_cascades_through_chain_in_one_call(
    session_factory: SessionFactory,
) -> None:
    dag = chain_dag("cascade", 5)
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    set_ti(session_factory, "cascade", run_id, "t0", state=TI.FAILED)
    result = step(session_factory, dag, run_id)
    assert result.state == DagRunState.FAILED and result.finished_now
    assert result.reason is not None and "t4" in result.reason
    assert sorted(result.changed[TI.UPSTREAM_FAILED]) == ["t1", "t2", "t3", "t4"]
    tis = tis_of(session_factory, "cascade", run_id)
    assert {t: ti.state for t, ti in tis.items()} == {
        "t0": TI.FAILED, "t1": TI.UPSTREAM_FAILED, "t2": TI.UPSTREAM_FAILED,
        "t3": TI.UPSTREAM_FAILED, "t4": TI.UPSTREAM_FAILED}
    assert tis["t3"].end_date == NOW and tis["t3"].state_reason


def _branch_dag(dag_id: str) -> DAG:
    dag = make_dag(dag_id)
    with dag:
        branch = Noop(task_id="branch")
        x = Noop(task_id="x")
        y = Noop(task_id="y")
        after_y = Noop(task_id="after_y")
        join_all = Noop(task_id="join_all")
        join_nf = Noop(task_id="join_nf",
                       trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
        branch >> [x, y]
        y >> after_y
        [x, after_y] >> join_all
        [x, after_y] >> join_nf
    return dag


def test_skip_propagation_after_a_branch(session_factory: SessionFactory) -> None:
    dag = _branch_dag("branch")
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    # the branch chose x: y was skipped by it
    set_ti(session_factory, "branch", run_id, "branch x", state=TI.SUCCESS)
    set_ti(session_factory, "branch", run_id, "y", state=TI.SKIPPED)
    result = step(session_factory, dag, run_id)
    # the skip goes through after_y to join_all (all_success) in one call;
    # join_nf (none_failed_min_one_success) runs
    assert ids(result.schedulable) == ["join_nf"]
    assert sorted(result.changed[TI.SKIPPED]) == ["after_y", "join_all"]
    set_ti(session_factory, "branch", run_id, "join_nf", state=TI.SUCCESS)
    done = step(session_factory, dag, run_id)
    assert done.state == DagRunState.SUCCESS  # leaves: join_all skipped, join_nf success


def test_everything_skipped_skips_min_one_success_join(session_factory: SessionFactory) -> None:
    dag = _branch_dag("allskip")
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    set_ti(session_factory, "allskip", run_id, "branch", state=TI.SUCCESS)
    set_ti(session_factory, "allskip", run_id, "x y", state=TI.SKIPPED)
    result = step(session_factory, dag, run_id)
    assert result.state == DagRunState.SUCCESS and result.finished_now
    assert states_of(session_factory, "allskip", run_id) == {
        "branch": TI.SUCCESS, "x": TI.SKIPPED, "y": TI.SKIPPED, "after_y": TI.SKIPPED,
        "join_all": TI.SKIPPED, "join_nf": TI.SKIPPED}


def test_run_state_is_decided_by_the_leaves(session_factory: SessionFactory) -> None:
    dag = make_dag("leaves")
    with dag:
        work = Noop(task_id="work")
        cleanup = Noop(task_id="cleanup", trigger_rule=TriggerRule.ALL_DONE)
        work >> cleanup
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    set_ti(session_factory, "leaves", run_id, "work", state=TI.FAILED)
    assert ids(step(session_factory, dag, run_id).schedulable) == ["cleanup"]
    set_ti(session_factory, "leaves", run_id, "cleanup", state=TI.SUCCESS)
    # a failed task that is not a leaf does not fail the run (Airflow 2's rule)
    assert step(session_factory, dag, run_id).state == DagRunState.SUCCESS

    dag2 = make_dag("leaves2")
    with dag2:
        work2 = Noop(task_id="work")
        notify = Noop(task_id="notify", trigger_rule=TriggerRule.ONE_FAILED)
        report = Noop(task_id="report")
        work2 >> [notify, report]
    run2 = new_run(session_factory, dag2, state=DagRunState.RUNNING)
    set_ti(session_factory, "leaves2", run2, "work", state=TI.FAILED)
    mid = step(session_factory, dag2, run2)
    assert ids(mid.schedulable) == ["notify"] and mid.state == DagRunState.RUNNING
    set_ti(session_factory, "leaves2", run2, "notify", state=TI.SUCCESS)
    end = step(session_factory, dag2, run2)
    assert end.state == DagRunState.FAILED  # report (a leaf) is upstream_failed
    assert end.reason is not None and "report" in end.reason


def test_the_run_s_end_is_logged_with_its_reason_if_it_has_one(
        session_factory: SessionFactory, caplog: pytest.LogCaptureFixture) -> None:
    dag = chain_dag("logged", 1)
    ok_run = new_run(session_factory, dag, state=DagRunState.RUNNING)
    failed_run = new_run(session_factory, dag, logical_date=DAY2, state=DagRunState.RUNNING)
    set_ti(session_factory, "logged", ok_run, "t0", state=TI.SUCCESS)
    set_ti(session_factory, "logged", failed_run, "t0", state=TI.FAILED)
    with caplog.at_level(logging.INFO, logger="squall.scheduler.decisions"):
        step(session_factory, dag, ok_run)
        step(session_factory, dag, failed_run)
    ended = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DagRun")]
    assert ended == [f"DagRun logged {ok_run}: success",
                     f"DagRun logged {failed_run}: failed (task failure: t0)"]


def test_removed_task_instances_do_not_block_the_run(session_factory: SessionFactory) -> None:
    full = chain_dag("orphans", 2)
    run_id = new_run(session_factory, full, state=DagRunState.RUNNING)
    smaller = chain_dag("orphans", 1)
    set_ti(session_factory, "orphans", run_id, "t0", state=TI.SUCCESS)
    result = step(session_factory, smaller, run_id)
    assert result.changed[TI.REMOVED] == ["t1"]
    assert result.state == DagRunState.SUCCESS
    assert states_of(session_factory, "orphans", run_id)["t1"] == TI.REMOVED


def test_retry_period(session_factory: SessionFactory) -> None:
    dag = chain_dag("retry", 2, retries=2)
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    assert schedule_all(session_factory, dag, run_id) == ["t0"]
    due = NOW + timedelta(minutes=5)
    set_ti(session_factory, "retry", run_id, "t0", state=TI.UP_FOR_RETRY, next_retry_at=due)
    early = step(session_factory, dag, run_id, now=due - timedelta(seconds=1))
    # waiting for the retry is not a deadlock
    assert (early.schedulable, early.state) == ([], DagRunState.RUNNING)
    assert schedule_all(session_factory, dag, run_id, now=due) == ["t0"]
    ti = tis_of(session_factory, "retry", run_id)["t0"]
    assert (ti.state, ti.try_number, ti.next_retry_at) == (TI.SCHEDULED, 2, None)


def test_reschedule_period(session_factory: SessionFactory) -> None:
    dag = chain_dag("resched", 1)
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    assert schedule_all(session_factory, dag, run_id) == ["t0"]
    due = NOW + timedelta(minutes=1)
    set_ti(session_factory, "resched", run_id, "t0", state=TI.UP_FOR_RESCHEDULE,
           next_retry_at=due)
    early = step(session_factory, dag, run_id, now=due - timedelta(seconds=1))
    assert (early.schedulable, early.state) == ([], DagRunState.RUNNING)
    assert schedule_all(session_factory, dag, run_id, now=due) == ["t0"]
    ti = tis_of(session_factory, "resched", run_id)["t0"]
    assert (ti.state, ti.try_number) == (TI.SCHEDULED, 1)  # the same try goes on


def test_dagrun_timeout(session_factory: SessionFactory) -> None:
    dag = make_dag("timeout", dagrun_timeout=timedelta(hours=1))
    with dag:
        a = Noop(task_id="a")
        b = Noop(task_id="b")
        c = Noop(task_id="c", retries=1)
        d = Noop(task_id="d")
        a >> b
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    set_ti(session_factory, "timeout", run_id, "a", state=TI.RUNNING)
    set_ti(session_factory, "timeout", run_id, "c", state=TI.UP_FOR_RETRY)
    set_ti(session_factory, "timeout", run_id, "d", state=TI.SUCCESS)
    assert step(session_factory, dag, run_id, now=NOW + timedelta(minutes=59)).state == (
        DagRunState.RUNNING
    )
    result = step(session_factory, dag, run_id, now=NOW + timedelta(hours=2))
    assert (result.state, result.finished_now, result.reason) == (
        DagRunState.FAILED, True, "timed out")
    assert states_of(session_factory, "timeout", run_id) == {
        "a": TI.RUNNING, "b": TI.SKIPPED, "c": TI.SKIPPED, "d": TI.SUCCESS}
    with session_factory() as session:
        run = get_run(session, "timeout", run_id)
        assert run.state == DagRunState.FAILED and run.end_date == NOW + timedelta(hours=2)
    del b, c, d


def _past_dag(dag_id: str, *, wait_for_downstream: bool = False, **kwargs: Any) -> DAG:
    dag = make_dag(dag_id, **kwargs)
    with dag:
        t = Noop(task_id="t", depends_on_past=True, wait_for_downstream=wait_for_downstream)
        u = Noop(task_id="u")
        t >> u
    return dag


def scheduled_run(sf: SessionFactory, dag: DAG, logical_date: datetime = DAY1,
                  **kwargs: Any) -> str:
    """A RUNNING scheduled run (a catch-up DAG's previous run is never a manual one)."""
    return new_run(sf, dag, logical_date, state=DagRunState.RUNNING,
                   run_type=DagRunType.SCHEDULED, **kwargs)


def past_reason(dag_id: str, run_id: str, state: str) -> str:
    return (f"depends_on_past: waiting for previous task instance {dag_id}.t of run {run_id} "
            f"({state}) to succeed or be skipped")


def run_to_the_end(sf: SessionFactory, dag: DAG, run_ids: list[str],
                   now: datetime = NOW) -> list[tuple[int, str, str]]:
    """Decide the runs, then succeed whatever was scheduled, round after round (as the
    scheduler and workers would), until every run has finished; returns
    ``(round, run_id, task_id)`` of each task instance run, in order."""
    ran: list[tuple[int, str, str]] = []
    for round_no in range(20):
        states = {}
        this_round: list[tuple[int, str, str]] = []
        for run_id in run_ids:
            with sf() as session:
                result = update_dag_run(session, dag, get_run(session, dag.dag_id, run_id),
                                        now=now)
                schedule_tis(session, result.schedulable, now=now)
                session.commit()
            states[run_id] = result.state
            this_round.extend((round_no, run_id, task_id) for task_id in ids(result.schedulable))
        for _, run_id, task_id in this_round:
            set_ti(sf, dag.dag_id, run_id, task_id, state=TI.SUCCESS)
        ran.extend(this_round)
        if all(state in (DagRunState.SUCCESS, DagRunState.FAILED) for state in states.values()):
            return ran
    raise AssertionError(f"runs still going after 20 rounds: {states}")


def test_depends_on_past(session_factory: SessionFactory) -> None:
    dag = _past_dag("past")
    run1 = scheduled_run(session_factory, dag)
    # the first run has no previous run
    assert ids(step(session_factory, dag, run1).schedulable) == ["t"]
    set_ti(session_factory, "past", run1, "t", state=TI.RUNNING)
    run2 = scheduled_run(session_factory, dag, DAY2)
    # the previous instance is still running: wait, this is no deadlock
    waiting = step(session_factory, dag, run2)
    assert (waiting.schedulable, waiting.state) == ([], DagRunState.RUNNING)
    assert waiting.waiting_on_past == {"t": past_reason("past", run1, "running")}
    set_ti(session_factory, "past", run1, "t", state=TI.SUCCESS)
    assert schedule_all(session_factory, dag, run2) == ["t"]
    # scheduled, it no longer says it waits
    t = tis_of(session_factory, "past", run2)["t"]
    assert (t.state, t.state_reason) == (TI.SCHEDULED, None)


def test_runs_after_a_failed_run_wait_on_the_past(session_factory: SessionFactory) -> None:
    """Issue 9 defect 4: a failure of a depends_on_past task makes the next runs wait
    (RUNNING, saying for which task instance), not fail as deadlocked; once that task
    instance succeeds (set by hand here) they go on, one after another, and finish."""
    dag = _past_dag("after_failure")
    run1 = scheduled_run(session_factory, dag)
    set_ti(session_factory, "after_failure", run1, "t", state=TI.FAILED)
    assert step(session_factory, dag, run1).state == DagRunState.FAILED
    run2 = scheduled_run(session_factory, dag, DAY2)
    run3 = scheduled_run(session_factory, dag, DAY2 + timedelta(days=1))
    for later in (NOW, NOW + timedelta(days=1)):  # and again much later: still waiting
        for run_id in (run2, run3):
            result = step(session_factory, dag, run_id, now=later)
            assert (result.state, result.finished_now, result.schedulable) == (
                DagRunState.RUNNING, False, [])
    second = tis_of(session_factory, "after_failure", run2)
    assert {k: ti.state for k, ti in second.items()} == {"t": TI.NONE, "u": TI.NONE}
    assert second["t"].state_reason == past_reason("after_failure", run1, "failed")
    assert second["u"].state_reason is None
    third = tis_of(session_factory, "after_failure", run3)["t"]
    assert (third.state, third.state_reason) == (
        TI.NONE, past_reason("after_failure", run2, "none"))
    with session_factory() as session:
        assert [get_run(session, "after_failure", r).state for r in (run2, run3)] == [
            DagRunState.RUNNING, DagRunState.RUNNING]

    # the failed task instance is set to success (`squall tasks set-state`, or a clear)
    set_ti(session_factory, "after_failure", run1, "t", state=TI.SUCCESS)
    ran = run_to_the_end(session_factory, dag, [run2, run3], now=NOW + timedelta(days=1))
    # run3's t only once run2's had succeeded
    assert ran == [(0, run2, "t"), (1, run2, "u"), (1, run3, "t"), (2, run3, "u")]
    with session_factory() as session:
        assert [get_run(session, "after_failure", r).state for r in (run2, run3)] == [
            DagRunState.SUCCESS, DagRunState.SUCCESS]


def test_dags_test_waits_on_the_past_without_spinning(
        session_factory: SessionFactory, caplog: pytest.LogCaptureFixture) -> None:
    """`squall dags test` of a run held back by depends_on_past says why and polls (as
    Airflow's does) until the previous run's task instance is set to success elsewhere."""
    dag = _past_dag("local_past")
    run1 = scheduled_run(session_factory, dag)
    set_ti(session_factory, "local_past", run1, "t", state=TI.FAILED)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:  # somebody sets it to success meanwhile
            set_ti(session_factory, "local_past", run1, "t", state=TI.SUCCESS)

    with caplog.at_level(logging.WARNING, logger="squall.scheduler.local_run"):
        result = run_dag_locally(dag, session_factory, logical_date=DAY2, sleep=sleep)
    assert result.state == DagRunState.SUCCESS
    assert sleeps == [PAST_POLL_SECONDS] * 3
    warned = [r.getMessage() for r in caplog.records if "depends_on_past" in r.getMessage()]
    assert warned == [f"DagRun local_past {result.run_id}: t "
                      f"{past_reason('local_past', run1, 'failed')}"]  # said once


def test_depends_on_past_previous_run_is_airflows(session_factory: SessionFactory) -> None:
    """With catchup the previous run is the latest earlier non-manual run; without, the
    latest earlier run of any kind."""
    for catchup in (True, False):
        dag_id = f"prev_{str(catchup).lower()}"
        dag = _past_dag(dag_id, catchup=catchup)
        scheduled = scheduled_run(session_factory, dag)
        set_ti(session_factory, dag_id, scheduled, "t", state=TI.FAILED)
        manual = new_run(session_factory, dag, DAY1 + timedelta(hours=12),
                         state=DagRunState.RUNNING)
        set_ti(session_factory, dag_id, manual, "t", state=TI.SUCCESS)
        later = scheduled_run(session_factory, dag, DAY2)
        result = step(session_factory, dag, later)
        if catchup:
            assert result.waiting_on_past == {"t": past_reason(dag_id, scheduled, "failed")}
        else:
            assert ids(result.schedulable) == ["t"]
        # the manual run itself waits on the scheduled one in either case
        assert step(session_factory, dag, manual).state == DagRunState.RUNNING


def test_depends_on_past_ignores_runs_before_the_task_started(
    session_factory: SessionFactory,
) -> None:
    old = _past_dag("late_start")
    run1 = scheduled_run(session_factory, old)
    set_ti(session_factory, "late_start", run1, "t", state=TI.FAILED)
    new = make_dag("late_start")
    with new:
        Noop(task_id="t", depends_on_past=True, start_date=DAY1 + timedelta(hours=1))
    run2 = scheduled_run(session_factory, new, DAY2)
    assert ids(step(session_factory, new, run2).schedulable) == ["t"]


def test_depends_on_past_first_instance_of_a_new_task(session_factory: SessionFactory) -> None:
    old = make_dag("new_task")
    with old:
        Noop(task_id="u")
    run1 = scheduled_run(session_factory, old)
    set_ti(session_factory, "new_task", run1, "u", state=TI.FAILED)
    new = _past_dag("new_task")
    run2 = scheduled_run(session_factory, new, DAY2)
    # the previous run has no instance of t: nothing to wait for
    assert ids(step(session_factory, new, run2).schedulable) == ["t"]


def test_wait_for_downstream(session_factory: SessionFactory) -> None:
    dag = _past_dag("wfd", wait_for_downstream=True)
    run1 = scheduled_run(session_factory, dag)
    set_ti(session_factory, "wfd", run1, "t", state=TI.SUCCESS)
    set_ti(session_factory, "wfd", run1, "u", state=TI.QUEUED)
    run2 = scheduled_run(session_factory, dag, DAY2)
    assert step(session_factory, dag, run2).schedulable == []
    set_ti(session_factory, "wfd", run1, "u", state=TI.SUCCESS)
    assert ids(step(session_factory, dag, run2).schedulable) == ["t"]


def test_wait_for_downstream_after_a_failure_waits(session_factory: SessionFactory) -> None:
    dag = _past_dag("wfd_failed", wait_for_downstream=True)
    run1 = scheduled_run(session_factory, dag)
    set_ti(session_factory, "wfd_failed", run1, "t", state=TI.SUCCESS)
    set_ti(session_factory, "wfd_failed", run1, "u", state=TI.FAILED)
    run2 = scheduled_run(session_factory, dag, DAY2)
    result = step(session_factory, dag, run2)
    assert (result.state, result.finished_now) == (DagRunState.RUNNING, False)
    assert tis_of(session_factory, "wfd_failed", run2)["t"].state_reason == (
        "depends_on_past (wait_for_downstream): waiting for the downstreams of previous task "
        f"instance wfd_failed.t of run {run1} to succeed or be skipped: u (failed)")
    set_ti(session_factory, "wfd_failed", run1, "u", state=TI.SUCCESS)
    assert ids(step(session_factory, dag, run2).schedulable) == ["t"]


def test_a_real_deadlock_still_fails_the_run(session_factory: SessionFactory) -> None:
    dag = _past_dag("real_deadlock")
    run1 = scheduled_run(session_factory, dag)
    # u's upstream t has no task instance at all (a row lost): nothing can ever run u
    with session_factory() as session:
        session.execute(delete(TaskInstance).where(TaskInstance.dag_id == "real_deadlock",
                                                   TaskInstance.task_id == "t"))
        session.commit()
    result = step(session_factory, dag, run1)
    assert result.state == DagRunState.FAILED
    assert result.reason is not None and "deadlock" in result.reason


# --------------------------------------------------------------------------- schedule_tis


def test_schedule_tis_try_numbers_and_compare_and_set(session_factory: SessionFactory) -> None:
    dag = make_dag("cas")
    with dag:
        for name in ("fresh", "retry", "resched", "raced", "running"):
            Noop(task_id=name)
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    set_ti(session_factory, "cas", run_id, "retry", state=TI.UP_FOR_RETRY, try_number=1)
    set_ti(session_factory, "cas", run_id, "resched", state=TI.UP_FOR_RESCHEDULE,
           try_number=1, next_retry_at=NOW)
    set_ti(session_factory, "cas", run_id, "running", state=TI.RUNNING, try_number=1)

    with session_factory() as session:
        seen = list(session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == "cas").order_by(TaskInstance.task_id)))
        session.commit()  # end the read transaction; the objects keep what was seen
        # somebody else changes "raced" meanwhile
        set_ti(session_factory, "cas", run_id, "raced", state=TI.QUEUED, try_number=5)
        moved = schedule_tis(session, seen, now=NOW)
        session.commit()
        by_id = {ti.task_id: ti for ti in seen}
        assert moved == 3
        # moved objects are updated in place, the raced one is read again
        assert (by_id["fresh"].state, by_id["fresh"].try_number) == (TI.SCHEDULED, 1)
        assert (by_id["raced"].state, by_id["raced"].try_number) == (TI.QUEUED, 5)

    after = tis_of(session_factory, "cas", run_id)
    assert {t: (ti.state, ti.try_number) for t, ti in after.items()} == {
        "fresh": (TI.SCHEDULED, 1),     # NONE -> new try
        "retry": (TI.SCHEDULED, 2),     # UP_FOR_RETRY -> new try
        "resched": (TI.SCHEDULED, 1),   # UP_FOR_RESCHEDULE -> same try
        "raced": (TI.QUEUED, 5),        # changed concurrently: not moved
        "running": (TI.RUNNING, 1),     # not schedulable: left alone
    }
    assert after["resched"].next_retry_at is None


def test_schedule_tis_in_bulk_across_runs(session_factory: SessionFactory) -> None:
    dag = make_dag("bulk")
    with dag:
        for i in range(1500):
            Noop(task_id=f"t{i:04d}")
    run1 = new_run(session_factory, dag, state=DagRunState.RUNNING)
    run2 = new_run(session_factory, dag, logical_date=DAY2, state=DagRunState.RUNNING)
    with session_factory() as session:
        tis = list(session.scalars(select(TaskInstance).where(TaskInstance.dag_id == "bulk")))
        assert len(tis) == 3000
        with count_statements(session_factory) as statements:
            moved = schedule_tis(session, tis, now=NOW)
        session.commit()
    assert moved == 3000
    assert len(statements) <= 3, statements
    for run_id in (run1, run2):
        states = states_of(session_factory, "bulk", run_id)
        assert set(states.values()) == {TI.SCHEDULED}


# --------------------------------------------------------------------------- query budget


def test_update_dag_run_issues_a_bounded_number_of_statements(
    session_factory: SessionFactory,
) -> None:
    dag = make_dag("wide")
    with dag:
        root = Noop(task_id="root")
        layer1 = [Noop(task_id=f"a{i:03d}") for i in range(100)]
        layer2 = [Noop(task_id=f"b{i:03d}") for i in range(99)]
        root >> layer1
        for up, down in zip(layer1, layer2, strict=False):
            up >> down
    assert len(dag.task_dict) == 200
    run_id = new_run(session_factory, dag)

    def measured(now: datetime) -> tuple[RunUpdate, list[str]]:
        with session_factory() as session:
            run = get_run(session, "wide", run_id)
            with count_statements(session_factory) as statements:
                result = update_dag_run(session, dag, run, now=now)
                session.commit()
        return result, statements

    result, statements = measured(NOW)
    assert ids(result.schedulable) == ["root"]
    assert len(statements) <= 5, statements

    set_ti(session_factory, "wide", run_id, "root", state=TI.SUCCESS)
    result, statements = measured(NOW)
    assert len(result.schedulable) == 100
    assert len(statements) <= 5, statements

    # every layer-1 task fails: 99 upstream_failed in one UPDATE, and the run fails
    set_ti(session_factory, "wide", run_id, " ".join(t.task_id for t in layer1),
           state=TI.FAILED)
    result, statements = measured(NOW)
    assert result.state == DagRunState.FAILED
    assert len(result.changed[TI.UPSTREAM_FAILED]) == 99
    assert len(statements) <= 6, statements


def test_racing_writer_is_not_overwritten(session_factory: SessionFactory,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from squall.scheduler import decisions

    dag = chain_dag("race", 3)
    run_id = new_run(session_factory, dag, state=DagRunState.RUNNING)
    set_ti(session_factory, "race", run_id, "t0", state=TI.FAILED)
    original = decisions._decide
    calls: list[int] = []

    def decide_then_race(session: Session, *args: Any, **kwargs: Any) -> Any:
        plan = original(session, *args, **kwargs)
        if not calls:
            # another writer moves t1 after it was read and before the plan is written
            session.execute(update(TaskInstance).where(
                TaskInstance.dag_id == "race", TaskInstance.task_id == "t1",
            ).values(state=TI.SCHEDULED.value))
        calls.append(1)
        return plan

    monkeypatch.setattr(decisions, "_decide", decide_then_race)
    result = step(session_factory, dag, run_id)
    assert len(calls) == 2  # decided again on fresh rows
    assert result.state == DagRunState.RUNNING  # t1 is in flight
    assert states_of(session_factory, "race", run_id)["t1"] == TI.SCHEDULED


def test_tasks_without_a_queue_get_the_deployment_default(
        session_factory: SessionFactory) -> None:
    dag = make_dag("queues")
    with dag:
        Noop(task_id="named", queue="etl")
        Noop(task_id="unnamed")
    run_id = new_run(session_factory, dag, default_queue="fast_lane")
    with session_factory() as session:
        queues = {ti.task_id: ti.queue for ti in session.scalars(
            select(TaskInstance).where(TaskInstance.run_id == run_id))}
    assert queues == {"named": "etl", "unnamed": "fast_lane"}
