"""Clearing task instances (squall.runs.clear, squall.execution.restart and the
watchdog's end of stale RESTARTING rows), with rows set up directly, on SQLite and
PostgreSQL; and the scheduler scheduling a cleared task's next try."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagRun, Job, TaskInstance, TaskInstanceKey, TaskReschedule
from squall.common.settings import Settings
from squall.common.state import (
    ONLY_FAILED_STATES,
    DagRunState,
    DagRunType,
    JobState,
    TaskInstanceState,
)
from squall.execution.restart import end_restart
from squall.runs.clear import (
    clear_task_instances,
    matching_task_ids,
    select_task_instances,
)
from squall.runs.run_creation import create_dag_run
from squall.scheduler.job import SchedulerJob
from squall.scheduler.watchdog import end_stale_restarting
from squall.sdk.dag import DAG
from tests.support.scheduling import FakeExecutor, Noop, sync_dags

TI = TaskInstanceState
NOW = datetime(2024, 2, 10, 12, 0, tzinfo=UTC)
DAG_ID = "clr"


def make_dag() -> DAG:
    """extract >> transform >> load, and report (alone); transform has 2 retries."""
    dag = DAG(DAG_ID, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC))
    with dag:
        extract = Noop(task_id="extract")
        transform = Noop(task_id="transform", retries=2)
        load = Noop(task_id="load")
        Noop(task_id="report")
        extract >> transform >> load
    return dag


def setup_run(sf: SessionFactory, state: DagRunState = DagRunState.SUCCESS,
              day: int = 9) -> tuple[DAG, str]:
    dag = make_dag()
    sync_dags(sf, dag, now=NOW)
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 2, day, tzinfo=UTC),
                             data_interval=None, state=state, external_trigger=True, now=NOW)
        if state != DagRunState.RUNNING:
            run.start_date = NOW - timedelta(hours=1)
            run.end_date = NOW - timedelta(minutes=30)
        return dag, run.run_id


def set_ti(sf: SessionFactory, run_id: str, task_id: str, **values: Any) -> None:
    values.setdefault("try_number", 1)
    with session_scope(sf) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id).values(**values))


def rows(sf: SessionFactory, run_id: str) -> dict[str, TaskInstance]:
    with session_scope(sf) as session:
        return {t.task_id: t for t in session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id))}


def add_job(sf: SessionFactory, heartbeat: datetime,
            state: JobState = JobState.RUNNING) -> int:
    with session_scope(sf) as session:
        job = Job(job_type="LocalTaskJob", state=state.value, hostname="w1", pid=1,
                  start_date=heartbeat, latest_heartbeat=heartbeat)
        session.add(job)
        session.flush()
        return job.id


def clear(sf: SessionFactory, dag: DAG, **select_args: Any) -> Any:
    with session_scope(sf) as session:
        tis = select_task_instances(session, dag, **select_args)
        return clear_task_instances(session, tis, dag, NOW)


def test_finished_task_instances_go_back_to_none_with_their_retries_granted_again(
        session_factory: SessionFactory) -> None:
    dag, run_id = setup_run(session_factory)
    end = NOW - timedelta(minutes=40)
    set_ti(session_factory, run_id, "extract", state=TI.SUCCESS, max_tries=0,
           start_date=end, end_date=end, duration=1.0)
    set_ti(session_factory, run_id, "transform", state=TI.FAILED, try_number=3, max_tries=2,
           end_date=end)
    set_ti(session_factory, run_id, "load", state=TI.UPSTREAM_FAILED, try_number=0,
           max_tries=0)
    set_ti(session_factory, run_id, "report", state=TI.SKIPPED, max_tries=0)
    with session_scope(session_factory) as session:
        session.add(TaskReschedule(dag_id=DAG_ID, task_id="transform", run_id=run_id,
                                   try_number=3, start_date=end, end_date=end, duration=1.0,
                                   reschedule_date=end))

    result = clear(session_factory, dag)

    assert sorted((c.key.task_id, c.old_state, c.new_state) for c in result.cleared) == [
        ("extract", TI.SUCCESS, TI.NONE), ("load", TI.UPSTREAM_FAILED, TI.NONE),
        ("report", TI.SKIPPED, TI.NONE), ("transform", TI.FAILED, TI.NONE)]
    assert result.reactivated_runs == [(DAG_ID, run_id)]
    after = rows(session_factory, run_id)
    assert {t: r.state for t, r in after.items()} == dict.fromkeys(after, TI.NONE)
    # try numbers kept; max_tries = try_number + retries
    assert {t: (r.try_number, r.max_tries) for t, r in after.items()} == {
        "extract": (1, 1), "transform": (3, 5), "load": (0, 0), "report": (1, 1)}
    assert after["extract"].end_date is None and after["extract"].start_date is None
    assert after["extract"].state_reason == "cleared"
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(TaskReschedule)) == 0
        run = session.scalars(select(DagRun).where(DagRun.run_id == run_id)).one()
        assert (run.state, run.start_date, run.end_date) == (DagRunState.QUEUED, None, None)


def test_a_running_try_becomes_restarting_then_none_once_its_supervisor_ends_it(
        session_factory: SessionFactory) -> None:
    dag, run_id = setup_run(session_factory, DagRunState.RUNNING)
    job = add_job(session_factory, NOW)
    set_ti(session_factory, run_id, "transform", state=TI.RUNNING, max_tries=2, job_id=job)
    set_ti(session_factory, run_id, "extract", state=TI.SUCCESS, max_tries=0)

    result = clear(session_factory, dag, task_regex="^trans")

    assert [(c.key.task_id, c.new_state) for c in result.cleared] == [
        ("transform", TI.RESTARTING)]
    assert result.reactivated_runs == []  # it was running
    ti = rows(session_factory, run_id)["transform"]
    assert (ti.state, ti.try_number, ti.max_tries, ti.job_id) == (TI.RESTARTING, 1, 3, job)
    assert rows(session_factory, run_id)["extract"].state == TI.SUCCESS
    # clearing it again while it restarts changes nothing
    assert clear(session_factory, dag, task_regex="^trans").cleared == []
    key = TaskInstanceKey(DAG_ID, "transform", run_id)
    with session_scope(session_factory) as session:
        assert not end_restart(session, key, try_number=1, job_id=job + 1, now=NOW)
        assert end_restart(session, key, try_number=1, job_id=job, now=NOW)
    ti = rows(session_factory, run_id)["transform"]
    assert (ti.state, ti.try_number, ti.max_tries) == (TI.NONE, 1, 3)


def test_the_watchdog_ends_restarting_rows_whose_supervisor_is_gone(
        session_factory: SessionFactory) -> None:
    _dag, run_id = setup_run(session_factory, DagRunState.RUNNING)
    alive = add_job(session_factory, NOW - timedelta(seconds=5))
    stale = add_job(session_factory, NOW - timedelta(seconds=400))
    ended = add_job(session_factory, NOW, state=JobState.FAILED)
    set_ti(session_factory, run_id, "extract", state=TI.RESTARTING, job_id=alive)
    set_ti(session_factory, run_id, "transform", state=TI.RESTARTING, job_id=stale)
    set_ti(session_factory, run_id, "load", state=TI.RESTARTING, job_id=ended)
    set_ti(session_factory, run_id, "report", state=TI.RESTARTING, job_id=None)
    with session_scope(session_factory) as session:
        assert end_stale_restarting(session, now=NOW, threshold=300) == 3
    after = rows(session_factory, run_id)
    assert {t: r.state for t, r in after.items()} == {
        "extract": TI.RESTARTING, "transform": TI.NONE, "load": TI.NONE, "report": TI.NONE}
    assert "job" in (after["transform"].state_reason or "")


def test_selection_by_regex_relatives_states_dates_and_run(
        session_factory: SessionFactory) -> None:
    dag, run_id = setup_run(session_factory)
    assert matching_task_ids(dag, "^transform$") == ["transform"]
    assert matching_task_ids(dag, "^transform$", upstream=True) == ["extract", "transform"]
    assert matching_task_ids(dag, "^transform$", downstream=True) == ["load", "transform"]
    assert matching_task_ids(dag, None) == ["extract", "load", "report", "transform"]
    assert matching_task_ids(dag, "nothing") == []
    set_ti(session_factory, run_id, "extract", state=TI.SUCCESS)
    set_ti(session_factory, run_id, "transform", state=TI.FAILED)
    set_ti(session_factory, run_id, "load", state=TI.UPSTREAM_FAILED)
    with session_scope(session_factory) as session:
        other = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                               logical_date=datetime(2024, 2, 5, tzinfo=UTC),
                               data_interval=None, state=DagRunState.SUCCESS,
                               external_trigger=True, now=NOW).run_id

        def picked(**kwargs: Any) -> list[tuple[str, str]]:
            return [(t.run_id, t.task_id) for t in select_task_instances(session, dag,
                                                                         **kwargs)]

        assert picked(states=ONLY_FAILED_STATES) == [(run_id, "load"), (run_id, "transform")]
        assert picked(task_regex="^report$") == [(other, "report"), (run_id, "report")]
        assert picked(task_regex="^report$", run_id=other) == [(other, "report")]
        assert picked(task_regex="^report$",
                      start=datetime(2024, 2, 6, tzinfo=UTC)) == [(run_id, "report")]
        assert picked(task_regex="^report$",
                      end=datetime(2024, 2, 6, tzinfo=UTC)) == [(other, "report")]


def test_a_row_that_moved_on_since_it_was_read_is_left_alone(
        session_factory: SessionFactory) -> None:
    dag, run_id = setup_run(session_factory)
    set_ti(session_factory, run_id, "report", state=TI.FAILED)
    with session_scope(session_factory) as session:
        tis = select_task_instances(session, dag, task_regex="report")
    set_ti(session_factory, run_id, "report", state=TI.SUCCESS, try_number=2)
    with session_scope(session_factory) as session:
        result = clear_task_instances(session, tis, dag, NOW)
    assert result.cleared == [] and result.changed == [
        TaskInstanceKey(DAG_ID, "report", run_id)]
    assert result.reactivated_runs == []
    assert rows(session_factory, run_id)["report"].state == TI.SUCCESS


def test_the_scheduler_runs_a_cleared_task_again_as_its_next_try(
        session_factory: SessionFactory, tmp_path: Path) -> None:
    dag, run_id = setup_run(session_factory)
    for task_id in ("extract", "transform", "load", "report"):
        set_ti(session_factory, run_id, task_id, state=TI.SUCCESS, max_tries=0)
    clear(session_factory, dag, task_regex="^report$")
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
        "core": {"dags_folder": str(Path(__file__).parent)},
        "scheduler": {"scheduler_idle_sleep_time": 0.01}})
    fake = FakeExecutor()
    SchedulerJob(settings, session_factory, fake, clock=lambda: NOW).run_once()
    assert [(t.key.task_id, t.try_number) for t in fake.published] == [("report", 2)]
    with session_scope(session_factory) as session:
        assert session.scalars(select(DagRun.state).where(
            DagRun.run_id == run_id)).one() == DagRunState.RUNNING
