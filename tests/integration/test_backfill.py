"""Backfill planning, the backfill row and the scheduler driving it
(squall.runs.backfill, with a fake executor) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from squall.cli.backfill_cmds import follow
from squall.cli.common import CliContext
from squall.common.db import SessionFactory, make_session_factory, session_scope
from squall.common.errors import BackfillError, CliError
from squall.common.models import Backfill, DagModel, DagRun, Job, TaskInstance, utcnow
from squall.common.settings import Settings
from squall.common.state import (
    BackfillState,
    DagRunState,
    DagRunType,
    JobState,
    TaskInstanceState,
)
from squall.common.wakeup import PostgresWaker
from squall.runs.backfill import create_backfill, plan_backfill, range_run_infos
from squall.runs.run_creation import create_dag_run
from squall.scheduler.backfill_driver import drive_backfills
from squall.scheduler.dag_runs import REDECIDE_AFTER_SECONDS, SerializedDagCache
from squall.scheduler.job import SchedulerJob
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context
from tests.support.scheduling import FakeExecutor, sync_dags
from tests.support.services import wait_until

START = datetime(2024, 1, 1, tzinfo=UTC)


class Noop(BaseOperator):
    def execute(self, context: Context) -> Any:
        return None


def daily_dag(dag_id: str = "bf", **task_kwargs: Any) -> DAG:
    with DAG(dag_id, schedule="@daily", start_date=START) as dag:
        Noop(task_id="a", **task_kwargs) >> Noop(task_id="b")
    return dag


def day(n: int) -> datetime:
    return START + timedelta(days=n - 1)


def test_range_is_the_schedule_ticks_both_ends_included() -> None:
    infos = range_run_infos(daily_dag(), day(1), day(10))
    assert [i.logical_date for i in infos] == [day(n) for n in range(1, 11)]
    assert infos[0].data_interval.end == day(2)
    # bounds between ticks: the ticks inside the range
    infos = range_run_infos(daily_dag(), day(1) + timedelta(hours=1), day(3) + timedelta(hours=1))
    assert [i.logical_date for i in infos] == [day(2), day(3)]


def test_range_errors() -> None:
    with pytest.raises(BackfillError, match="is after the end"):
        range_run_infos(daily_dag(), day(5), day(1))
    with DAG("manual_only", schedule=None, start_date=START) as dag:
        Noop(task_id="a")
    with pytest.raises(BackfillError, match="no periodic schedule"):
        range_run_infos(dag, day(1), day(3))


def test_plan_leaves_existing_runs_alone(session_factory: SessionFactory) -> None:
    dag = daily_dag()
    with session_factory() as session:
        session.add(DagModel(dag_id=dag.dag_id, fileloc=dag.fileloc))
        session.flush()
        create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=day(3),
                       data_interval=None, run_id="by_hand", state=DagRunState.SUCCESS)
        session.commit()
        plan = plan_backfill(session, dag, day(1), day(5))
    assert [r.run_id for r in plan.runs] == [
        f"backfill__{day(n).isoformat()}" for n in (1, 2, 4, 5)]
    assert [r.logical_date for r in plan.runs] == [day(1), day(2), day(4), day(5)]
    [existing] = plan.existing
    assert (existing.run_id, existing.run_type, existing.state) == (
        "by_hand", "manual", "success")
    assert existing.logical_date == day(3)


def test_plan_backwards_is_newest_first(session_factory: SessionFactory) -> None:
    with session_factory() as session:
        plan = plan_backfill(session, daily_dag(), day(1), day(4), run_backwards=True)
    assert [r.logical_date for r in plan.runs] == [day(4), day(3), day(2), day(1)]


def test_backwards_with_depends_on_past_is_refused(session_factory: SessionFactory) -> None:
    dag = daily_dag(depends_on_past=True)
    with session_factory() as session:
        with pytest.raises(BackfillError, match=r"backwards.*depends_on_past.*: a"):
            plan_backfill(session, dag, day(1), day(4), run_backwards=True)
        assert len(plan_backfill(session, dag, day(1), day(4)).runs) == 4


def test_create_backfill_row(session_factory: SessionFactory) -> None:
    dag = daily_dag()
    with session_factory() as session:
        plan = plan_backfill(session, dag, day(1), day(3), run_backwards=True)
        row = create_backfill(session, plan, max_active_runs=2, conf={"x": 1},
                              options={"task_regex": "^a$"})
        session.commit()
        backfill_id = row.id
    with session_factory() as session:
        row = session.scalars(select(Backfill)).one()
        assert row.id == backfill_id
        assert (row.dag_id, row.from_date, row.to_date, row.run_backwards,
                row.max_active_runs, row.conf, row.options, row.state, row.total_runs) == (
            "bf", day(1), day(3), True, 2, {"x": 1},
            {"task_regex": "^a$", "first_logical_date": day(1).isoformat()},
            BackfillState.QUEUED, 3)
        assert row.created_at is not None and row.completed_at is None
        with pytest.raises(BackfillError, match="unknown backfill options: nope"):
            create_backfill(session, plan, max_active_runs=1, options={"nope": 1})
        with pytest.raises(BackfillError, match="max_active_runs"):
            create_backfill(session, plan, max_active_runs=0)


# --------------------------------------------------------------------------- the scheduler

NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)
#: the DAGs of these tests are defined in this module: its folder is their DAG folder
DAGS_FOLDER = Path(__file__).parent


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def record_backfill(sf: SessionFactory, dag: DAG, first: int, last: int, *,
                    max_active_runs: int, run_backwards: bool = False) -> int:
    with session_scope(sf) as session:
        plan = plan_backfill(session, dag, day(first), day(last), run_backwards=run_backwards)
        return create_backfill(session, plan, max_active_runs=max_active_runs,
                               conf={"k": 1}).id


def backfill_row(sf: SessionFactory, backfill_id: int) -> Backfill:
    with session_scope(sf) as session:
        row = session.get(Backfill, backfill_id)
        assert row is not None
        return row


def backfill_runs(sf: SessionFactory, dag_id: str) -> list[DagRun]:
    with session_scope(sf) as session:
        return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                    .order_by(DagRun.id)))


def settings_for(tmp_path: Path) -> Settings:
    return Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
        "core": {"dags_folder": str(DAGS_FOLDER)},
        "scheduler": {"scheduler_idle_sleep_time": 0.05, "scheduler_heartbeat_sec": 0.1}})


def drive(tmp_path: Path, sf: SessionFactory, dag: DAG, backfill_id: int, *,
          fail: str | None = None) -> list[list[datetime]]:
    """Run the scheduler loop, the fake worker finishing every published try (``fail``:
    the run whose try fails), until the backfill ends; returns the logical dates of the
    unfinished runs after each loop."""
    fake, clock = FakeExecutor(), Clock()
    job = SchedulerJob(settings_for(tmp_path), sf, fake, clock=clock)
    active: list[list[datetime]] = []
    for _ in range(60):
        clock.now += timedelta(seconds=REDECIDE_AFTER_SECONDS)
        job.run_once()
        active.append([r.logical_date for r in backfill_runs(sf, dag.dag_id)
                       if r.state == DagRunState.RUNNING])
        if backfill_row(sf, backfill_id).state != BackfillState.RUNNING:
            break
        with session_scope(sf) as session:
            for task in fake.published:
                state = (TaskInstanceState.FAILED if task.key.run_id == fail
                         else TaskInstanceState.SUCCESS)
                session.execute(update(TaskInstance).where(
                    TaskInstance.dag_id == task.key.dag_id,
                    TaskInstance.task_id == task.key.task_id,
                    TaskInstance.run_id == task.key.run_id,
                    TaskInstance.state == TaskInstanceState.QUEUED.value,
                ).values(state=state.value, updated_at=clock.now))
        fake.finish()
    return active


def one_task_dag(dag_id: str) -> DAG:
    with DAG(dag_id, schedule="@daily", start_date=START, max_active_runs=1,
             catchup=False) as dag:
        Noop(task_id="only")
    return dag


def test_scheduler_runs_a_ten_day_backfill_in_order(
        tmp_path: Path, session_factory: SessionFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    dag = one_task_dag("bf_sched")
    # a paused DAG is backfilled all the same (its schedule stays paused)
    sync_dags(session_factory, dag, paused=True, now=NOW)
    backfill_id = record_backfill(session_factory, dag, 1, 10, max_active_runs=3)
    active = drive(tmp_path, session_factory, dag, backfill_id)

    row = backfill_row(session_factory, backfill_id)
    assert row.state == BackfillState.SUCCESS and row.completed_at is not None
    created = backfill_runs(session_factory, "bf_sched")
    assert [r.logical_date for r in created] == [day(n) for n in range(1, 11)]  # in order
    assert {(r.run_type, r.state, r.backfill_id) for r in created} == {
        (DagRunType.BACKFILL, DagRunState.SUCCESS, backfill_id)}
    assert created[0].run_id == f"backfill__{day(1).isoformat()}"
    assert created[0].conf == {"k": 1}
    assert created[0].data_interval_end == day(2)
    assert max(len(a) for a in active) == 3  # its max_active_runs, not the DAG's 1
    assert active[0] == [day(1), day(2), day(3)]

    # followed once over: exit code 0
    ctx = CliContext(settings_for(tmp_path), _checked_factory=session_factory)
    capsys.readouterr()
    assert follow(ctx, backfill_id, poll_seconds=0.01) == 0
    assert "Backfill 1 of bf_sched: success (10 runs)" in capsys.readouterr().out


def test_backwards_backfill_with_a_failed_run_fails(
        tmp_path: Path, session_factory: SessionFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    dag = one_task_dag("bf_back")
    sync_dags(session_factory, dag, now=NOW)  # unpaused: its latest scheduled run goes on
    backfill_id = record_backfill(session_factory, dag, 1, 4, max_active_runs=1,
                                  run_backwards=True)
    active = drive(tmp_path, session_factory, dag, backfill_id,
                   fail=f"backfill__{day(3).isoformat()}")
    assert [a for a in active if a][:4] == [[day(4)], [day(3)], [day(2)], [day(1)]]
    assert backfill_row(session_factory, backfill_id).state == BackfillState.FAILED
    states = {r.logical_date: r.state for r in backfill_runs(session_factory, "bf_back")
              if r.run_type == DagRunType.BACKFILL}
    assert states == {day(1): DagRunState.SUCCESS, day(2): DagRunState.SUCCESS,
                      day(3): DagRunState.FAILED, day(4): DagRunState.SUCCESS}

    ctx = CliContext(settings_for(tmp_path), _checked_factory=session_factory)
    capsys.readouterr()
    assert follow(ctx, backfill_id, poll_seconds=0.01) == 1
    assert (f"Backfill {backfill_id} of bf_back: failed (failed runs: "
            f"backfill__{day(3).isoformat()})") in capsys.readouterr().err


def test_follow_shows_progress_until_the_end(tmp_path: Path, session_factory: SessionFactory,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    dag = one_task_dag("bf_follow")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    backfill_id = record_backfill(session_factory, dag, 1, 2, max_active_runs=2)
    ctx = CliContext(settings_for(tmp_path), _checked_factory=session_factory)
    with pytest.raises(CliError, match="no scheduler is running"):
        follow(ctx, backfill_id, poll_seconds=0.01)

    with session_scope(session_factory) as session:  # a scheduler heartbeats
        session.add(Job(job_type="SchedulerJob", state=JobState.RUNNING.value,
                        latest_heartbeat=utcnow()))

    def the_scheduler_ends_it() -> None:
        with session_scope(session_factory) as session:
            session.execute(update(Backfill).values(state=BackfillState.SUCCESS.value,
                                                    completed_at=utcnow()))

    timer = threading.Timer(0.3, the_scheduler_ends_it)
    timer.start()
    try:
        capsys.readouterr()
        assert follow(ctx, backfill_id, poll_seconds=0.05) == 0
    finally:
        timer.join()
    out = capsys.readouterr().out
    assert "runs finished" in out and "Backfill 1 of bf_follow: success" in out


# --------------------------------------------------------------------------- no backfill


def _backfill_statements(engine: Engine) -> list[str]:
    """The statements on ``engine`` that read the ``backfill`` table, as they run."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM backfill" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen


def test_no_backfill_is_looked_for_until_one_is_notified(
        tmp_path: Path, pg_engine: Engine) -> None:
    sf = make_session_factory(pg_engine)
    dag = one_task_dag("bf_notified")
    sync_dags(sf, dag, paused=True, now=NOW)
    seen = _backfill_statements(pg_engine)
    waker = PostgresWaker(pg_engine)
    job = SchedulerJob(settings_for(tmp_path), sf, FakeExecutor(), clock=Clock(),
                       waker=waker)
    try:
        job.run_once()  # the waker has just begun listening: it cannot vouch, so it looks
        assert len(seen) == 1
        seen.clear()
        job.run_once()  # now it can: none free, and none another scheduler holds
        assert len(seen) == 2
        seen.clear()
        for _ in range(3):
            job.run_once()
        assert seen == []  # none since, and no notification: no query

        # a backfill created while the scheduler runs starts within a loop or two: the
        # notification reaches the LISTEN socket asynchronously after the commit
        backfill_id = record_backfill(sf, dag, 1, 3, max_active_runs=1)

        def started() -> bool:
            job.run_once()
            return bool(backfill_runs(sf, "bf_notified"))

        wait_until(started, 10, interval=0.01, message="the notified backfill to start")
        assert [r.logical_date for r in backfill_runs(sf, "bf_notified")] == [day(1)]
        assert backfill_row(sf, backfill_id).state == BackfillState.RUNNING
        seen.clear()
        job.run_once()
        assert seen  # active: looked at every loop
    finally:
        waker.close()


def test_a_backfill_nobody_notified_is_found_within_the_recheck(
        tmp_path: Path, pg_engine: Engine) -> None:
    sf = make_session_factory(pg_engine)
    dag = one_task_dag("bf_quiet")
    sync_dags(sf, dag, paused=True, now=NOW)
    waker = PostgresWaker(pg_engine)
    job = SchedulerJob(settings_for(tmp_path), sf, FakeExecutor(), clock=Clock(),
                       waker=waker, backfill_recheck_seconds=0.3)
    try:
        job.run_once()
        job.run_once()
        with session_scope(sf) as session:  # written by hand: no notification
            session.add(Backfill(dag_id="bf_quiet", from_date=day(1), to_date=day(1),
                                 run_backwards=False, max_active_runs=1,
                                 state=BackfillState.QUEUED.value, total_runs=1))
        job.run_once()
        assert backfill_runs(sf, "bf_quiet") == []  # not looked for yet

        def found() -> bool:
            job.run_once()
            return bool(backfill_runs(sf, "bf_quiet"))

        wait_until(found, 10, interval=0.05, message="the recheck to find the backfill")
        assert [r.logical_date for r in backfill_runs(sf, "bf_quiet")] == [day(1)]
    finally:
        waker.close()


def test_a_backfill_another_scheduler_holds_keeps_the_step_running(
        tmp_path: Path, pg_engine: Engine) -> None:
    sf = make_session_factory(pg_engine)
    dag = one_task_dag("bf_held")
    sync_dags(sf, dag, paused=True, now=NOW)
    record_backfill(sf, dag, 1, 2, max_active_runs=1)
    with sf() as holder:  # the other scheduler, in its backfill step
        holder.scalars(select(Backfill).with_for_update()).all()
        with session_scope(sf) as session:
            step = drive_backfills(session, SerializedDagCache(), now=NOW)
            assert step.created == 0 and not step.backfills_active  # not asked to look
            step = drive_backfills(session, SerializedDagCache(), now=NOW,
                                   look_for_held=True)
        assert step.created == 0
        assert step.backfills_active  # still there: the next loops look again
        holder.rollback()
    with session_scope(sf) as session:
        step = drive_backfills(session, SerializedDagCache(), now=NOW)
    assert step.created == 1 and step.backfills_active
