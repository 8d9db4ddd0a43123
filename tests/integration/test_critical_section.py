"""The critical section (squall.scheduler.critical_section) on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from squall.common.db import SessionFactory, make_session_factory, session_scope
from squall.common.models import DagModel, DagRun, Pool, TaskInstance
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.dag_processing.sync import load_serialized_dags
from squall.runs import pools
from squall.runs.run_creation import create_dag_run
from squall.runs.ti_updates import schedule_tis
from squall.scheduler.critical_section import queue_scheduled_tis, requeue_failed_publishes
from squall.scheduler.executor import PublishOutcome, QueuedTask
from squall.sdk.dag import DAG
from squall.sdk.trigger_rule import WeightRule
from tests.support.scheduling import Noop, sync_dags

TI = TaskInstanceState
START = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 2, 1, 12, tzinfo=UTC)
#: the DAGs of these tests are defined in this module: its folder is their DAG folder
DAGS_FOLDER = Path(__file__).parent
JOB_ID = 7


def make_dag(dag_id: str, n: int = 0, **kwargs: Any) -> DAG:
    task_kwargs = kwargs.pop("task_kwargs", {})
    dag = DAG(dag_id, schedule=None, start_date=START, **kwargs)
    with dag:
        for i in range(n):
            Noop(task_id=f"t{i}", **task_kwargs)
    return dag


def add_run(sf: SessionFactory, dag: DAG, day: int = 2, scheduled: bool = True) -> str:
    """A RUNNING run whose task instances are all SCHEDULED (try 1); commits."""
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 1, day, tzinfo=UTC),
                             data_interval=None, state=DagRunState.RUNNING, now=NOW)
        if scheduled:
            tis = session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run.run_id)).all()
            schedule_tis(session, tis, now=NOW)
        return run.run_id


def queue(sf: SessionFactory, slots: int = 100, max_tis: int = 512,
          **kwargs: Any) -> list[QueuedTask]:
    kwargs.setdefault("now", NOW)
    with session_scope(sf) as session:
        dags = load_serialized_dags(session)
        return queue_scheduled_tis(session, executor_slots=slots, max_tis=max_tis,
                                   job_id=JOB_ID, dags=dags, dags_folder=DAGS_FOLDER,
                                   examples_folder=None, **kwargs)


def states(sf: SessionFactory, dag_id: str) -> dict[tuple[str, str], TaskInstance]:
    with session_scope(sf) as session:
        return {(t.run_id, t.task_id): t for t in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id))}


def task_ids(tasks: list[QueuedTask]) -> list[str]:
    return [t.key.task_id for t in tasks]


def set_state(sf: SessionFactory, dag_id: str, task_ids: list[str], state: TI) -> None:
    with session_scope(sf) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.task_id.in_(task_ids)
        ).values(state=state.value))


def add_pool(sf: SessionFactory, name: str, slots: int) -> None:
    with session_scope(sf) as session:
        session.add(Pool(pool=name, slots=slots))


# --------------------------------------------------------------------------- ordering, ids


def test_priority_order_and_queued_columns(session_factory: SessionFactory) -> None:
    dag = DAG("prio", schedule=None, start_date=START)
    with dag:
        for tid, weight in (("low", 1), ("high", 10), ("mid", 5), ("top", 20)):
            Noop(task_id=tid, priority_weight=weight, weight_rule=WeightRule.ABSOLUTE,
                 queue="etl" if tid == "top" else "default")
    sync_dags(session_factory, dag)
    run_id = add_run(session_factory, dag)

    first = queue(session_factory, slots=2)
    assert task_ids(first) == ["top", "high"]
    rest = queue(session_factory, slots=10)
    assert task_ids(rest) == ["mid", "low"]

    rows = states(session_factory, "prio")
    everything = first + rest
    assert len({t.external_executor_id for t in everything}) == 4
    for task in everything:
        ti = rows[(run_id, task.key.task_id)]
        assert ti.state == TI.QUEUED
        assert ti.external_executor_id == task.external_executor_id
        assert ti.queued_by_job_id == JOB_ID
        assert ti.queued_dttm == NOW
        assert ti.state_reason is None
        assert task.try_number == ti.try_number == 1
        assert task.command.try_number == 1
        assert task.command.key == task.key
        assert task.command.queue == ("etl" if task.key.task_id == "top" else "default")
        assert task.command.dag_file == f"DAGS_FOLDER/{Path(dag.fileloc).name}"
    assert queue(session_factory) == []


def test_older_run_first_at_equal_priority(session_factory: SessionFactory) -> None:
    dag = make_dag("age", 1)
    sync_dags(session_factory, dag)
    newer = add_run(session_factory, dag, day=5)
    older = add_run(session_factory, dag, day=3)
    assert [t.key.run_id for t in queue(session_factory, slots=1)] == [older]
    assert [t.key.run_id for t in queue(session_factory, slots=1)] == [newer]


def test_dag_file_relative_to_the_dags_folder(session_factory: SessionFactory) -> None:
    dag = make_dag("rel", 1)
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)
    folder = Path(dag.fileloc).resolve().parent
    with session_scope(session_factory) as session:
        [task] = queue_scheduled_tis(session, executor_slots=5, max_tis=5, job_id=1,
                                     dags=load_serialized_dags(session), dags_folder=folder,
                                     examples_folder=None)
    assert task.command.dag_file == f"DAGS_FOLDER/{Path(dag.fileloc).name}"


def test_a_dag_file_outside_the_dags_folder_fails_its_task_instance(
        session_factory: SessionFactory) -> None:
    """No command can name a file outside the DAG folder (a worker would refuse it): the
    task instance is failed with the reason, nothing is published."""
    dag = make_dag("elsewhere", 1)
    dag.fileloc = "/srv/somewhere/else.py"
    sync_dags(session_factory, dag)
    run_id = add_run(session_factory, dag)
    assert queue(session_factory) == []
    ti = states(session_factory, "elsewhere")[(run_id, "t0")]
    assert ti.state == TI.FAILED
    assert ti.state_reason is not None and ti.state_reason.startswith(
        "cannot build the task-run command")
    assert "'/srv/somewhere/else.py'" in ti.state_reason


# --------------------------------------------------------------------------- limits


def test_parallelism_and_max_tis(session_factory: SessionFactory) -> None:
    dag = make_dag("many", 10, max_active_tasks=100)
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)
    assert len(queue(session_factory, slots=3)) == 3
    assert len(queue(session_factory, slots=50, max_tis=4)) == 4
    assert queue(session_factory, slots=0) == []
    assert len(queue(session_factory, slots=50)) == 3


def test_pool_slots(session_factory: SessionFactory) -> None:
    add_pool(session_factory, "p", 3)
    dag = DAG("pools", schedule=None, start_date=START)
    with dag:
        Noop(task_id="a", pool="p", pool_slots=2, priority_weight=30,
             weight_rule=WeightRule.ABSOLUTE)
        Noop(task_id="b", pool="p", pool_slots=2, priority_weight=20,
             weight_rule=WeightRule.ABSOLUTE)
        Noop(task_id="c", pool="p", pool_slots=1, priority_weight=10,
             weight_rule=WeightRule.ABSOLUTE)
        Noop(task_id="d", priority_weight=1, weight_rule=WeightRule.ABSOLUTE)
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)

    # a takes 2 of 3 slots; b needs 2 and does not fit; c fits in the last one
    assert sorted(task_ids(queue(session_factory))) == ["a", "c", "d"]
    assert queue(session_factory) == []  # the pool is full now
    set_state(session_factory, "pools", ["a"], TI.SUCCESS)
    assert task_ids(queue(session_factory)) == ["b"]


def test_full_pool_does_not_block_other_pools(session_factory: SessionFactory) -> None:
    add_pool(session_factory, "small", 1)
    waiting = make_dag("waiting", 3, task_kwargs={"pool": "small", "priority_weight": 50})
    other = make_dag("other", 2)
    sync_dags(session_factory, waiting, other)
    add_run(session_factory, waiting)
    add_run(session_factory, other)
    queued = queue(session_factory, slots=10, max_tis=3)
    # the three top candidates are in a pool with one slot: the selection goes round again
    # without that pool, instead of giving up the other two slots for this loop
    assert sorted((t.key.dag_id, t.key.task_id) for t in queued) == [
        ("other", "t0"), ("other", "t1"), ("waiting", "t0")]
    assert queue(session_factory, slots=10, max_tis=3) == []  # the pool is full now


def test_default_pool_size_counts(session_factory: SessionFactory) -> None:
    with session_scope(session_factory) as session:
        session.execute(update(Pool).where(Pool.pool == "default_pool").values(slots=2))
    dag = make_dag("dflt", 5)
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)
    assert len(queue(session_factory)) == 2


def test_missing_pool_stays_scheduled_warned_once(session_factory: SessionFactory,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    dag = make_dag("nopool", 2, task_kwargs={"pool": "ghost"})
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)
    warned: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="squall.scheduler.critical_section"):
        assert queue(session_factory, warned_pools=warned) == []
        assert queue(session_factory, warned_pools=warned) == []
    assert warned == {"ghost"}
    assert sum("'ghost' does not exist" in r.getMessage() for r in caplog.records) == 1
    assert {t.state for t in states(session_factory, "nopool").values()} == {TI.SCHEDULED}
    add_pool(session_factory, "ghost", 5)
    assert len(queue(session_factory, warned_pools=warned)) == 2
    assert warned == set()  # reported again should it go away again


def test_missing_pool_reason_written_once_and_cleared_when_the_pool_is_created(
        session_factory: SessionFactory) -> None:
    dag = make_dag("etlpool", 3, task_kwargs={"pool": "etl"})
    sync_dags(session_factory, dag)
    run_id = add_run(session_factory, dag)
    reason = "pool 'etl' does not exist; create it with `squall pools set etl SLOTS`"

    assert queue(session_factory, slots=1) == []  # even the ones no candidate round reached
    rows = states(session_factory, "etlpool")
    assert {(t.state, t.state_reason) for t in rows.values()} == {(TI.SCHEDULED, reason)}
    written = {k: t.updated_at for k, t in rows.items()}
    assert queue(session_factory, now=datetime(2024, 2, 2, tzinfo=UTC)) == []
    # the reason did not change, so nothing was written again
    assert {k: t.updated_at for k, t in states(session_factory, "etlpool").items()} == written

    # creating the pool (as `squall pools set etl 1` does) clears the reason of all of them
    with session_scope(session_factory) as session:
        assert pools.set_pool(session, "etl", 1) is True
    assert {t.state_reason for t in states(session_factory, "etlpool").values()} == {None}
    [first] = queue(session_factory)
    rows = states(session_factory, "etlpool")
    assert rows[(run_id, first.key.task_id)].state == TI.QUEUED
    assert rows[(run_id, first.key.task_id)].state_reason is None
    waiting = [t for t in rows.values() if t.state == TI.SCHEDULED]
    assert len(waiting) == 2 and {t.state_reason for t in waiting} == {None}

    # deleted again: the waiting ones get the reason back, the queued one keeps going
    with session_scope(session_factory) as session:
        pools.delete_pool(session, "etl")
    assert queue(session_factory) == []
    rows = states(session_factory, "etlpool")
    assert {t.state_reason for t in rows.values() if t.state == TI.SCHEDULED} == {reason}
    assert rows[(run_id, first.key.task_id)].state == TI.QUEUED


def test_existing_pools_cost_no_reason_write(session_factory: SessionFactory) -> None:
    dag = make_dag("fine", 2)
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)
    with session_scope(session_factory) as session:
        session.execute(update(Pool).where(Pool.pool == "default_pool").values(slots=1))
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = session_factory.kw["bind"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert len(queue(session_factory)) == 1
        first, statements[:] = list(statements), []
        assert queue(session_factory) == []  # the pool is full now
    finally:
        event.remove(engine, "before_cursor_execute", record)

    def updates(done: list[str]) -> list[str]:
        return [s for s in done if s.lstrip().upper().startswith("UPDATE")]

    assert len(updates(first)) == 1, first  # the move to QUEUED, nothing else
    assert updates(statements) == [], statements
    assert {t.state_reason for t in states(session_factory, "fine").values()} == {None}


def _occupying(sf: SessionFactory, pool: str) -> int:
    with session_scope(sf) as session:
        return len(session.scalars(select(TaskInstance).where(
            TaskInstance.pool == pool,
            TaskInstance.state.in_([TI.QUEUED.value, TI.RUNNING.value]))).all())


def test_a_one_slot_pool_never_has_two_task_instances_queued_or_running(
        session_factory: SessionFactory) -> None:
    add_pool(session_factory, "single", 1)
    dag = make_dag("one_at_a_time", 4, max_active_tasks=100,
                   task_kwargs={"pool": "single"})
    other = make_dag("elsewhere", 2, max_active_tasks=100)
    sync_dags(session_factory, dag, other)
    add_run(session_factory, dag, day=2)
    add_run(session_factory, dag, day=3)
    add_run(session_factory, other)
    done: list[str] = []
    rounds = 0
    while len(done) < 8:
        rounds += 1
        assert rounds <= 20, done
        queued = [t for t in queue(session_factory, slots=10) if t.key.dag_id == dag.dag_id]
        assert len(queued) <= 1
        assert _occupying(session_factory, "single") <= 1
        for task in queued:  # it starts; the next critical section runs while it runs
            with session_scope(session_factory) as session:
                session.execute(update(TaskInstance).where(
                    TaskInstance.external_executor_id == task.external_executor_id
                ).values(state=TI.RUNNING.value))
            assert queue(session_factory, slots=10) == []
            assert _occupying(session_factory, "single") == 1
            with session_scope(session_factory) as session:
                session.execute(update(TaskInstance).where(
                    TaskInstance.external_executor_id == task.external_executor_id
                ).values(state=TI.SUCCESS.value))
            done.append(f"{task.key.run_id}/{task.key.task_id}")
    assert len(set(done)) == 8


def test_max_active_tasks(session_factory: SessionFactory) -> None:
    dag = make_dag("mat", 5, max_active_tasks=3)
    sync_dags(session_factory, dag)
    add_run(session_factory, dag, day=2)
    add_run(session_factory, dag, day=3)
    first = queue(session_factory)  # the limit counts across the DAG's runs
    assert len(first) == 3
    assert queue(session_factory) == []
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.external_executor_id == first[0].external_executor_id
        ).values(state=TI.SUCCESS.value))
    assert len(queue(session_factory)) == 1


def test_max_active_tis_per_dag(session_factory: SessionFactory) -> None:
    dag = DAG("mtis", schedule=None, start_date=START)
    with dag:
        Noop(task_id="single", max_active_tis_per_dag=1)
        Noop(task_id="free")
    sync_dags(session_factory, dag)
    for day in (2, 3, 4):
        add_run(session_factory, dag, day=day)
    queued = queue(session_factory)
    assert sorted(task_ids(queued)) == ["free", "free", "free", "single"]
    assert queue(session_factory) == []


def test_paused_dag_and_non_running_runs_are_not_queued(
        session_factory: SessionFactory) -> None:
    paused = make_dag("paused", 2)
    active = make_dag("active", 1)
    sync_dags(session_factory, paused, active)
    add_run(session_factory, paused)
    queued_run = add_run(session_factory, active, day=2)
    add_run(session_factory, active, day=3)
    with session_scope(session_factory) as session:
        session.execute(update(DagModel).where(DagModel.dag_id == "paused")
                        .values(is_paused=True))
        session.execute(update(DagRun).where(DagRun.run_id == queued_run)
                        .values(state=DagRunState.QUEUED.value))
    assert [(t.key.dag_id, t.key.run_id != queued_run) for t in queue(session_factory)] == [
        ("active", True)]


# --------------------------------------------------------------------------- publish failures


def test_failed_publish_goes_back_to_scheduled_with_the_same_try(
        session_factory: SessionFactory) -> None:
    dag = make_dag("pub", 2)
    sync_dags(session_factory, dag)
    run_id = add_run(session_factory, dag)
    first = queue(session_factory)
    outcomes = [PublishOutcome(task=first[0], ok=False, attempts=4, error="broker down"),
                PublishOutcome(task=first[1], ok=True, attempts=1, error=None)]
    with session_scope(session_factory) as session:
        assert requeue_failed_publishes(session, outcomes) == 1
    rows = states(session_factory, "pub")
    failed = rows[(run_id, first[0].key.task_id)]
    assert (failed.state, failed.try_number) == (TI.SCHEDULED, 1)
    assert failed.state_reason is not None and "broker down" in failed.state_reason
    assert rows[(run_id, first[1].key.task_id)].state == TI.QUEUED

    [again] = queue(session_factory)
    assert again.key == first[0].key and again.try_number == 1
    assert again.external_executor_id != first[0].external_executor_id
    # a second report of the old failure changes nothing
    with session_scope(session_factory) as session:
        assert requeue_failed_publishes(session, outcomes[:1]) == 0
    assert states(session_factory, "pub")[(run_id, again.key.task_id)].state == TI.QUEUED


# --------------------------------------------------------------------------- two schedulers


def _race(sf: SessionFactory, slots: int) -> tuple[list[QueuedTask], list[QueuedTask]]:
    barrier = threading.Barrier(2)
    results: dict[int, list[QueuedTask]] = {}
    errors: list[BaseException] = []

    def scheduler(n: int) -> None:
        try:
            with session_scope(sf) as session:
                dags = load_serialized_dags(session)
                session.commit()
                barrier.wait(10)
                results[n] = queue_scheduled_tis(
                    session, executor_slots=slots, max_tis=512, job_id=n, dags=dags,
                    dags_folder=DAGS_FOLDER, examples_folder=None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return results[1], results[2]


@pytest.mark.postgres
def test_two_concurrent_transactions_take_disjoint_sets(pg_engine: Engine) -> None:
    engine = pg_engine
    session_factory = make_session_factory(engine)
    dag = make_dag("race", 20, max_active_tasks=100)
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)
    sf = make_session_factory(engine)
    one, two = _race(sf, slots=8)
    keys_one = {t.key for t in one}
    keys_two = {t.key for t in two}
    assert len(one) == len(two) == 8
    assert not keys_one & keys_two
    rows = states(session_factory, "race")
    queued = [t for t in rows.values() if t.state == TI.QUEUED]
    assert len(queued) == 16
    assert {t.queued_by_job_id for t in queued} == {1, 2}
    by_key = {t.key: t for t in (*one, *two)}
    for ti in queued:
        assert ti.external_executor_id == by_key[ti.key].external_executor_id


@pytest.mark.postgres
def test_concurrent_transactions_share_pool_limits(pg_engine: Engine) -> None:
    engine = pg_engine
    session_factory = make_session_factory(engine)
    add_pool(session_factory, "tight", 5)
    dag = make_dag("tightrace", 20, max_active_tasks=100, task_kwargs={"pool": "tight"})
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)
    one, two = _race(make_session_factory(engine), slots=10)
    assert len(one) + len(two) == 5
    assert not {t.key for t in one} & {t.key for t in two}


@pytest.mark.postgres
def test_two_schedulers_never_put_two_in_a_one_slot_pool(pg_engine: Engine) -> None:
    session_factory = make_session_factory(pg_engine)
    add_pool(session_factory, "single", 1)
    dag = make_dag("singlerace", 6, max_active_tasks=100, task_kwargs={"pool": "single"})
    sync_dags(session_factory, dag)
    add_run(session_factory, dag)
    for _ in range(3):
        one, two = _race(make_session_factory(pg_engine), slots=10)
        assert len(one) + len(two) == 1
        assert _occupying(session_factory, "single") == 1
        set_state(session_factory, "singlerace",
                  [t.key.task_id for t in (*one, *two)], TI.SUCCESS)
