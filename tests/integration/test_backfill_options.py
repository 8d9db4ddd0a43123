"""The options of ``squall dags backfill`` as the scheduler applies them (``-t``, ``-i``,
``-I``, ``-m``, ``--pool``, ``--delay-on-limit``, ``--rerun-failed-tasks``,
``--reset-dagruns``), deadlock detection and its report, and ``backfills cancel
--end-running``: the scheduler loop with a fake executor, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import Backfill, DagRun, Pool, TaskInstance
from squall.common.settings import Settings
from squall.common.state import BackfillState, DagRunState, DagRunType, TaskInstanceState
from squall.runs.backfill import cancel_backfill, create_backfill, plan_backfill
from squall.runs.backfill_progress import backfill_progress, ended_backfill_notes
from squall.runs.backfill_scope import BackfillScope
from squall.runs.run_creation import create_dag_run
from squall.scheduler.backfill_driver import DEADLOCK_GRACE_SECONDS
from squall.scheduler.dag_runs import REDECIDE_AFTER_SECONDS
from squall.scheduler.job import SchedulerJob
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context
from tests.support.scheduling import FakeExecutor, sync_dags

TI = TaskInstanceState
START = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)
#: the DAGs of these tests are defined in this module: its folder is their DAG folder
DAGS_FOLDER = Path(__file__).parent


class Noop(BaseOperator):
    def execute(self, context: Context) -> Any:
        return None


def day(n: int) -> datetime:
    return START + timedelta(days=n - 1)


def run_id(n: int) -> str:
    return f"backfill__{day(n).isoformat()}"


class Loop:
    """The scheduler loop with a fake executor and a fake clock; a published try ends
    success, or failed for the task ids in ``fail``."""

    def __init__(self, tmp_path: Path, sf: SessionFactory, *,
                 fail: Mapping[str, set[str]] | None = None) -> None:
        self.sf = sf
        self.fake = FakeExecutor()
        self.now = NOW
        settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
            "core": {"dags_folder": str(DAGS_FOLDER)},
            "scheduler": {"scheduler_idle_sleep_time": 0.05, "scheduler_heartbeat_sec": 0.1}})
        self.job = SchedulerJob(settings, sf, self.fake, clock=lambda: self.now)
        self.fail = fail or {}
        #: (run_id, task_id) of every try the fake worker ran, in order
        self.ran: list[tuple[str, str]] = []
        self.seen = 0

    def step(self, seconds: float = REDECIDE_AFTER_SECONDS) -> None:
        self.now += timedelta(seconds=seconds)
        self.job.run_once()
        new, self.seen = self.fake.published[self.seen:], len(self.fake.published)
        with session_scope(self.sf) as session:
            for task in new:
                key = task.key
                failed = key.task_id in self.fail.get(key.run_id, set())
                session.execute(update(TaskInstance).where(
                    TaskInstance.dag_id == key.dag_id, TaskInstance.task_id == key.task_id,
                    TaskInstance.run_id == key.run_id,
                    TaskInstance.state == TI.QUEUED.value,
                ).values(state=(TI.FAILED if failed else TI.SUCCESS).value,
                         start_date=self.now, end_date=self.now, updated_at=self.now))
                self.ran.append((key.run_id, key.task_id))
        self.fake.finish()

    def until_over(self, backfill_id: int, loops: int = 80) -> Backfill:
        for _ in range(loops):
            self.step()
            row = self.backfill(backfill_id)
            if row.state in (BackfillState.SUCCESS, BackfillState.FAILED):
                return row
        raise AssertionError(f"backfill {backfill_id} still {row.state} after {loops} loops")

    def backfill(self, backfill_id: int) -> Backfill:
        with session_scope(self.sf) as session:
            row = session.get(Backfill, backfill_id)
            assert row is not None
            return row


def record(sf: SessionFactory, dag: DAG, first: int, last: int, *, max_active_runs: int = 4,
           **options: Any) -> int:
    scope = BackfillScope.of(0, options)
    with session_scope(sf) as session:
        plan = plan_backfill(session, dag, day(first), day(last),
                             rerun_failed_tasks=bool(options.get("rerun_failed_tasks")),
                             reset_dagruns=bool(options.get("reset_dagruns")),
                             task_ids=scope.task_ids(dag))
        return create_backfill(session, plan, max_active_runs=max_active_runs,
                               options=options, dag=dag, now=NOW).id


def tis_of(sf: SessionFactory, dag_id: str) -> dict[tuple[str, str], TaskInstance]:
    with session_scope(sf) as session:
        return {(ti.run_id, ti.task_id): ti for ti in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id))}


def runs_of(sf: SessionFactory, dag_id: str) -> list[DagRun]:
    with session_scope(sf) as session:
        return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                    .order_by(DagRun.logical_date)))


def diamond(dag_id: str, **dag_kwargs: Any) -> DAG:
    """a >> b >> c, and d alone."""
    with DAG(dag_id, schedule="@daily", start_date=START, catchup=False,
             **dag_kwargs) as dag:
        Noop(task_id="a") >> Noop(task_id="b") >> Noop(task_id="c")
        Noop(task_id="d")
    return dag


def test_task_regex_takes_the_upstream_tasks_along(tmp_path: Path,
                                                   session_factory: SessionFactory) -> None:
    dag = diamond("bo_regex")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    backfill_id = record(session_factory, dag, 1, 2, task_regex="^b$")
    loop = Loop(tmp_path, session_factory)
    assert loop.until_over(backfill_id).state == BackfillState.SUCCESS
    assert sorted(loop.ran) == sorted((run_id(n), t) for n in (1, 2) for t in "ab")
    assert set(tis_of(session_factory, "bo_regex")) == {(run_id(n), t) for n in (1, 2)
                                                        for t in "ab"}
    assert {r.state for r in runs_of(session_factory, "bo_regex")} == {DagRunState.SUCCESS}


def test_ignore_dependencies_runs_the_selection_alone(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = diamond("bo_ignore")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    backfill_id = record(session_factory, dag, 1, 1, task_regex="^c$",
                         ignore_dependencies=True)
    loop = Loop(tmp_path, session_factory)
    assert loop.until_over(backfill_id).state == BackfillState.SUCCESS
    assert loop.ran == [(run_id(1), "c")]  # did not wait for a and b, which are not there


def test_mark_success_runs_nothing(tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = diamond("bo_mark")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    backfill_id = record(session_factory, dag, 1, 3, mark_success=True)
    loop = Loop(tmp_path, session_factory)
    assert loop.until_over(backfill_id).state == BackfillState.SUCCESS
    assert loop.ran == []
    tis = tis_of(session_factory, "bo_mark")
    assert len(tis) == 12 and {ti.state for ti in tis.values()} == {TI.SUCCESS}
    assert {ti.try_number for ti in tis.values()} == {0}
    assert "--mark-success" in (tis[(run_id(1), "a")].state_reason or "")


def test_pool_option_puts_every_task_instance_in_that_pool(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = diamond("bo_pool")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    with session_scope(session_factory) as session:
        session.add(Pool(pool="bf_one", slots=1))
    backfill_id = record(session_factory, dag, 1, 2, pool="bf_one")
    loop = Loop(tmp_path, session_factory)
    published_per_loop: list[int] = []
    for _ in range(40):
        before = len(loop.ran)
        loop.step()
        published_per_loop.append(len(loop.ran) - before)
        if loop.backfill(backfill_id).state == BackfillState.SUCCESS:
            break
    assert loop.backfill(backfill_id).state == BackfillState.SUCCESS
    assert {ti.pool for ti in tis_of(session_factory, "bo_pool").values()} == {"bf_one"}
    assert max(published_per_loop) == 1  # one slot: one try at a time
    assert len(loop.ran) == 8


def past_dag(dag_id: str, **task_kwargs: Any) -> DAG:
    with DAG(dag_id, schedule="@daily", start_date=START, catchup=False) as dag:
        Noop(task_id="p", depends_on_past=True, **task_kwargs)
    return dag


def failed_run_at(sf: SessionFactory, dag: DAG, n: int) -> None:
    """A scheduled run at day ``n`` whose task instance failed."""
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.SCHEDULED, logical_date=day(n),
                             data_interval=None, state=DagRunState.FAILED, now=NOW)
        session.execute(update(TaskInstance).where(TaskInstance.run_id == run.run_id)
                        .values(state=TI.FAILED.value, try_number=1))


def test_a_past_failure_deadlocks_the_backfill_and_the_report_names_it(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = past_dag("bo_dead")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    failed_run_at(session_factory, dag, 1)
    backfill_id = record(session_factory, dag, 2, 3)
    loop = Loop(tmp_path, session_factory)
    row = loop.until_over(backfill_id)
    assert row.state == BackfillState.FAILED
    assert row.reason is not None and row.reason.startswith("deadlock: 2 task instance(s)")
    assert f"p in {run_id(2)} (none): depends_on_past" in row.reason
    assert "scheduled__2024-01-01" in row.reason  # the failed previous task instance
    # it was called deadlocked only after the grace period of no progress
    assert row.completed_at is not None and row.completed_at >= (
        NOW + timedelta(seconds=DEADLOCK_GRACE_SECONDS))
    assert loop.ran == []
    # the runs are left waiting: a clear of the failure lets them go on
    assert {r.state for r in runs_of(session_factory, "bo_dead")
            if r.backfill_id == backfill_id} == {DagRunState.RUNNING}
    with session_scope(session_factory) as session:
        progress = backfill_progress(session, backfill_id)
    assert progress is not None and progress.deadlocked and progress.not_ready == 2
    # cancel --end-running ends the runs it left waiting; the backfill stays failed
    with session_scope(session_factory) as session:
        assert cancel_backfill(session, backfill_id, now=loop.now, end_running=True) == [
            run_id(2), run_id(3)]
        assert cancel_backfill(session, backfill_id, now=loop.now, end_running=True) is None
    assert {r.state for r in runs_of(session_factory, "bo_dead")} == {DagRunState.FAILED}
    assert loop.backfill(backfill_id).state == BackfillState.FAILED


def test_ignore_first_depends_on_past_lets_the_first_run_go(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = past_dag("bo_first")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    failed_run_at(session_factory, dag, 1)
    backfill_id = record(session_factory, dag, 2, 4, max_active_runs=3,
                         ignore_first_depends_on_past=True)
    loop = Loop(tmp_path, session_factory)
    assert loop.until_over(backfill_id).state == BackfillState.SUCCESS
    # the first run ignored its failed past; the later ones waited for theirs, in order
    assert loop.ran == [(run_id(2), "p"), (run_id(3), "p"), (run_id(4), "p")]


def test_a_missing_pool_deadlocks_the_backfill(tmp_path: Path,
                                               session_factory: SessionFactory) -> None:
    with DAG("bo_nopool", schedule="@daily", start_date=START, catchup=False) as dag:
        Noop(task_id="x", pool="no_such_pool") >> Noop(task_id="y")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    backfill_id = record(session_factory, dag, 1, 1)
    loop = Loop(tmp_path, session_factory)
    row = loop.until_over(backfill_id)
    assert row.state == BackfillState.FAILED and row.reason is not None
    assert f"x in {run_id(1)} (scheduled): pool 'no_such_pool' does not exist" in row.reason
    assert f"y in {run_id(1)} (none): waits for its upstream tasks" in row.reason


def test_rerun_failed_tasks_clears_only_the_failed_ones(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = diamond("bo_rerun")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    first = record(session_factory, dag, 1, 2)
    Loop(tmp_path, session_factory, fail={run_id(2): {"b"}}).until_over(first)
    before = tis_of(session_factory, "bo_rerun")
    assert (before[(run_id(2), "b")].state, before[(run_id(2), "c")].state) == (
        TI.FAILED, TI.UPSTREAM_FAILED)

    second = record(session_factory, dag, 1, 3, rerun_failed_tasks=True)
    assert loop_total(session_factory, second) == 2  # day 2 again, day 3 new
    loop = Loop(tmp_path, session_factory)
    assert loop.until_over(second).state == BackfillState.SUCCESS
    assert sorted(loop.ran) == sorted([(run_id(2), "b"), (run_id(2), "c"),
                                       *((run_id(3), t) for t in "abcd")])
    after = tis_of(session_factory, "bo_rerun")
    assert after[(run_id(2), "b")].try_number == 2  # the try number counts on
    assert {r.state for r in runs_of(session_factory, "bo_rerun")} == {DagRunState.SUCCESS}
    assert {r.backfill_id for r in runs_of(session_factory, "bo_rerun")} == {
        first, second}
    # day 1 was left alone
    assert after[(run_id(1), "a")].try_number == before[(run_id(1), "a")].try_number


def loop_total(sf: SessionFactory, backfill_id: int) -> int:
    with session_scope(sf) as session:
        row = session.get(Backfill, backfill_id)
        assert row is not None
        return row.total_runs


def test_reset_dagruns_runs_the_whole_runs_again(tmp_path: Path,
                                                 session_factory: SessionFactory) -> None:
    dag = diamond("bo_reset")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    first = record(session_factory, dag, 1, 1)
    Loop(tmp_path, session_factory).until_over(first)
    second = record(session_factory, dag, 1, 1, reset_dagruns=True)
    loop = Loop(tmp_path, session_factory)
    assert loop.until_over(second).state == BackfillState.SUCCESS
    assert sorted(t for _, t in loop.ran) == ["a", "b", "c", "d"]
    assert {ti.try_number for ti in tis_of(session_factory, "bo_reset").values()} == {2}


def test_delay_on_limit_spaces_the_runs(tmp_path: Path,
                                        session_factory: SessionFactory) -> None:
    with DAG("bo_delay", schedule="@daily", start_date=START, catchup=False) as dag:
        Noop(task_id="only")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    delay = 10 * REDECIDE_AFTER_SECONDS
    backfill_id = record(session_factory, dag, 1, 3, max_active_runs=1, delay_on_limit=delay)
    Loop(tmp_path, session_factory).until_over(backfill_id)
    queued = [r.queued_at for r in runs_of(session_factory, "bo_delay")]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(queued)]
    assert len(gaps) == 2 and min(gaps) >= delay


def test_cancel_end_running_ends_the_runs(tmp_path: Path,
                                          session_factory: SessionFactory) -> None:
    dag = diamond("bo_cancel")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    backfill_id = record(session_factory, dag, 1, 5, max_active_runs=2)
    loop = Loop(tmp_path, session_factory)
    loop.now += timedelta(seconds=1)
    loop.job.run_once()  # two runs created, their first task instances queued
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.state == TI.QUEUED.value)
                        .values(state=TI.RUNNING.value))
        ended = cancel_backfill(session, backfill_id, now=loop.now, end_running=True)
    assert ended == [run_id(1), run_id(2)]
    runs = runs_of(session_factory, "bo_cancel")
    assert [(r.run_id, r.state) for r in runs] == [(run_id(1), DagRunState.FAILED),
                                                   (run_id(2), DagRunState.FAILED)]
    states = {ti.state for ti in tis_of(session_factory, "bo_cancel").values()}
    assert states == {TI.FAILED, TI.SKIPPED}
    row = loop.backfill(backfill_id)
    assert row.state == BackfillState.CANCELLED and row.reason is not None
    loop.step()  # no more runs are created
    assert len(runs_of(session_factory, "bo_cancel")) == 2
    with session_scope(session_factory) as session:
        assert cancel_backfill(session, backfill_id, now=loop.now) is None


def test_the_scheduler_walks_a_backfills_schedule_once(
        tmp_path: Path, session_factory: SessionFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import squall.scheduler.backfill_driver as driver

    walks: list[int] = []
    real = driver.range_run_infos

    def counting(*args: Any, **kwargs: Any) -> Any:
        walks.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "range_run_infos", counting)
    with DAG("bo_walk", schedule="@daily", start_date=START, catchup=False) as dag:
        Noop(task_id="only")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    backfill_id = record(session_factory, dag, 1, 5, max_active_runs=1)
    loop = Loop(tmp_path, session_factory)
    assert loop.until_over(backfill_id).state == BackfillState.SUCCESS
    assert len(runs_of(session_factory, "bo_walk")) == 5
    assert len(walks) == 1  # kept between loops, not walked again for each run


def test_a_backfill_takes_in_the_unfinished_runs_of_its_range_nothing_drives(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = diamond("bo_take")
    sync_dags(session_factory, dag, paused=True, now=NOW)
    first = record(session_factory, dag, 1, 2, max_active_runs=2)
    loop = Loop(tmp_path, session_factory)
    loop.now += timedelta(seconds=1)
    loop.job.run_once()  # two runs created, their first task instances queued
    with session_scope(session_factory) as session:
        assert cancel_backfill(session, first, now=loop.now) == []  # its runs left running
        manual = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=day(3),
                                data_interval=None, state=DagRunState.QUEUED, now=NOW).run_id
    with session_scope(session_factory) as session:
        assert ended_backfill_notes(session, "bo_take", [run_id(1), manual]) == {run_id(1): (
            f"backfill {first} ended (cancelled) with this run unfinished and no backfill "
            "follows it; resume with: squall dags backfill bo_take -s "
            "2024-01-01T00:00:00+00:00 -e 2024-01-02T00:00:00+00:00 --max-active-runs 2")}
        # two backfills planned at the same time: the one created first takes the runs in
        plans = [plan_backfill(session, dag, day(1), day(3)) for _ in range(2)]
        assert [(r.run_id, r.orphan) for r in plans[0].taken_in] == [
            (run_id(1), f"backfill {first} ended (cancelled)"),
            (run_id(2), f"backfill {first} ended (cancelled)"), (manual, "its DAG is paused")]
        second, third = (create_backfill(session, plan, max_active_runs=3, now=NOW)
                         for plan in plans)
        assert (second.total_runs, third.total_runs) == (3, 0)
        second_id = second.id
    assert loop.until_over(second_id).state == BackfillState.SUCCESS
    assert [(r.run_id, r.state, r.backfill_id) for r in runs_of(session_factory, "bo_take")
            ] == [(run_id(1), DagRunState.SUCCESS, second_id),
                  (run_id(2), DagRunState.SUCCESS, second_id),
                  (manual, DagRunState.SUCCESS, second_id)]
    assert sorted(loop.ran) == sorted((r, t) for r in (run_id(1), run_id(2), manual)
                                      for t in "abcd")


def test_a_run_rerun_behind_a_run_taken_in_starts_within_a_limit_of_one(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    """With a limit of one run, day 3 (taken in, running, waiting for day 2) does not hold
    back day 2, cleared and queued: the oldest unfinished run of a backfill starts."""
    with DAG("bo_one", schedule="@daily", start_date=START, catchup=False,
             max_active_runs=1) as dag:
        Noop(task_id="p", depends_on_past=True)
    sync_dags(session_factory, dag, paused=True, now=NOW)
    first = record(session_factory, dag, 1, 4, max_active_runs=1)
    row = Loop(tmp_path, session_factory, fail={run_id(2): {"p"}}).until_over(first)
    assert row.reason is not None and row.reason.startswith("deadlock: 1 task instance(s)")
    assert [r.state for r in runs_of(session_factory, "bo_one")] == [
        DagRunState.SUCCESS, DagRunState.FAILED, DagRunState.RUNNING]
    second = record(session_factory, dag, 1, 4, max_active_runs=1, rerun_failed_tasks=True)
    loop = Loop(tmp_path, session_factory)
    assert loop.until_over(second).state == BackfillState.SUCCESS
    assert loop.ran == [(run_id(2), "p"), (run_id(3), "p"), (run_id(4), "p")]
