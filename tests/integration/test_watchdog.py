"""The scheduler's watch (squall.scheduler.watchdog) through SchedulerJob.run_once, with a
fake executor and rows set up directly, on SQLite and PostgreSQL: zombies, stuck in QUEUED,
adoption and the adoption timeout, database outages."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, states
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from squall.common.db import SessionFactory, session_scope
from squall.common.metrics import (
    ADOPTION_RESET,
    ORPHANS_CLEARED,
    QUEUED_TIMEOUT,
    SCHEDULER_OUTAGE,
    TASKS_ADOPTED,
    ZOMBIES_KILLED,
)
from squall.common.models import Job, TaskInstance, TaskInstanceKey, compare_and_set_state
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, JobState, TaskInstanceState
from squall.runs.run_creation import create_dag_run
from squall.scheduler.executor import CeleryExecutor, EventKind
from squall.scheduler.job import SchedulerJob
from squall.scheduler.state_fetcher import CeleryTaskState
from squall.sdk.dag import DAG
from tests.support.metrics import RecordingMetrics
from tests.support.scheduling import FakeExecutor, Noop, sync_dags

TI = TaskInstanceState
NOW = datetime(2024, 2, 10, 12, 0, tzinfo=UTC)


def make_settings(tmp_path: Path, **celery: Any) -> Settings:
    return Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
        "core": {"dags_folder": str(Path(__file__).parent)},  # where its DAGs are defined
        "scheduler": {"scheduler_idle_sleep_time": 0.01, "zombie_threshold": 300,
                      "task_queued_timeout": 600, "scheduler_health_check_threshold": 30},
        "celery": celery})


def setup_run(sf: SessionFactory, *task_ids: str, retries: int = 1) -> str:
    """A DAG (no schedule) of independent tasks, synced, with one RUNNING run."""
    dag = DAG("wd", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC))
    with dag:
        for task_id in task_ids:
            Noop(task_id=task_id, retries=retries)
    sync_dags(sf, dag, now=NOW)
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 2, 9, tzinfo=UTC),
                             data_interval=None, state=DagRunState.RUNNING,
                             external_trigger=True, now=NOW)
        return run.run_id


def add_job(sf: SessionFactory, job_type: str, heartbeat: datetime,
            state: JobState = JobState.RUNNING, hostname: str = "w1") -> int:
    with session_scope(sf) as session:
        job = Job(job_type=job_type, state=state.value, hostname=hostname, pid=1,
                  start_date=heartbeat, latest_heartbeat=heartbeat)
        session.add(job)
        session.flush()
        return job.id


def set_ti(sf: SessionFactory, run_id: str, task_id: str, **values: Any) -> None:
    values.setdefault("try_number", 1)
    values.setdefault("max_tries", 1)
    with session_scope(sf) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == "wd", TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id).values(**values))


def tis(sf: SessionFactory) -> dict[str, TaskInstance]:
    with session_scope(sf) as session:
        return {t.task_id: t for t in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == "wd"))}


def make_job(tmp_path: Path, sf: SessionFactory, executor: Any, metrics: RecordingMetrics,
             **celery: Any) -> SchedulerJob:
    return SchedulerJob(make_settings(tmp_path, **celery), sf, executor, clock=lambda: NOW,
                        metrics=metrics)


# --------------------------------------------------------------------------- zombies


def test_zombie_is_retried_with_the_reason_and_counted(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    run_id = setup_run(session_factory, "zombie", "alive", "done", "gone")
    stale = add_job(session_factory, "LocalTaskJob", NOW - timedelta(seconds=400))
    fresh = add_job(session_factory, "LocalTaskJob", NOW - timedelta(seconds=10))
    set_ti(session_factory, run_id, "zombie", state=TI.RUNNING, job_id=stale)
    set_ti(session_factory, run_id, "alive", state=TI.RUNNING, job_id=fresh)
    # finished just before the check: its supervisor's job is stale too, but it is not RUNNING
    set_ti(session_factory, run_id, "done", state=TI.SUCCESS, job_id=stale)
    set_ti(session_factory, run_id, "gone", state=TI.RUNNING, job_id=999_999, max_tries=0)
    metrics = RecordingMetrics()
    stats = make_job(tmp_path, session_factory, FakeExecutor(), metrics).run_once()

    rows = tis(session_factory)
    assert rows["zombie"].state == TI.UP_FOR_RETRY
    assert rows["zombie"].try_number == 1
    assert rows["zombie"].state_reason == (
        f"zombie: supervisor heartbeat older than 300 s (job {stale} on host w1)")
    assert rows["zombie"].next_retry_at is not None and rows["zombie"].next_retry_at > NOW
    assert rows["gone"].state == TI.FAILED
    assert rows["gone"].state_reason is not None and "job 999999 is gone" in rows[
        "gone"].state_reason
    assert rows["alive"].state == TI.RUNNING
    assert rows["done"].state == TI.SUCCESS and rows["done"].state_reason is None
    assert stats.zombies == 2
    assert metrics.counts[ZOMBIES_KILLED] == 2


def test_zombie_compare_and_set_checks_the_job_id(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    """A try restarted under another supervisor job meanwhile is not touched."""
    run_id = setup_run(session_factory, "t")
    set_ti(session_factory, run_id, "t", state=TI.RUNNING, job_id=7)
    key = TaskInstanceKey("wd", "t", run_id)
    with session_scope(session_factory) as session:
        assert not compare_and_set_state(session, key, expected=TI.RUNNING, try_number=1,
                                         new_state=TI.FAILED, expected_job_id=6)
        assert compare_and_set_state(session, key, expected=TI.RUNNING, try_number=1,
                                     new_state=TI.FAILED, expected_job_id=7)


# --------------------------------------------------------------------------- stuck in QUEUED


def test_queued_too_long_is_retried_and_revoked(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    run_id = setup_run(session_factory, "stuck", "recent")
    set_ti(session_factory, run_id, "stuck", state=TI.QUEUED, external_executor_id="old-id",
           queued_dttm=NOW - timedelta(seconds=700))
    set_ti(session_factory, run_id, "recent", state=TI.QUEUED, external_executor_id="new-id",
           queued_dttm=NOW - timedelta(seconds=60))
    fake = FakeExecutor()
    metrics = RecordingMetrics()
    stats = make_job(tmp_path, session_factory, fake, metrics).run_once()

    rows = tis(session_factory)
    assert rows["stuck"].state == TI.UP_FOR_RETRY
    assert rows["stuck"].state_reason == "queued for more than 600 s (task_queued_timeout)"
    assert rows["recent"].state == TI.QUEUED
    assert fake.revoked == ["old-id"]
    assert stats.queued_timeouts == 1
    assert metrics.counts[QUEUED_TIMEOUT] == 1


# --------------------------------------------------------------------------- adoption


def test_adopts_the_tasks_of_a_dead_scheduler_only(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    run_id = setup_run(session_factory, "q", "r", "live", "noid", "ended")
    dead = add_job(session_factory, "SchedulerJob", NOW - timedelta(seconds=60))
    stopped = add_job(session_factory, "SchedulerJob", NOW, state=JobState.SUCCESS)
    alive = add_job(session_factory, "SchedulerJob", NOW - timedelta(seconds=5))
    set_ti(session_factory, run_id, "q", state=TI.QUEUED, external_executor_id="e-q",
           queued_by_job_id=dead, queued_dttm=NOW)
    set_ti(session_factory, run_id, "r", state=TI.RUNNING, external_executor_id="e-r",
           queued_by_job_id=stopped, job_id=None)
    set_ti(session_factory, run_id, "live", state=TI.QUEUED, external_executor_id="e-live",
           queued_by_job_id=alive, queued_dttm=NOW)
    set_ti(session_factory, run_id, "noid", state=TI.QUEUED, external_executor_id=None,
           queued_by_job_id=dead, queued_dttm=NOW)
    set_ti(session_factory, run_id, "ended", state=TI.SUCCESS, external_executor_id="e-end",
           queued_by_job_id=dead)
    fake = FakeExecutor()
    metrics = RecordingMetrics()
    job = make_job(tmp_path, session_factory, fake, metrics)
    stats = job.run_once()

    assert sorted(fake.adopted) == ["e-q", "e-r"]
    assert set(fake.running) == {"e-q", "e-r"}
    rows = tis(session_factory)
    assert rows["q"].queued_by_job_id == job.job_id
    assert rows["r"].queued_by_job_id == job.job_id
    assert rows["live"].queued_by_job_id == alive
    assert rows["ended"].queued_by_job_id == dead
    assert rows["noid"].state == TI.SCHEDULED and rows["noid"].try_number == 1
    assert stats.adopted == 2
    assert metrics.counts[TASKS_ADOPTED] == 2
    assert metrics.counts[ORPHANS_CLEARED] == 1
    # a second scheduler finds nothing left to adopt
    other = make_job(tmp_path, session_factory, FakeExecutor(), RecordingMetrics())
    assert other.run_once().adopted == 0


class ScriptedFetcher:
    """A BulkStateFetcher stand-in answering the states a test sets."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.quiet = False

    def get_many(self, task_ids: Iterable[str]) -> dict[str, CeleryTaskState]:
        return {t: CeleryTaskState(self.states.get(t, states.PENDING), None) for t in task_ids}

    def end(self) -> None:
        pass


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_executor(fetcher: ScriptedFetcher, clock: Monotonic, timeout: float,
                  metrics: RecordingMetrics) -> CeleryExecutor:
    app = Celery("test-adoption", set_as_current=False)
    return CeleryExecutor(app, fetcher, operation_timeout=1, publish_max_retries=0,  # type: ignore[arg-type]
                          sync_parallelism=1, task_adoption_timeout=timeout, metrics=metrics,
                          monotonic=clock)


def test_executor_adoption_timeout_checks_every_adopted_task() -> None:
    """Adopted in no particular order of time: only the PENDING ones past the timeout."""
    fetcher, clock = ScriptedFetcher(), Monotonic()
    executor = make_executor(fetcher, clock, 100, RecordingMetrics())
    key = TaskInstanceKey("d", "t", "r")
    for task_id, at in [("late", 1090.0), ("a", 1000.0), ("ok", 1000.0), ("b", 1010.0)]:
        clock.now = at
        executor.track(key, 1, task_id, adopted=True)
    fetcher.states = {"ok": states.SUCCESS}
    clock.now = 1150.0
    executor.sync()
    events = {(e.external_executor_id, e.kind) for e in executor.get_event_buffer()}
    assert events == {("a", EventKind.ADOPTION_TIMED_OUT), ("b", EventKind.ADOPTION_TIMED_OUT),
                      ("ok", EventKind.SUCCESS)}
    assert set(executor.running) == {"late"}
    clock.now = 1200.0
    executor.sync()
    assert [(e.external_executor_id, e.kind) for e in executor.get_event_buffer()] == [
        ("late", EventKind.ADOPTION_TIMED_OUT)]
    executor.end()


def test_adopted_tasks_pending_past_the_timeout_are_queued_again(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    run_id = setup_run(session_factory, "pending", "started", "finished", "running")
    dead = add_job(session_factory, "SchedulerJob", NOW - timedelta(seconds=3600))
    for task_id, state in [("pending", TI.QUEUED), ("started", TI.QUEUED),
                           ("finished", TI.QUEUED), ("running", TI.RUNNING)]:
        set_ti(session_factory, run_id, task_id, state=state, queued_by_job_id=dead,
               external_executor_id=f"e-{task_id}", queued_dttm=NOW)
    fetcher, clock = ScriptedFetcher(), Monotonic()
    fetcher.states = {"e-started": states.STARTED, "e-finished": states.SUCCESS}
    metrics = RecordingMetrics()
    executor = make_executor(fetcher, clock, 100, metrics)
    job = make_job(tmp_path, session_factory, executor, metrics)
    assert job.run_once().adopted == 4
    clock.now += 101
    stats = job.run_once()

    rows = tis(session_factory)
    assert rows["pending"].state == TI.SCHEDULED
    assert rows["pending"].try_number == 1
    assert rows["pending"].external_executor_id is None
    assert rows["pending"].state_reason is not None
    assert "task_adoption_timeout" in rows["pending"].state_reason
    assert rows["started"].state == TI.QUEUED  # seen alive: no longer timed
    assert rows["finished"].state == TI.QUEUED  # the worker records its own outcome
    assert rows["running"].state == TI.RUNNING  # left to zombie detection
    assert stats.adoption_resets == 1
    assert metrics.counts[ADOPTION_RESET] == 1
    job.stop()
    executor.end()


# --------------------------------------------------------------------------- outages


def test_database_outage_is_logged_once_and_survived(
        tmp_path: Path, session_factory: SessionFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = RecordingMetrics()
    job = make_job(tmp_path, session_factory, FakeExecutor(), metrics)
    real = job.run_once
    failures: list[Exception] = [
        OperationalError("SELECT 1", {}, Exception("connection refused")),
        DBAPIError("SELECT 1", {}, Exception("server closed the connection"),
                   connection_invalidated=True),
        OperationalError("SELECT 1", {}, Exception("connection refused")),
    ]

    def flaky() -> Any:
        if failures:
            raise failures.pop(0)
        return real()

    job.run_once = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="squall.scheduler.job"):
        job.run(num_runs=5)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert "database unreachable" in errors[0] and "retrying with backoff" in errors[0]
    assert "reachable again" in errors[1]
    assert metrics.counts[SCHEDULER_OUTAGE] == 1
    with session_scope(session_factory) as session:
        assert session.scalar(select(Job.state).where(Job.id == job.job_id)) == "success"


def test_other_database_errors_still_end_the_loop(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    job = make_job(tmp_path, session_factory, FakeExecutor(), RecordingMetrics())

    def broken() -> Any:
        raise DBAPIError("INSERT", {}, Exception("integrity"), connection_invalidated=False)

    job.run_once = broken  # type: ignore[method-assign]
    with pytest.raises(DBAPIError):
        job.run(num_runs=1)
