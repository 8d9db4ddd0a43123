"""The scheduler stops tracking Celery tasks whose try is over in the database, on SQLite
and PostgreSQL: from the task instances a run's decision reads
(``squall.scheduler.watchdog.tries_over_in``) and, for runs not decided, from the watch's
query (``squall.scheduler.watchdog.tries_over``).

A try that ends normally stores no Celery result (ADR 22), so its Celery task stays PENDING
for ever; the executor's ``running`` would keep its id, and each such id would hold one of
``[core] parallelism``'s slots until the scheduler restarts (with enough of them, it queues
nothing more)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import TaskInstance, TaskInstanceKey
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.runs.run_creation import create_dag_run
from squall.scheduler.job import SchedulerJob
from squall.scheduler.watchdog import tries_over
from squall.sdk.dag import DAG
from tests.support.scheduling import FakeExecutor, Noop, sync_dags

TI = TaskInstanceState
NOW = datetime(2024, 2, 10, 12, 0, tzinfo=UTC)
TASKS = ("queued", "running", "done", "requeued", "next_try", "ready")


def setup_run(sf: SessionFactory) -> str:
    dag = DAG("track", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC))
    with dag:
        for task_id in TASKS:
            Noop(task_id=task_id)
    sync_dags(sf, dag, now=NOW)
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 2, 9, tzinfo=UTC),
                             data_interval=None, state=DagRunState.RUNNING,
                             external_trigger=True, now=NOW)
        return run.run_id


def set_ti(sf: SessionFactory, run_id: str, task_id: str, **values: Any) -> None:
    values.setdefault("try_number", 1)
    values.setdefault("max_tries", 0)
    with session_scope(sf) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == "track", TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id).values(**values))


def key(run_id: str, task_id: str) -> TaskInstanceKey:
    return TaskInstanceKey("track", task_id, run_id)


def in_flight_rows(sf: SessionFactory, run_id: str) -> dict[str, tuple[TaskInstanceKey, int]]:
    """Rows: queued / running under their ids (in flight), done (SUCCESS, its result never
    read), requeued (QUEUED again under a new id), next_try (try 2 now); the executor
    tracks all five under the ids it knows."""
    set_ti(sf, run_id, "queued", state=TI.QUEUED, external_executor_id="c-queued",
           queued_dttm=NOW)
    set_ti(sf, run_id, "running", state=TI.RUNNING, external_executor_id="c-running")
    set_ti(sf, run_id, "done", state=TI.SUCCESS, external_executor_id="c-done")
    set_ti(sf, run_id, "requeued", state=TI.QUEUED, external_executor_id="c-requeued-new",
           queued_dttm=NOW)
    set_ti(sf, run_id, "next_try", state=TI.RUNNING, external_executor_id="c-next-try",
           try_number=2, max_tries=1)
    return {"c-queued": (key(run_id, "queued"), 1), "c-running": (key(run_id, "running"), 1),
            "c-done": (key(run_id, "done"), 1),
            "c-requeued-old": (key(run_id, "requeued"), 1),
            "c-next-try": (key(run_id, "next_try"), 1)}


def test_tries_over_are_the_ids_no_row_waits_for(session_factory: SessionFactory) -> None:
    run_id = setup_run(session_factory)
    tracked = in_flight_rows(session_factory, run_id)
    tracked["c-gone"] = (TaskInstanceKey("track", "no_such_task", run_id), 1)
    with session_scope(session_factory) as session:
        over = tries_over(session, tracked)
    assert sorted(over) == ["c-done", "c-gone", "c-next-try", "c-requeued-old"]
    with session_scope(session_factory) as session:
        assert tries_over(session, {}) == []


def settings_for(tmp_path: Path, *, parallelism: int, zombie_detection_interval: float
                 ) -> Settings:
    return Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
        "core": {"dags_folder": str(Path(__file__).parent), "parallelism": parallelism},
        "scheduler": {"task_queued_timeout": 600, "zombie_threshold": 300,
                      "zombie_detection_interval": zombie_detection_interval}})


def test_a_try_over_without_a_celery_result_frees_its_parallelism_slot(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    """Parallelism 5, five tracked ids of which three are tries already over (a try that
    ends normally stores no Celery result: ADR 22): the first loop lets go of the three
    and queues the SCHEDULED task instance."""
    run_id = setup_run(session_factory)
    fake = FakeExecutor()
    fake.running.update(in_flight_rows(session_factory, run_id))
    set_ti(session_factory, run_id, "ready", state=TI.SCHEDULED)
    settings = settings_for(tmp_path, parallelism=5, zombie_detection_interval=0.001)
    job = SchedulerJob(settings, session_factory, fake, clock=lambda: NOW)
    first = job.run_once()
    assert first.tis_queued == 1
    with session_scope(session_factory) as session:
        ready = session.get(TaskInstance, {"dag_id": "track", "task_id": "ready",
                                           "run_id": run_id, "map_index": -1})
        assert ready is not None and ready.state == TI.QUEUED
        assert set(fake.running) == {"c-queued", "c-running", ready.external_executor_id}


def test_the_run_decision_lets_go_of_tries_over_without_the_watch(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    """The watch runs at the first loop only (a long zombie_detection_interval): a try that
    ends after it is let go of by the next loop's decision of its run, from the task
    instances the decision reads, and its slot is used in that same loop."""
    run_id = setup_run(session_factory)
    fake = FakeExecutor()
    set_ti(session_factory, run_id, "queued", state=TI.QUEUED, external_executor_id="c-queued",
           queued_dttm=NOW)
    set_ti(session_factory, run_id, "running", state=TI.RUNNING,
           external_executor_id="c-running")
    fake.running.update({"c-queued": (key(run_id, "queued"), 1),
                         "c-running": (key(run_id, "running"), 1)})
    settings = settings_for(tmp_path, parallelism=2, zombie_detection_interval=3600)
    job = SchedulerJob(settings, session_factory, fake, clock=lambda: NOW)
    job.run_once()  # decides the run, runs the watch: both tries are in flight
    assert set(fake.running) == {"c-queued", "c-running"}

    set_ti(session_factory, run_id, "running", state=TI.SUCCESS,
           external_executor_id="c-running")  # what a worker records
    set_ti(session_factory, run_id, "ready", state=TI.SCHEDULED)
    second = job.run_once()
    assert set(fake.running) - {"c-queued"} == {t.external_executor_id for t in fake.published}
    assert "c-running" not in fake.running
    assert second.tis_queued == 1  # the slot it held is used in the same loop
