"""Marking task instances with their relatives (squall.runs.mark) on SQLite and
PostgreSQL: the selections, compare-and-set per task instance, and finished runs handed
back to the scheduler."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from squall.common.db import SessionFactory, make_session_factory, session_scope
from squall.common.errors import DagRunNotFound, TaskNotFound
from squall.common.models import DagModel, DagRun, SerializedDagModel, TaskInstance
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.common.wakeup import PostgresWaker
from squall.dag_processing.serialization import dag_hash, deserialize_dag, serialize_dag
from squall.runs.mark import MarkResult, apply_marks, relatives, select_marks
from squall.runs.run_creation import create_dag_run
from squall.scheduler.dag_runs import RunDecisionMemo, SerializedDagCache, schedule_dag_runs
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context

TI = TaskInstanceState
START = datetime(2024, 1, 1, tzinfo=UTC)
DAY = [START + timedelta(days=i) for i in range(1, 4)]
NOW = datetime(2024, 2, 1, 12, tzinfo=UTC)


class Noop(BaseOperator):
    def execute(self, context: Context) -> Any:
        return None


def make_dag() -> DAG:
    """a >> b >> c, a >> d, and x on its own; as the scheduler sees it (serialized)."""
    with DAG("m", schedule="@daily", start_date=START, catchup=True) as dag:
        a, b, c, d = (Noop(task_id=t) for t in "abcd")
        Noop(task_id="x")
        a >> b >> c
        a >> d
    return deserialize_dag(serialize_dag(dag))


def store(sf: SessionFactory, dag: DAG, days: list[datetime]) -> list[str]:
    """The dag and serialized_dag rows, and a RUNNING run per day; returns the run ids."""
    data = serialize_dag(dag)
    with session_scope(sf) as session:
        session.add(DagModel(dag_id=dag.dag_id, fileloc=dag.fileloc, is_paused=False))
        session.add(SerializedDagModel(dag_id=dag.dag_id, fileloc=dag.fileloc, data=data,
                                       dag_hash=dag_hash(data), last_updated=NOW))
        session.flush()
        return [create_dag_run(session, dag, run_type=DagRunType.SCHEDULED, logical_date=day,
                               data_interval=None, state=DagRunState.RUNNING, now=NOW).run_id
                for day in days]


def set_states(sf: SessionFactory, run_id: str, **states: TaskInstanceState) -> None:
    with session_scope(sf) as session:
        for task_id, state in states.items():
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == run_id, TaskInstance.task_id == task_id,
            ).values(state=state.value, try_number=1))


def states(sf: SessionFactory, run_id: str) -> dict[str, str]:
    with session_scope(sf) as session:
        return {tid: state for tid, state in session.execute(
            select(TaskInstance.task_id, TaskInstance.state)
            .where(TaskInstance.run_id == run_id))}


def run_state(sf: SessionFactory, run_id: str) -> str:
    with session_scope(sf) as session:
        return session.scalars(select(DagRun.state).where(DagRun.run_id == run_id)).one()


def selected(sf: SessionFactory, dag: DAG, task_id: str, run_id: str,
             **kwargs: Any) -> list[tuple[str, str]]:
    with session_scope(sf) as session:
        sel = select_marks(session, dag, task_id=task_id, run_id=run_id,
                           state=kwargs.pop("state", TI.SUCCESS), **kwargs)
    return [(t.key.run_id, t.key.task_id) for t in sel.targets]


def mark(sf: SessionFactory, dag: DAG, task_id: str, run_id: str,
         **kwargs: Any) -> MarkResult:
    with session_scope(sf) as session:
        sel = select_marks(session, dag, task_id=task_id, run_id=run_id,
                           state=kwargs.pop("state", TI.SUCCESS), **kwargs)
        return apply_marks(session, dag, sel, now=NOW, reason="marked by a test")


def test_relatives_are_transitive() -> None:
    dag = make_dag()
    assert relatives(dag, "b", upstream=False, downstream=False) == {"b"}
    assert relatives(dag, "c", upstream=True, downstream=False) == {"a", "b", "c"}
    assert relatives(dag, "a", upstream=False, downstream=True) == {"a", "b", "c", "d"}
    assert relatives(dag, "b", upstream=True, downstream=True) == {"a", "b", "c"}
    with pytest.raises(TaskNotFound):
        relatives(dag, "nope", upstream=True, downstream=False)


def test_upstream_and_downstream_in_the_run(session_factory: SessionFactory) -> None:
    dag = make_dag()
    r1, r2 = store(session_factory, dag, DAY[:2])
    assert selected(session_factory, dag, "b", r1) == [(r1, "b")]
    assert selected(session_factory, dag, "b", r1, upstream=True) == [(r1, "a"), (r1, "b")]
    assert selected(session_factory, dag, "a", r1, downstream=True) == [
        (r1, "a"), (r1, "b"), (r1, "c"), (r1, "d")]
    # those already in the state are left out
    set_states(session_factory, r1, a=TI.SUCCESS)
    assert selected(session_factory, dag, "c", r1, upstream=True) == [(r1, "b"), (r1, "c")]

    result = mark(session_factory, dag, "b", r1, state=TI.FAILED, downstream=True)
    assert [t.key.task_id for t in result.changed] == ["b", "c"] and not result.lost
    assert states(session_factory, r1) == {"a": "success", "b": "failed", "c": "failed",
                                           "d": "none", "x": "none"}
    assert set(states(session_factory, r2).values()) == {"none"}  # other runs untouched
    assert result.reopened == []  # the run was running: the scheduler goes on with it
    with session_scope(session_factory) as session:
        ti = session.get_one(TaskInstance, ("m", "b", r1, -1))
        assert ti.state_reason == "marked by a test"
        assert ti.start_date is not None and ti.end_date is not None


def test_past_and_future_runs_by_logical_date(session_factory: SessionFactory) -> None:
    dag = make_dag()
    r1, r2, r3 = store(session_factory, dag, DAY)
    assert selected(session_factory, dag, "b", r2) == [(r2, "b")]
    assert selected(session_factory, dag, "b", r2, past=True) == [(r1, "b"), (r2, "b")]
    assert selected(session_factory, dag, "b", r2, future=True) == [(r2, "b"), (r3, "b")]
    assert selected(session_factory, dag, "b", r2, past=True, future=True) == [
        (r1, "b"), (r2, "b"), (r3, "b")]
    assert selected(session_factory, dag, "c", r3, past=True, upstream=True) == [
        (r, t) for r in (r1, r2, r3) for t in "abc"]
    result = mark(session_factory, dag, "b", r1, state=TI.SKIPPED, future=True)
    assert [t.key.run_id for t in result.changed] == [r1, r2, r3]
    assert {states(session_factory, r)["b"] for r in (r1, r2, r3)} == {"skipped"}
    with session_scope(session_factory) as session, pytest.raises(DagRunNotFound):
        select_marks(session, dag, task_id="b", run_id="ghost", state=TI.SUCCESS)


def test_a_lost_compare_and_set_is_reported(session_factory: SessionFactory) -> None:
    dag = make_dag()
    [r1] = store(session_factory, dag, DAY[:1])
    set_states(session_factory, r1, a=TI.SUCCESS, b=TI.RUNNING, c=TI.NONE)
    with session_scope(session_factory) as session:
        sel = select_marks(session, dag, task_id="b", run_id=r1, state=TI.FAILED,
                           downstream=True)
    assert [(t.key.task_id, t.state) for t in sel.targets] == [("b", TI.RUNNING),
                                                              ("c", TI.NONE)]
    # the try finishes between the read and the change
    set_states(session_factory, r1, b=TI.SUCCESS)
    with session_scope(session_factory) as session:
        result = apply_marks(session, dag, sel, now=NOW, reason="marked by a test")
    assert [t.key.task_id for t in result.lost] == ["b"]
    assert [t.key.task_id for t in result.changed] == ["c"]
    assert states(session_factory, r1)["b"] == "success"


def test_a_failed_run_is_decided_again_after_its_failed_leaf_is_marked_success(
        session_factory: SessionFactory) -> None:
    dag = make_dag()
    [r1] = store(session_factory, dag, DAY[:1])
    cache, memo = SerializedDagCache(), RunDecisionMemo(redecide_after=3600)

    def loop(now: datetime) -> None:
        cache.new_loop()
        with session_scope(session_factory) as session:
            schedule_dag_runs(session, cache, now=now, memo=memo)

    set_states(session_factory, r1, a=TI.SUCCESS, b=TI.SUCCESS, c=TI.RUNNING, d=TI.SUCCESS,
               x=TI.SUCCESS)
    loop(NOW)
    assert run_state(session_factory, r1) == "running"
    set_states(session_factory, r1, c=TI.FAILED)
    loop(NOW + timedelta(seconds=1))
    assert run_state(session_factory, r1) == "failed"

    result = mark(session_factory, dag, "c", r1)
    assert [(r.run_id, r.was) for r in result.reopened] == [(r1, DagRunState.FAILED)]
    with session_scope(session_factory) as session:
        run = session.scalars(select(DagRun).where(DagRun.run_id == r1)).one()
        assert (run.state, run.end_date, run.last_scheduling_decision) == (
            "running", None, None)
    # well within the memo's redecide bound: decided because it was handed back
    loop(NOW + timedelta(seconds=2))
    assert run_state(session_factory, r1) == "success"


def test_marking_a_leaf_failed_fails_a_successful_run(session_factory: SessionFactory) -> None:
    dag = make_dag()
    [r1] = store(session_factory, dag, DAY[:1])
    set_states(session_factory, r1, **{t: TI.SUCCESS for t in "abcdx"})
    cache = SerializedDagCache()
    with session_scope(session_factory) as session:
        schedule_dag_runs(session, cache, now=NOW, memo=RunDecisionMemo())
    assert run_state(session_factory, r1) == "success"
    result = mark(session_factory, dag, "d", r1, state=TI.FAILED)
    assert [r.was for r in result.reopened] == [DagRunState.SUCCESS]
    cache.new_loop()
    with session_scope(session_factory) as session:
        schedule_dag_runs(session, cache, now=NOW + timedelta(seconds=1),
                          memo=RunDecisionMemo())
    assert run_state(session_factory, r1) == "failed"


def test_marked_success_its_failed_downstream_is_cleared_to_run_again(
        session_factory: SessionFactory) -> None:
    dag = make_dag()
    r1, r2 = store(session_factory, dag, DAY[:2])
    for run_id in (r1, r2):
        set_states(session_factory, run_id, a=TI.SUCCESS, b=TI.FAILED, c=TI.UPSTREAM_FAILED,
                   d=TI.FAILED, x=TI.SUCCESS)
    cache = SerializedDagCache()
    with session_scope(session_factory) as session:
        schedule_dag_runs(session, cache, now=NOW)
    assert run_state(session_factory, r1) == run_state(session_factory, r2) == "failed"

    # marked failed: nothing is cleared
    with session_scope(session_factory) as session:
        assert select_marks(session, dag, task_id="b", run_id=r1,
                            state=TI.FAILED).to_clear == []

    with session_scope(session_factory) as session:
        sel = select_marks(session, dag, task_id="b", run_id=r1, state=TI.SUCCESS)
    assert [ti.task_id for ti in sel.to_clear] == ["c"]  # d is not downstream of b
    with session_scope(session_factory) as session:
        result = apply_marks(session, dag, sel, now=NOW, reason="marked by a test")
    assert [(c.key.task_id, c.new_state) for c in result.cleared.cleared] == [("c", TI.NONE)]
    assert states(session_factory, r1) == {"a": "success", "b": "success", "c": "none",
                                           "d": "failed", "x": "success"}
    assert states(session_factory, r2)["c"] == "upstream_failed"  # another run
    assert run_state(session_factory, r1) == "running"
    cache.new_loop()
    with session_scope(session_factory) as session:
        stats = schedule_dag_runs(session, cache, now=NOW + timedelta(seconds=1),
                                  memo=RunDecisionMemo())
    assert stats.tis_scheduled == 1
    assert states(session_factory, r1)["c"] == "scheduled"


def test_a_mark_wakes_the_schedulers_itself(pg_engine: Engine) -> None:
    """The operation notifies in its own transaction, so no caller has to remember it."""
    sf = make_session_factory(pg_engine)
    dag = make_dag()
    (run,) = store(sf, dag, DAY[:1])
    waker = PostgresWaker(pg_engine)
    try:
        assert waker.notices() is None  # listening from now on
        mark(sf, dag, "x", run, state=TI.FAILED)
        got: list[str] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = waker.notices() or []
            time.sleep(0.01)
        assert got == ["m marked failed"]
    finally:
        waker.close()
