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
