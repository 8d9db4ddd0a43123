"""The scheduler loop (squall.scheduler.job) with a fake executor, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagModel, DagRun, Job, TaskInstance, TaskInstanceKey
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, JobState, TaskInstanceState
from squall.runs.run_creation import create_dag_run
from squall.scheduler.dag_runs import REDECIDE_AFTER_SECONDS
from squall.scheduler.executor import EventKind
from squall.scheduler.job import (
    FAILED_BEFORE_START,
    WAKE_COALESCE_SECONDS,
    LoopStats,
    SchedulerJob,
)
from squall.sdk.dag import DAG
from tests.support.scheduling import FakeExecutor, Noop, sync_dags
from tests.support.services import wait_until

TI = TaskInstanceState
NOW = datetime(2024, 2, 10, 12, 0, tzinfo=UTC)
MIDNIGHT_3_DAYS_AGO = datetime(2024, 2, 7, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


#: the DAGs of these tests are defined in this module: its folder is their DAG folder (a
#: task-run command names a file under it)
DAGS_FOLDER = Path(__file__).parent


def make_settings(tmp_path: Path, **scheduler: Any) -> Settings:
    scheduler.setdefault("scheduler_idle_sleep_time", 0.05)
    scheduler.setdefault("scheduler_heartbeat_sec", 0.1)
    return Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
        "core": {"dags_folder": str(DAGS_FOLDER)}, "scheduler": scheduler})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture
def job(tmp_path: Path, session_factory: SessionFactory, fake: FakeExecutor,
        clock: Clock) -> SchedulerJob:
    return SchedulerJob(make_settings(tmp_path), session_factory, fake, clock=clock)


def runs(sf: SessionFactory, dag_id: str) -> list[DagRun]:
    with session_scope(sf) as session:
        return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                    .order_by(DagRun.logical_date)))


def tis(sf: SessionFactory, dag_id: str) -> dict[str, TaskInstance]:
    with session_scope(sf) as session:
        return {t.task_id: t for t in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id))}


def daily(dag_id: str, **kwargs: Any) -> DAG:
    dag = DAG(dag_id, schedule="@daily", start_date=MIDNIGHT_3_DAYS_AGO, catchup=True,
              **kwargs)
    with dag:
        Noop(task_id="only")
    return dag


def manual_run(sf: SessionFactory, dag: DAG, day: int = 9) -> str:
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 2, day, tzinfo=UTC),
                             data_interval=None, state=DagRunState.QUEUED,
                             external_trigger=True, now=NOW)
        return run.run_id


# --------------------------------------------------------------------------- creating runs


def test_due_runs_are_created_once_each(job: SchedulerJob, session_factory: SessionFactory,
                                        fake: FakeExecutor) -> None:
    sync_dags(session_factory, daily("cat"), now=NOW)
    stats = job.run_once()
    assert stats.runs_created == 3
    job.run_once()
    found = runs(session_factory, "cat")
    assert [r.run_id for r in found] == [
        f"scheduled__2024-02-{d:02d}T00:00:00+00:00" for d in (7, 8, 9)]
    assert {r.run_type for r in found} == {DagRunType.SCHEDULED}
    first = found[0]
    assert (first.data_interval_start, first.data_interval_end) == (
        datetime(2024, 2, 7, tzinfo=UTC), datetime(2024, 2, 8, tzinfo=UTC))
    assert {r.state for r in found} == {DagRunState.RUNNING}
    assert len(fake.published) == 3  # each run's task queued and published once
    with session_scope(session_factory) as session:
        dm = session.get(DagModel, "cat")
        assert dm is not None
        assert dm.next_dagrun == datetime(2024, 2, 10, tzinfo=UTC)
        assert dm.next_dagrun_create_after == datetime(2024, 2, 11, tzinfo=UTC)


def test_next_run_is_created_when_due(job: SchedulerJob, session_factory: SessionFactory,
                                      clock: Clock) -> None:
    sync_dags(session_factory, daily("later"), now=NOW)
    job.run_once()
    assert len(runs(session_factory, "later")) == 3
    clock.now = datetime(2024, 2, 11, 0, 1, tzinfo=UTC)
    assert job.run_once().runs_created == 1
    assert runs(session_factory, "later")[-1].logical_date == datetime(2024, 2, 10, tzinfo=UTC)


def test_max_active_runs(job: SchedulerJob, session_factory: SessionFactory) -> None:
    sync_dags(session_factory, daily("one_at_a_time", max_active_runs=1), now=NOW)
    job.run_once()
    job.run_once()
    [only] = runs(session_factory, "one_at_a_time")
    assert only.state == DagRunState.RUNNING
    with session_scope(session_factory) as session:
        session.execute(update(DagRun).where(DagRun.id == only.id)
                        .values(state=DagRunState.SUCCESS.value))
    job.run_once()
    assert [r.state for r in runs(session_factory, "one_at_a_time")] == [
        DagRunState.SUCCESS, DagRunState.RUNNING]


def test_manual_runs_wait_for_room_under_max_active_runs(
        job: SchedulerJob, session_factory: SessionFactory) -> None:
    dag = DAG("manual_limit", schedule=None, start_date=MIDNIGHT_3_DAYS_AGO,
              max_active_runs=1)
    with dag:
        Noop(task_id="only")
    sync_dags(session_factory, dag, now=NOW)
    manual_run(session_factory, dag, day=8)
    manual_run(session_factory, dag, day=9)
    job.run_once()
    assert [r.state for r in runs(session_factory, "manual_limit")] == [
        DagRunState.RUNNING, DagRunState.QUEUED]


def test_end_date(job: SchedulerJob, session_factory: SessionFactory) -> None:
    sync_dags(session_factory, daily("ends", end_date=datetime(2024, 2, 8, tzinfo=UTC)),
              now=NOW)
    job.run_once()
    job.run_once()
    assert [r.logical_date.day for r in runs(session_factory, "ends")] == [7, 8]
    with session_scope(session_factory) as session:
        dm = session.get(DagModel, "ends")
        assert dm is not None and dm.next_dagrun is None
        assert dm.next_dagrun_create_after is None


def test_paused_dag_gets_no_runs(job: SchedulerJob, session_factory: SessionFactory) -> None:
    sync_dags(session_factory, daily("sleepy"), paused=True, now=NOW)
    assert job.run_once().runs_created == 0
    assert runs(session_factory, "sleepy") == []


# --------------------------------------------------------------------------- manual runs


def test_manual_run_starts_and_its_roots_are_queued(
        job: SchedulerJob, session_factory: SessionFactory, fake: FakeExecutor) -> None:
    dag = DAG("manual", schedule=None, start_date=MIDNIGHT_3_DAYS_AGO)
    with dag:
        Noop(task_id="root1", queue="etl") >> Noop(task_id="child")
        Noop(task_id="root2")
    sync_dags(session_factory, dag, now=NOW)
    run_id = manual_run(session_factory, dag)
    assert runs(session_factory, "manual")[0].state == DagRunState.QUEUED

    stats = job.run_once()
    assert (stats.runs_started, stats.tis_scheduled, stats.tis_queued) == (1, 2, 2)
    [run] = runs(session_factory, "manual")
    assert run.state == DagRunState.RUNNING and run.start_date == NOW
    rows = tis(session_factory, "manual")
    assert {t: (r.state, r.try_number) for t, r in rows.items()} == {
        "root1": (TI.QUEUED, 1), "root2": (TI.QUEUED, 1), "child": (TI.NONE, 0)}
    assert sorted(t.key.task_id for t in fake.published) == ["root1", "root2"]
    by_task = {t.key.task_id: t for t in fake.published}
    assert by_task["root1"].command.queue == "etl"
    assert by_task["root1"].command.run_id == run_id
    assert rows["root1"].external_executor_id == by_task["root1"].external_executor_id
    assert rows["root1"].queued_by_job_id == job.job_id

    # the worker runs root1; on the next loop its child is queued
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.task_id == "root1")
                        .values(state=TI.SUCCESS.value))
    fake.finish(["root1"])
    job.run_once()
    assert tis(session_factory, "manual")["child"].state == TI.QUEUED


def test_failed_publish_is_retried_next_loop(job: SchedulerJob,
                                             session_factory: SessionFactory,
                                             fake: FakeExecutor) -> None:
    dag = DAG("flaky_broker", schedule=None, start_date=MIDNIGHT_3_DAYS_AGO)
    with dag:
        Noop(task_id="only")
    sync_dags(session_factory, dag, now=NOW)
    run_id = manual_run(session_factory, dag)
    from squall.common.models import TaskInstanceKey

    fake.fail_keys.add(TaskInstanceKey("flaky_broker", "only", run_id))
    assert job.run_once().publish_failed == 1
    row = tis(session_factory, "flaky_broker")["only"]
    assert (row.state, row.try_number) == (TI.SCHEDULED, 1)
    assert row.state_reason is not None and "broker unreachable" in row.state_reason
    fake.fail_keys.clear()
    job.run_once()
    row = tis(session_factory, "flaky_broker")["only"]
    assert (row.state, row.try_number) == (TI.QUEUED, 1)
    assert [t.try_number for t in fake.published] == [1]


# --------------------------------------------------------------------------- executor events


def test_celery_failure_of_a_queued_try(job: SchedulerJob, session_factory: SessionFactory,
                                        fake: FakeExecutor, clock: Clock) -> None:
    dag = DAG("lost", schedule=None, start_date=MIDNIGHT_3_DAYS_AGO)
    with dag:
        Noop(task_id="retried", retries=1, retry_delay=timedelta(minutes=5))
        Noop(task_id="started")
    sync_dags(session_factory, dag, now=NOW)
    manual_run(session_factory, dag)
    job.run_once()
    by_task = {t.key.task_id: t for t in fake.published}
    # "started" reached the worker, which moved it on; "retried" never left QUEUED
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.task_id == "started")
                        .values(state=TI.RUNNING.value))
    fake.emit(by_task["retried"], EventKind.FAILED, "WorkerLostError: worker died")
    fake.emit(by_task["started"], EventKind.FAILED, "whatever")
    stats = job.run_once()
    assert stats.tis_failed_by_events == 1
    rows = tis(session_factory, "lost")
    assert rows["started"].state == TI.RUNNING
    retried = rows["retried"]
    assert (retried.state, retried.try_number) == (TI.UP_FOR_RETRY, 1)
    assert retried.state_reason == f"{FAILED_BEFORE_START}: WorkerLostError: worker died"
    assert retried.next_retry_at == NOW + timedelta(minutes=5)

    # not before the retry delay; then try 2, whose loss fails the task for good
    job.run_once()
    assert tis(session_factory, "lost")["retried"].state == TI.UP_FOR_RETRY
    clock.now = NOW + timedelta(minutes=6)
    job.run_once()
    second = [t for t in fake.published if t.key.task_id == "retried"][-1]
    assert second.try_number == 2
    assert tis(session_factory, "lost")["retried"].state == TI.QUEUED
    fake.emit(second, EventKind.FAILED, None)
    job.run_once()
    final = tis(session_factory, "lost")["retried"]
    assert (final.state, final.try_number) == (TI.FAILED, 2)
    assert final.state_reason == f"{FAILED_BEFORE_START}: no details"
    # a stale event for try 1 changes nothing
    fake.emit(by_task["retried"], EventKind.FAILED, "late")
    assert job.run_once().tis_failed_by_events == 0


def test_success_event_needs_nothing(job: SchedulerJob, session_factory: SessionFactory,
                                     fake: FakeExecutor) -> None:
    dag = DAG("fine", schedule=None, start_date=MIDNIGHT_3_DAYS_AGO)
    with dag:
        Noop(task_id="only")
    sync_dags(session_factory, dag, now=NOW)
    manual_run(session_factory, dag)
    job.run_once()
    fake.emit(fake.published[0], EventKind.SUCCESS)
    stats = job.run_once()
    assert stats.events == 1 and stats.tis_failed_by_events == 0
    assert tis(session_factory, "fine")["only"].state == TI.QUEUED


# --------------------------------------------------------------------------- lifecycle


def job_row(sf: SessionFactory, job_id: int | None) -> Job:
    with session_scope(sf) as session:
        row = session.get(Job, job_id)
        assert row is not None
        return row


def test_stop_ends_run_cleanly(job: SchedulerJob, session_factory: SessionFactory,
                               fake: FakeExecutor) -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            job.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        wait_until(lambda: fake.syncs >= 3, 30, message="three scheduler loops")
        row = job_row(session_factory, job.job_id)
        assert (row.job_type, row.state) == ("SchedulerJob", JobState.RUNNING)
        assert row.pid == os.getpid() and row.hostname
    finally:
        job.stop()
        thread.join(30)
    assert not thread.is_alive() and not errors
    row = job_row(session_factory, job.job_id)
    assert row.state == JobState.SUCCESS and row.end_date is not None
    assert fake.ended


def test_sigterm_ends_run_cleanly(tmp_path: Path, session_factory: SessionFactory,
                                  fake: FakeExecutor) -> None:
    job = SchedulerJob(make_settings(tmp_path), session_factory, fake)

    def fallback(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("run() did not install its SIGTERM handler")

    previous = signal.signal(signal.SIGTERM, fallback)
    try:
        def send_when_looping() -> None:
            wait_until(lambda: fake.syncs >= 2, 30, message="two scheduler loops")
            os.kill(os.getpid(), signal.SIGTERM)

        sender = threading.Thread(target=send_when_looping, daemon=True)
        sender.start()
        job.run()
        sender.join(5)
        assert signal.getsignal(signal.SIGTERM) is fallback  # put back
    finally:
        signal.signal(signal.SIGTERM, previous)
    row = job_row(session_factory, job.job_id)
    assert row.state == JobState.SUCCESS and row.end_date is not None


def test_num_runs(job: SchedulerJob, session_factory: SessionFactory,
                  fake: FakeExecutor) -> None:
    job.run(num_runs=3)
    assert fake.syncs == 3
    assert job_row(session_factory, job.job_id).state == JobState.SUCCESS


def test_heartbeat(job: SchedulerJob, session_factory: SessionFactory, clock: Clock) -> None:
    job.run_once()
    first = job_row(session_factory, job.job_id).latest_heartbeat
    clock.now = NOW + timedelta(minutes=1)

    def beat() -> bool:
        job.run_once()
        return job_row(session_factory, job.job_id).latest_heartbeat == clock.now

    wait_until(beat, 10, message="a heartbeat at the new time")
    assert first == NOW


# --------------------------------------------------------------------------- cost


@contextmanager
def count_statements(sf: SessionFactory) -> Iterator[list[str]]:
    engine = sf.kw["bind"]
    assert isinstance(engine, Engine)
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in {"SELECT", "UPDATE", "INSERT",
                                                             "DELETE", "WITH"}:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def test_loop_statement_count_is_bounded(job: SchedulerJob,
                                         session_factory: SessionFactory,
                                         fake: FakeExecutor) -> None:
    dag = DAG("wide", schedule=None, start_date=MIDNIGHT_3_DAYS_AGO, max_active_tasks=200)
    with dag:
        for i in range(100):
            Noop(task_id=f"t{i:03d}")
    sync_dags(session_factory, dag, now=NOW)
    job.run_once()  # creates the job row
    manual_run(session_factory, dag)
    with count_statements(session_factory) as first:
        stats = job.run_once()
    assert (stats.runs_started, stats.tis_scheduled, stats.tis_queued) == (1, 100, 32)
    assert len(first) < 40, "\n".join(first)
    with count_statements(session_factory) as second:
        stats = job.run_once()
    assert stats.tis_queued == 0  # parallelism 32: the executor is full
    assert len(second) < 40, "\n".join(second)
    fake.finish()
    with count_statements(session_factory) as third:
        assert job.run_once().tis_queued == 32
    assert len(third) < 40, "\n".join(third)


def test_queued_runs_of_a_full_dag_do_not_starve_others(
        tmp_path: Path, session_factory: SessionFactory, fake: FakeExecutor,
        clock: Clock) -> None:
    job = SchedulerJob(make_settings(tmp_path), session_factory, fake, clock=clock,
                       max_runs_per_loop=2)
    full = DAG("full", schedule=None, start_date=MIDNIGHT_3_DAYS_AGO, max_active_runs=1)
    free = DAG("free", schedule=None, start_date=MIDNIGHT_3_DAYS_AGO)
    for dag in (full, free):
        with dag:
            Noop(task_id="only")
    sync_dags(session_factory, full, free, now=NOW)
    for day in (7, 8, 9, 10):
        manual_run(session_factory, full, day=day)
    manual_run(session_factory, free, day=12)  # last in logical date order
    job.run_once()
    job.run_once()
    assert [r.state for r in runs(session_factory, "free")] == [DagRunState.RUNNING]
    assert [r.state for r in runs(session_factory, "full")] == [
        DagRunState.RUNNING, DagRunState.QUEUED, DagRunState.QUEUED, DagRunState.QUEUED]


def decided_at(sf: SessionFactory, dag_id: str) -> list[datetime | None]:
    return [r.last_scheduling_decision and r.last_scheduling_decision.replace(tzinfo=UTC)
            for r in runs(sf, dag_id)]


def test_only_runs_whose_task_instances_changed_are_decided_again(
        job: SchedulerJob, session_factory: SessionFactory, fake: FakeExecutor,
        clock: Clock) -> None:
    dags = []
    for name in ("calm", "busy"):
        dag = DAG(name, schedule=None, start_date=MIDNIGHT_3_DAYS_AGO)
        with dag:
            Noop(task_id="a") >> Noop(task_id="b")
        dags.append(dag)
    sync_dags(session_factory, *dags, now=NOW)
    for dag in dags:
        manual_run(session_factory, dag)
    job.run_once()  # both runs start; their roots are queued
    clock.now = NOW + timedelta(seconds=0.5)
    job.run_once()  # decided again as running runs, which the memo had not seen yet
    first = {d: decided_at(session_factory, d) for d in ("calm", "busy")}

    # nothing changed: neither run is decided again
    clock.now = NOW + timedelta(seconds=1)
    job.run_once()
    assert {d: decided_at(session_factory, d) for d in ("calm", "busy")} == first

    # busy's root finishes: only busy is decided, and its next task is queued
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.dag_id == "busy",
                                                   TaskInstance.task_id == "a")
                        .values(state=TI.SUCCESS.value, updated_at=clock.now))
    clock.now = NOW + timedelta(seconds=1.5)
    job.run_once()
    assert decided_at(session_factory, "calm") == first["calm"]
    assert decided_at(session_factory, "busy") == [clock.now]
    assert tis(session_factory, "busy")["b"].state == TI.QUEUED

    # after REDECIDE_AFTER_SECONDS an unchanged run is decided all the same
    clock.now = NOW + timedelta(seconds=0.5 + REDECIDE_AFTER_SECONDS)
    job.run_once()
    assert decided_at(session_factory, "calm") == [clock.now]


class OneWakeUp:
    """A waker that reports a change at once."""

    def wait(self, timeout: float, *, relaxed: bool = False) -> bool:
        return True

    def notices(self) -> list[str] | None:
        return None

    def close(self) -> None:
        pass


@pytest.mark.parametrize("in_flight, coalesced", [(0, False), (1, False), (2, True)])
def test_a_wake_up_waits_briefly_for_more_only_with_several_tries_in_flight(
        tmp_path: Path, session_factory: SessionFactory, fake: FakeExecutor,
        in_flight: int, coalesced: bool) -> None:
    job = SchedulerJob(make_settings(tmp_path), session_factory, fake, waker=OneWakeUp())
    for i in range(in_flight):
        fake.running[f"celery-{i}"] = (TaskInstanceKey("d", f"t{i}", "r"), 1)
    waits: list[float | None] = []
    job._stop = type("Recorder", (), {"wait": lambda _self, t=None: waits.append(t),
                                       "is_set": lambda _self: False})()
    job.idle(5.0, wake_on_change=True)  # returns at the wake-up, not after 5 s
    assert waits == ([WAKE_COALESCE_SECONDS] if coalesced else [])


def test_idle_sleep_is_longer_only_when_nothing_is_active(
        tmp_path: Path, session_factory: SessionFactory, fake: FakeExecutor,
        clock: Clock) -> None:
    settings = make_settings(tmp_path, scheduler_idle_sleep_time=1.0,
                             scheduler_heartbeat_sec=5.0)
    job = SchedulerJob(settings, session_factory, fake, clock=clock, waker=OneWakeUp())
    assert job.idle_seconds(LoopStats()) == 5.0  # nothing at all: until the heartbeat
    assert job.idle_seconds(LoopStats(active_runs=1)) == 1.0
    fake.running["celery-x"] = (TaskInstanceKey("d", "t", "r"), 1)
    assert job.idle_seconds(LoopStats()) == 1.0
    fake.running.clear()

    # a scheduled run due in 2.5 s bounds it; one already due gives the normal sleep
    dag = daily("cron_soon")
    sync_dags(session_factory, dag, now=NOW)
    with session_scope(session_factory) as session:
        session.execute(update(DagModel).where(DagModel.dag_id == "cron_soon").values(
            next_dagrun_create_after=NOW + timedelta(seconds=2.5)))
    assert job.idle_seconds(LoopStats()) == pytest.approx(2.5)
    clock.now = NOW + timedelta(seconds=10)
    assert job.idle_seconds(LoopStats()) == 1.0

    # without a waker that reports changes, the normal sleep
    plain = SchedulerJob(settings, session_factory, fake, clock=clock)
    assert plain.idle_seconds(LoopStats()) == 1.0


# --------------------------------------------------------------------------- depends_on_past


def ti_by_run(sf: SessionFactory, dag_id: str, task_id: str) -> dict[str, TaskInstance]:
    with session_scope(sf) as session:
        return {t.run_id: t for t in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id,
                                       TaskInstance.task_id == task_id))}


def test_runs_after_a_failure_wait_on_the_past_and_then_go_on_in_order(
        tmp_path: Path, job: SchedulerJob, session_factory: SessionFactory,
        fake: FakeExecutor, clock: Clock, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 defect 4, through the scheduler loop and the CLI: after run 1's
    depends_on_past task fails, runs 2 and 3 wait (RUNNING, not failed as deadlocked) and
    `squall tasks states-for-dag-run` says for which task instance; once that one is set to
    success with `squall tasks set-state`, they run one after the other and succeed."""
    from argparse import Namespace

    from squall.cli.common import CliContext
    from squall.cli.runs_cmds import set_task_state, states_for_dag_run

    dag = DAG("dop", schedule="@daily", start_date=MIDNIGHT_3_DAYS_AGO, catchup=True)
    with dag:
        Noop(task_id="t", depends_on_past=True)
    sync_dags(session_factory, dag, now=NOW)

    def loop() -> None:
        # every run is decided each loop (past REDECIDE_AFTER_SECONDS since the last)
        clock.now += timedelta(seconds=REDECIDE_AFTER_SECONDS)
        job.run_once()

    def worker_ends(run_id: str, state: TaskInstanceState) -> None:
        with session_scope(session_factory) as session:
            session.execute(update(TaskInstance).where(
                TaskInstance.dag_id == "dop", TaskInstance.run_id == run_id)
                .values(state=state.value, updated_at=clock.now))
        fake.finish()

    loop()
    run1, run2, run3 = (r.run_id for r in runs(session_factory, "dop"))
    assert [t.key.run_id for t in fake.published] == [run1]
    worker_ends(run1, TI.FAILED)
    for _ in range(3):
        loop()
    assert [r.state for r in runs(session_factory, "dop")] == [
        DagRunState.FAILED, DagRunState.RUNNING, DagRunState.RUNNING]
    waiting = ti_by_run(session_factory, "dop", "t")
    assert (waiting[run2].state, waiting[run2].state_reason) == (
        TI.NONE, f"depends_on_past: waiting for previous task instance dop.t of run {run1} "
                 "(failed) to succeed or be skipped")
    assert (waiting[run3].state, waiting[run3].state_reason) == (
        TI.NONE, f"depends_on_past: waiting for previous task instance dop.t of run {run2} "
                 "(none) to succeed or be skipped")

    ctx = CliContext(make_settings(tmp_path), _checked_factory=session_factory)
    capsys.readouterr()
    states_for_dag_run(ctx, Namespace(dag_id="dop", run_id=run2, output="json"))
    [row] = json.loads(capsys.readouterr().out)
    assert (row["state"], row["reason"]) == ("none", waiting[run2].state_reason)

    set_task_state(ctx, Namespace(dag_id="dop", task_id="t", run_id=run1, state="success",
                                  upstream=False, downstream=False, past=False, future=False,
                                  dry_run=False, yes=False, map_index=None))
    assert "DagRun dop" in capsys.readouterr().out  # run 1 is handed back to the scheduler
    loop()
    assert [t.key.run_id for t in fake.published] == [run1, run2]
    worker_ends(run2, TI.SUCCESS)
    loop()
    assert [t.key.run_id for t in fake.published] == [run1, run2, run3]
    worker_ends(run3, TI.SUCCESS)
    loop()
    # run 1, decided again once its task instance was marked success, succeeded too
    assert [r.state for r in runs(session_factory, "dop")] == [
        DagRunState.SUCCESS, DagRunState.SUCCESS, DagRunState.SUCCESS]
