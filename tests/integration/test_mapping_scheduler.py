"""The scheduler's side of dynamic task mapping, from the serialized DAG (no DAG file
imported): expansion from the serialized expand spec, ``max_active_tis_per_dagrun`` and
``max_active_tis_per_dag`` counting mapped instances, the commands carrying the map index,
and ``depends_on_past`` over every instance of the previous run (Airflow 2.10's
``PrevDagrunDep._count_unsuccessful_tis`` counts all map indexes of the task)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagRun, TaskInstance
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.dag_processing.serialization import deserialize_dag, serialize_dag
from squall.dag_processing.sync import load_serialized_dags
from squall.runs.run_creation import create_dag_run
from squall.runs.ti_updates import schedule_tis
from squall.scheduler.critical_section import queue_scheduled_tis
from squall.scheduler.decisions import update_dag_run
from squall.sdk.dag import DAG
from squall.sdk.decorators import task
from tests.support.scheduling import Noop, sync_dags

START = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 1, 10, tzinfo=UTC)
TI = TaskInstanceState


def _dag(**mapped_kwargs: object) -> DAG:
    with DAG("mapsched", schedule="@daily", start_date=START) as dag:
        @task
        def numbers() -> list[int]:
            return [1, 2, 3]

        @task(**mapped_kwargs)  # type: ignore[call-overload]
        def each(x: int, y: str) -> str:
            return f"{x}{y}"

        each.partial(y="!").expand(x=[10, 20, 30, 40, 50])
        Noop(task_id="after") << numbers()
    return dag


def _run(sf: SessionFactory, dag: DAG, day: int) -> str:
    """A running run, decided once (the mapped task expands) and its ready ones scheduled."""
    stand_in = deserialize_dag(serialize_dag(dag))
    with session_scope(sf) as session:
        run = create_dag_run(session, stand_in, run_type=DagRunType.SCHEDULED,
                             logical_date=datetime(2024, 1, day, tzinfo=UTC),
                             data_interval=None, state=DagRunState.RUNNING, now=NOW)
        decided = update_dag_run(session, stand_in, run, now=NOW)
        schedule_tis(session, decided.schedulable, now=NOW)
        return run.run_id


def _queue(sf: SessionFactory) -> list[tuple[str, str, int]]:
    with session_scope(sf) as session:
        queued = queue_scheduled_tis(session, executor_slots=100, max_tis=100, job_id=1,
                                     dags=load_serialized_dags(session),
                                     dags_folder=Path(__file__).parent, examples_folder=None,
                                     now=NOW)
    for t in queued:
        assert t.command.map_index == t.key.map_index
    return sorted((t.key.run_id, t.key.task_id, t.key.map_index) for t in queued)


def test_the_serialized_dag_carries_the_expand_spec() -> None:
    stand_in = deserialize_dag(serialize_dag(_dag()))
    each = stand_in.task_dict["each"]
    assert getattr(each, "mapped_spec", None) == {
        "type": "dict", "args": [["x", {"type": "literal", "length": 5}]]}
    assert getattr(stand_in.task_dict["numbers"], "mapped_spec", None) is None
    # ordinary tasks serialize as before (no "expand" key: their hash is unchanged)
    tasks = {t["task_id"]: t for t in serialize_dag(stand_in)["dag"]["tasks"]}
    assert "expand" not in tasks["numbers"] and "expand" in tasks["each"]


def test_max_active_tis_per_dagrun_counts_mapped_instances(session_factory: SessionFactory
                                                           ) -> None:
    dag = _dag(max_active_tis_per_dagrun=2)
    sync_dags(session_factory, dag)
    first, second = _run(session_factory, dag, 2), _run(session_factory, dag, 3)
    queued = [q for q in _queue(session_factory) if q[1] == "each"]
    # two of the five instances in each run
    assert [(run, len([q for q in queued if q[0] == run])) for run in (first, second)] == [
        (first, 2), (second, 2)]
    assert {q[2] for q in queued} == {0, 1}


def test_max_active_tis_per_dag_counts_mapped_instances(session_factory: SessionFactory
                                                        ) -> None:
    dag = _dag(max_active_tis_per_dag=3)
    sync_dags(session_factory, dag)
    _run(session_factory, dag, 2)
    _run(session_factory, dag, 3)
    queued = [q for q in _queue(session_factory) if q[1] == "each"]
    assert len(queued) == 3


def test_depends_on_past_waits_for_every_instance_of_the_previous_run(
        session_factory: SessionFactory) -> None:
    dag = _dag(depends_on_past=True)
    sync_dags(session_factory, dag)
    stand_in = deserialize_dag(serialize_dag(dag))
    first = _run(session_factory, dag, 2)
    with session_scope(session_factory) as session:
        # the first run's instances: all succeeded but index 3, which failed
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == first, TaskInstance.task_id == "each").values(
            state=TI.SUCCESS.value))
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == first, TaskInstance.task_id == "each",
            TaskInstance.map_index == 3).values(state=TI.FAILED.value))
        run = create_dag_run(session, stand_in, run_type=DagRunType.SCHEDULED,
                             logical_date=datetime(2024, 1, 3, tzinfo=UTC),
                             data_interval=None, state=DagRunState.RUNNING, now=NOW)
        second = run.run_id
        decided = update_dag_run(session, stand_in, run, now=NOW)
        assert "each" not in {ti.task_id for ti in decided.schedulable}
        assert "previous task instance" in decided.waiting_on_past["each"]
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == first, TaskInstance.map_index == 3).values(
            state=TI.SUCCESS.value))
        run = session.scalars(select(DagRun).where(DagRun.run_id == second)).one()
        decided = update_dag_run(session, stand_in, run, now=NOW)
        assert sorted(ti.map_index for ti in decided.schedulable
                      if ti.task_id == "each") == [0, 1, 2, 3, 4]


def test_a_cleared_mapped_task_is_revised_to_its_new_length(session_factory: SessionFactory
                                                            ) -> None:
    """Airflow 2.10's ``DagRun._revise_map_indexes_if_mapped``: instances past the new end
    are ``removed``, missing ones are added, when the cleared instances are scheduled."""
    from squall.execution import xcom

    with DAG("revise", schedule=None, start_date=START) as dag:
        @task
        def numbers() -> list[int]:
            return [1, 2, 3]

        @task
        def each(x: int) -> int:
            return x

        each.expand(x=numbers())
    sync_dags(session_factory, dag)
    stand_in = deserialize_dag(serialize_dag(dag))

    def decide_with(value: list[int]) -> dict[int, str]:
        with session_scope(session_factory) as session:
            run = session.scalars(select(DagRun).where(DagRun.dag_id == "revise")).one()
            xcom.push(session, dag_id="revise", run_id=run.run_id, task_id="numbers",
                      key="return_value", value=value)
            session.execute(update(TaskInstance).where(TaskInstance.task_id == "each")
                            .where(TaskInstance.state != TI.REMOVED.value)
                            .values(state=TI.NONE.value))  # as a clear leaves them
            decided = update_dag_run(session, stand_in, run, now=NOW)
            found = dict(session.execute(select(TaskInstance.map_index, TaskInstance.state)
                                         .where(TaskInstance.task_id == "each")).all())
            assert {ti.map_index for ti in decided.schedulable} == {
                index for index, state in found.items() if state == "none"}
            return found

    with session_scope(session_factory) as session:
        create_dag_run(session, stand_in, run_type=DagRunType.MANUAL, logical_date=NOW,
                       data_interval=None, state=DagRunState.RUNNING, now=NOW)
        session.execute(update(TaskInstance).where(TaskInstance.task_id == "numbers")
                        .values(state=TI.SUCCESS.value))
    assert decide_with([1, 2, 3]) == {0: "none", 1: "none", 2: "none"}
    assert decide_with([1]) == {0: "none", 1: "removed", 2: "removed"}
    assert decide_with([1, 2, 3, 4, 5]) == {0: "none", 1: "removed", 2: "removed",
                                            3: "none", 4: "none"}


def test_a_mapped_task_is_pulled_as_a_lazy_sequence_in_map_index_order(
        session_factory: SessionFactory) -> None:
    from squall.execution import xcom

    dag = _dag()
    sync_dags(session_factory, dag)
    run_id = _run(session_factory, dag, 2)
    with session_scope(session_factory) as session:
        for index in (2, 0, 1):
            xcom.push(session, dag_id="mapsched", run_id=run_id, task_id="each",
                      key="return_value", value=f"v{index}", map_index=index)
        plain = xcom.pull(session, dag_id="mapsched", run_id=run_id, task_ids="each")
        lazy = xcom.pull(session, dag_id="mapsched", run_id=run_id, task_ids="each",
                         lazy=session_factory)
        both = xcom.pull(session, dag_id="mapsched", run_id=run_id,
                         task_ids=["each", "numbers"], lazy=session_factory)
        one = xcom.pull(session, dag_id="mapsched", run_id=run_id, task_ids="each",
                        map_indexes=1)
        some = xcom.pull(session, dag_id="mapsched", run_id=run_id, task_ids="each",
                         map_indexes=[2, 0])
    assert plain == ["v0", "v1", "v2"] and one == "v1" and some == ["v0", "v2"]
    assert isinstance(lazy, xcom.LazyXComSequence) and repr(lazy) == (
        "LazyXComSequence([3 items])")
    assert (len(lazy), lazy[1], lazy[-1], lazy[:2], list(lazy)) == (
        3, "v1", "v2", ["v0", "v1"], ["v0", "v1", "v2"])
    assert lazy == ["v0", "v1", "v2"] and both[0] == ["v0", "v1", "v2"] and both[1] is None
    assert xcom.serialize_value(lazy, dag_id="d", task_id="t", key="k") == '["v0", "v1", "v2"]'


def test_backfill_rerun_failed_tasks_clears_only_the_failed_instances(
        session_factory: SessionFactory) -> None:
    """Airflow's ``--rerun-failed-tasks`` clears the failed task instances: of a mapped
    task, the failed map indexes only."""
    from squall.runs.backfill import create_backfill, plan_backfill

    dag = _dag()
    sync_dags(session_factory, dag)
    run_id = _run(session_factory, dag, 2)
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.run_id == run_id).values(
            state=TI.SUCCESS.value))
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "each",
            TaskInstance.map_index == 1).values(state=TI.FAILED.value))
        session.execute(update(DagRun).where(DagRun.run_id == run_id).values(
            state=DagRunState.FAILED.value))
    day = datetime(2024, 1, 2, tzinfo=UTC)
    with session_scope(session_factory) as session:
        plan = plan_backfill(session, dag, day, day, rerun_failed_tasks=True,
                             reset_dagruns=False, task_ids=None)
        create_backfill(session, plan, max_active_runs=1, options={}, dag=dag, now=NOW)
    with session_scope(session_factory) as session:
        states = dict(session.execute(select(TaskInstance.map_index, TaskInstance.state).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "each")).all())
    assert states == {0: "success", 1: "none", 2: "success", 3: "success", 4: "success"}


def test_tasks_test_runs_one_map_index(session_factory: SessionFactory) -> None:
    """``run_task_locally`` (``tasks test``) with a map index runs that instance, with its
    item; an unmapped task has no map index."""
    import pytest

    from squall.common.errors import SquallError
    from squall.execution import xcom
    from squall.scheduler.local_run import ensure_dag_row, run_task_locally

    dag = _dag()
    with session_scope(session_factory) as session:
        ensure_dag_row(session, dag)
    summary = run_task_locally(dag, "each", session_factory, logical_date=NOW, map_index=3)
    assert (summary.task_id, summary.map_index, summary.state) == ("each", 3, "success")
    with session_scope(session_factory) as session:
        run_id = session.scalars(select(DagRun.run_id)).one()
        assert xcom.pull(session, dag_id="mapsched", run_id=run_id, task_ids="each") == [
            "40!"]
    with pytest.raises(SquallError, match="not mapped"):
        run_task_locally(dag, "numbers", session_factory, logical_date=NOW, map_index=0)


def test_a_run_whose_mapped_leaf_failed_names_the_task_once(
        session_factory: SessionFactory) -> None:
    dag = _dag()
    sync_dags(session_factory, dag)
    stand_in = deserialize_dag(serialize_dag(dag))
    run_id = _run(session_factory, dag, 2)
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.run_id == run_id).values(
            state=TI.SUCCESS.value))
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "each",
            TaskInstance.map_index.in_([1, 3])).values(state=TI.FAILED.value))
        run = session.scalars(select(DagRun).where(DagRun.run_id == run_id)).one()
        decided = update_dag_run(session, stand_in, run, now=NOW)
    assert (decided.state, decided.reason) == (DagRunState.FAILED, "task failure: each")
