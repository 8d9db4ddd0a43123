"""The deployment's DAG defaults (squall.sdk.dag_defaults): ``[scheduler] catchup_by_default``,
``[core] max_active_runs_per_dag``, ``max_active_tasks_per_dag``, ``default_task_retries`` and
``default_timezone`` apply to a DAG file that does not say, as the DAG processor parses it, as
the scheduler schedules it and as a worker or ``squall dags test`` loads it. On SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import (
    DagModel,
    DagRun,
    SerializedDagModel,
    TaskInstance,
    TaskInstanceKey,
)
from squall.common.settings import Settings
from squall.dag_processing.dagbag import DagBag
from squall.dag_processing.serialization import deserialize_dag
from squall.scheduler.dag_processor import parse_and_sync_once
from squall.scheduler.job import SchedulerJob
from squall.sdk.dag import DAG
from squall.worker.dag_file_cache import DagFileCache, load_task
from tests.support.scheduling import FakeExecutor

#: says nothing about catchup, max_active_runs / max_active_tasks, retries or its time zone
SILENT_DAG = '''
import datetime
from squall import DAG, EmptyOperator

with DAG("silent", schedule="0 2 * * *", start_date=datetime.datetime(2024, 1, 1)):
    for i in range(3):
        EmptyOperator(task_id=f"t{i}")
'''

#: says everything the settings could otherwise decide
EXPLICIT_DAG = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("explicit", schedule="0 2 * * *", catchup=True, max_active_runs=4,
         max_active_tasks=3, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    for i in range(3):
        EmptyOperator(task_id=f"t{i}", retries=1)
'''


def settings_for(db_url: str, home: Path, **core: Any) -> Settings:
    scheduler = {"scheduler_idle_sleep_time": 0.05,
                 "catchup_by_default": core.pop("catchup_by_default", True)}
    return Settings.load(env={"SQUALL_HOME": str(home)}, overrides={
        "database": {"sql_alchemy_conn": db_url},
        # the DAGs run at once (new DAGs start paused by default, as in Airflow)
        "core": {"dags_folder": str(home / "dags"), "dagbag_import_timeout": 20,
                 "dags_are_paused_at_creation": False, **core},
        "scheduler": scheduler,
    })


def write_dags(home: Path, *texts: str) -> Path:
    folder = home / "dags"
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"dag_{i}.py").write_text(text)
    return folder


def schedule(settings: Settings, sf: SessionFactory, fake: FakeExecutor | None = None,
             loops: int = 3) -> FakeExecutor:
    """Parse the DAG folder as the DAG processor does, then run scheduler loops."""
    parse_and_sync_once(settings, sf)
    fake = fake or FakeExecutor()
    job = SchedulerJob(settings, sf, fake)
    for _ in range(loops):
        job.run_once()
    return fake


def runs(sf: SessionFactory, dag_id: str) -> list[DagRun]:
    with session_scope(sf) as session:
        return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                    .order_by(DagRun.logical_date)))


def serialized(sf: SessionFactory, dag_id: str) -> DAG:
    with session_scope(sf) as session:
        row = session.get_one(SerializedDagModel, dag_id)
        return deserialize_dag(row.data)


# --------------------------------------------------------------------------- each key


def test_catchup_by_default_false_creates_only_the_latest_run(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, catchup_by_default=False)
    write_dags(tmp_path, SILENT_DAG, EXPLICIT_DAG)
    schedule(settings, session_factory, loops=1)

    [run] = runs(session_factory, "silent")  # not every day since 2024-01-01
    assert run.logical_date >= datetime.now(UTC) - timedelta(days=2)
    assert serialized(session_factory, "silent").catchup is False
    # a DAG that says catchup=True catches up whatever the setting
    assert len(runs(session_factory, "explicit")) == 4


def test_max_active_runs_per_dag_limits_the_runs_of_a_dag(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, max_active_runs_per_dag=2)
    write_dags(tmp_path, SILENT_DAG, EXPLICIT_DAG)
    schedule(settings, session_factory)

    assert len(runs(session_factory, "silent")) == 2  # catching up, two at a time
    assert len(runs(session_factory, "explicit")) == 4  # it says max_active_runs=4
    with session_scope(session_factory) as session:
        assert session.get_one(DagModel, "silent").max_active_runs == 2


def test_max_active_tasks_per_dag_limits_the_tasks_queued(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, max_active_tasks_per_dag=2)
    write_dags(tmp_path, SILENT_DAG.replace("start_date=", "max_active_runs=1, start_date="))
    fake = schedule(settings, session_factory)

    # one run of three independent tasks: two may be in flight at a time
    assert len(runs(session_factory, "silent")) == 1
    assert len(fake.published) == 2
    assert serialized(session_factory, "silent").max_active_tasks == 2


def test_default_task_retries_gives_tasks_their_tries(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, default_task_retries=2)
    write_dags(tmp_path, SILENT_DAG, EXPLICIT_DAG)
    schedule(settings, session_factory, loops=1)

    with session_scope(session_factory) as session:
        max_tries = {(ti.dag_id, ti.task_id): ti.max_tries
                     for ti in session.scalars(select(TaskInstance))}
    assert {v for (dag_id, _), v in max_tries.items() if dag_id == "silent"} == {2}
    assert {v for (dag_id, _), v in max_tries.items() if dag_id == "explicit"} == {1}


def test_default_timezone_places_naive_dates_and_the_schedule(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, default_timezone="Europe/Amsterdam")
    write_dags(tmp_path, SILENT_DAG, EXPLICIT_DAG)
    parse_and_sync_once(settings, session_factory)

    dag = serialized(session_factory, "silent")
    assert dag.timezone.name == "Europe/Amsterdam"
    assert dag.start_date == datetime(2023, 12, 31, 23, 0, tzinfo=UTC)  # 2024-01-01 00:00 CET
    with session_scope(session_factory) as session:
        # the first 02:00 tick in Amsterdam, 01:00 UTC in winter
        assert session.get_one(DagModel, "silent").next_dagrun == datetime(
            2024, 1, 1, 1, 0, tzinfo=UTC)
        # an aware start_date keeps its own zone
        assert session.get_one(DagModel, "explicit").next_dagrun == datetime(
            2024, 1, 1, 2, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- agreement


def test_worker_and_dags_test_load_the_dag_the_scheduler_schedules(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, catchup_by_default=False,
                            max_active_runs_per_dag=3, max_active_tasks_per_dag=5,
                            default_task_retries=4, default_timezone="Asia/Tokyo")
    write_dags(tmp_path, SILENT_DAG)
    parse_and_sync_once(settings, session_factory)

    def seen(dag: DAG) -> tuple[Any, ...]:
        return (dag.catchup, dag.max_active_runs, dag.max_active_tasks, dag.timezone.name,
                dag.start_date, [t.retries for t in dag.tasks])

    scheduler_view = seen(serialized(session_factory, "silent"))
    assert scheduler_view == (False, 3, 5, "Asia/Tokyo",
                              datetime(2023, 12, 31, 15, 0, tzinfo=UTC), [4, 4, 4])
    key = TaskInstanceKey("silent", "t0", "scheduled__x")
    for worker_task in (load_task(settings, "DAGS_FOLDER/dag_0.py", key),
                        DagFileCache().load_task(settings, "DAGS_FOLDER/dag_0.py", key)):
        assert worker_task.dag is not None
        assert seen(worker_task.dag) == scheduler_view
    dags_test_dag = DagBag.from_settings(settings).get_dag("silent")
    assert dags_test_dag is not None
    assert seen(dags_test_dag) == scheduler_view
