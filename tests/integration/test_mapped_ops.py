"""Run operations on the instances of a mapped task (map_index 0, 1, ...), on SQLite and
PostgreSQL, with the mapped rows inserted directly: marking (squall.runs.mark), clearing
(squall.runs.clear), marking a run (squall.runs.mark_run) and the scheduler's guarded bulk
updates (squall.runs.ti_updates) each touch the instances asked for and no other.

Airflow 2.10's rules: ``DAG.set_task_instance_state(map_indexes=...)`` marks those
instances of the task (every instance without them; its relatives: all of theirs), and
``DAG.clear(task_ids=[task_id, (task_id, map_index)])`` takes a task id alone as all its
instances and a pair as that one (airflow/models/dag.py ``_get_task_instances``:
``tuple_in_condition((TI.task_id, TI.map_index), ...)``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagRun, TaskInstance
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.runs.clear import clear_task_instances, select_task_instances
from squall.runs.mark import apply_marks, select_marks
from squall.runs.mark_run import mark_run
from squall.runs.run_creation import create_dag_run
from squall.runs.ti_updates import bulk_set
from squall.sdk.dag import DAG
from tests.support.scheduling import Noop, sync_dags

TI = TaskInstanceState
NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)
DAG_ID = "mapped_ops"


def make_dag() -> DAG:
    """start >> fan >> end; ``fan`` stands for a mapped task (its rows are mapped)."""
    with DAG(DAG_ID, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        Noop(task_id="start") >> Noop(task_id="fan") >> Noop(task_id="end")
    return dag


def seed_mapped_run(sf: SessionFactory, fan: list[TaskInstanceState], *,
                    others: TaskInstanceState = TI.SUCCESS,
                    run_state: DagRunState = DagRunState.RUNNING) -> tuple[DAG, str]:
    """A run whose ``fan`` has one row per entry of ``fan`` (map_index 0, 1, ...) in that
    state, and whose other tasks are in ``others``."""
    dag = make_dag()
    sync_dags(sf, dag, now=NOW)
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 2, 1, tzinfo=UTC), data_interval=None,
                             state=run_state, external_trigger=True, now=NOW)
        run_id = run.run_id
        session.execute(delete(TaskInstance).where(TaskInstance.run_id == run_id,
                                                   TaskInstance.task_id == "fan"))
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)):
            ti.state, ti.try_number = others.value, 1
        for index, state in enumerate(fan):
            session.add(TaskInstance(dag_id=DAG_ID, task_id="fan", run_id=run_id,
                                     map_index=index, state=state.value, try_number=1,
                                     max_tries=0))
    return dag, run_id


def fan_states(sf: SessionFactory, run_id: str) -> list[str]:
    with session_scope(sf) as session:
        return list(session.scalars(select(TaskInstance.state).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "fan")
            .order_by(TaskInstance.map_index)))


def test_mark_one_instance_or_all(session_factory: SessionFactory) -> None:
    dag, run_id = seed_mapped_run(session_factory, [TI.RUNNING, TI.FAILED, TI.RUNNING])
    with session_scope(session_factory) as session:
        sel = select_marks(session, dag, task_id="fan", run_id=run_id, state=TI.SUCCESS,
                           map_indexes=[1])
        assert [t.key.map_index for t in sel.targets] == [1]
        result = apply_marks(session, dag, sel, now=NOW, reason="test")
        assert not result.lost and len(result.changed) == 1
    assert fan_states(session_factory, run_id) == ["running", "success", "running"]
    with session_scope(session_factory) as session:
        sel = select_marks(session, dag, task_id="fan", run_id=run_id, state=TI.FAILED)
        assert [t.key.map_index for t in sel.targets] == [0, 1, 2]
        result = apply_marks(session, dag, sel, now=NOW, reason="test")
        assert not result.lost
    assert fan_states(session_factory, run_id) == ["failed"] * 3


def test_map_indexes_narrow_only_the_task_named(
        session_factory: SessionFactory) -> None:
    dag, run_id = seed_mapped_run(session_factory, [TI.FAILED, TI.FAILED], others=TI.NONE)
    with session_scope(session_factory) as session:
        sel = select_marks(session, dag, task_id="fan", run_id=run_id, state=TI.SUCCESS,
                           upstream=True, downstream=True, map_indexes=[0])
        assert [(t.key.task_id, t.key.map_index) for t in sel.targets] == [
            ("start", -1), ("fan", 0), ("end", -1)]
        sel = select_marks(session, dag, task_id="start", run_id=run_id, state=TI.SUCCESS,
                           downstream=True)
        assert [(t.key.task_id, t.key.map_index) for t in sel.targets] == [
            ("start", -1), ("fan", 0), ("fan", 1), ("end", -1)]


def test_clear_a_pair_or_the_task(session_factory: SessionFactory) -> None:
    dag, run_id = seed_mapped_run(session_factory, [TI.FAILED, TI.SUCCESS, TI.FAILED])
    with session_scope(session_factory) as session:
        tis = select_task_instances(session, dag, task_regex="^fan$", run_id=run_id,
                                    map_indexes={"fan": {2}})
        assert [ti.map_index for ti in tis] == [2]
        result = clear_task_instances(session, tis, dag, NOW)
        assert [c.key.map_index for c in result.cleared] == [2] and not result.changed
    assert fan_states(session_factory, run_id) == ["failed", "success", "none"]
    with session_scope(session_factory) as session:
        tis = select_task_instances(session, dag, task_regex="^fan$", run_id=run_id)
        assert [ti.map_index for ti in tis] == [0, 1, 2]
        clear_task_instances(session, tis, dag, NOW)
    assert fan_states(session_factory, run_id) == ["none"] * 3


def test_mark_run_changes_each_instance(session_factory: SessionFactory) -> None:
    _, run_id = seed_mapped_run(session_factory, [TI.RUNNING, TI.SUCCESS, TI.NONE],
                                others=TI.SUCCESS)
    with session_scope(session_factory) as session:
        changed = mark_run(session, DAG_ID, run_id, DagRunState.FAILED, now=NOW,
                           reason="test")
    assert changed == 2  # the running and the unstarted instance
    assert fan_states(session_factory, run_id) == ["failed", "success", "skipped"]


def test_bulk_set_touches_only_the_instances_given(session_factory: SessionFactory) -> None:
    _, run_id = seed_mapped_run(session_factory, [TI.NONE, TI.NONE, TI.NONE])
    with session_scope(session_factory) as session:
        tis = list(session.scalars(select(TaskInstance).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "fan",
            TaskInstance.map_index.in_([0, 2]))))
        assert bulk_set(session, tis, expected=["none"],
                        values={"state": TI.SKIPPED.value}) == 2
        run = session.scalars(select(DagRun).where(DagRun.run_id == run_id)).one()
        end = [t for t in session.scalars(select(TaskInstance).where(
            TaskInstance.run_id == run.run_id, TaskInstance.task_id == "end"))]
        assert bulk_set(session, end, expected=["success"],
                        values={"state": TI.FAILED.value}) == 1
    assert fan_states(session_factory, run_id) == ["skipped", "none", "skipped"]
