"""``squall dags backfill`` (and ``tasks clear`` of a backfill run) end to end, driven from
the outside against a real cluster: a scheduler and a Celery worker started the way users
start them, on Redis + PostgreSQL and on the embedded default (SQLite + embedded broker).

It proves that a followed backfill exits 0 once its runs (run type ``backfill``, with the
backfill's id) have all succeeded; that each task instance runs exactly once; that with
``--max-active-runs 1`` the runs execute one after the other in logical date order, newest
first with ``-B``; that ``--dry-run`` creates nothing; that the backfill is the scheduler's
business (killing the following CLI does not stop it, and two schedulers never create a
date twice nor run a task instance twice); that ``depends_on_past`` holds the later runs
back behind a failed first run, with a reason, until that run is cleared; and that a pool
of one slot serialises the backfill's task instances. Executions are counted with a side
effect each task writes (one line per try, in the order they start).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import Backfill, DagRun, TaskInstance
from tests.conftest import _copy_sqlite
from tests.integration.test_cluster import make_cluster
from tests.support.cluster import Cluster
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

#: the tasks write "dag_id task_id run_id try_number" to this file when they start
RECORD = '''
import os
from pathlib import Path

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]
FIXED = Path(os.environ["SQUALL_TEST_FIXED_MARKER"])

def record(ti):
    with open(LOG, "a") as f:
        f.write(f"{ti.dag_id} {ti.task_id} {ti.run_id} {ti.try_number}\\n")

def record_or_fail_first_day(ti):
    record(ti)
    if "2024-01-01" in ti.run_id and not FIXED.exists():
        raise RuntimeError("broken on the first day until fixed")

def record_or_fail_third_day(ti):
    record(ti)
    if "2024-01-03" in ti.run_id and not Path(f"{FIXED}.{ti.dag_id}").exists():
        raise RuntimeError("broken on the third day until fixed")
'''

CHAIN_DAG = '''
import pendulum
from squall import DAG, PythonOperator
from bf_record import record

with DAG("DAG_ID", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         is_paused_upon_creation=True, max_active_runs=16):
    (PythonOperator(task_id="a", python_callable=record)
     >> PythonOperator(task_id="b", python_callable=record)
     >> PythonOperator(task_id="c", python_callable=record))
'''

DEPENDS_DAG = '''
import pendulum
from squall import DAG, PythonOperator
from bf_record import record_or_fail_first_day

with DAG("bf_dop", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         is_paused_upon_creation=True, max_active_runs=16):
    PythonOperator(task_id="t", python_callable=record_or_fail_first_day,
                   depends_on_past=True, retries=0)
'''

#: day 3 fails (until fixed), so days 4 and 5 wait behind it: the backfill deadlocks
RESUME_DAG = '''
import pendulum
from squall import DAG, PythonOperator
from bf_record import record_or_fail_third_day

with DAG("DAG_ID", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         is_paused_upon_creation=True, max_active_runs=16):
    PythonOperator(task_id="t", python_callable=record_or_fail_third_day,
                   depends_on_past=True, retries=0)
'''

POOL_DAG = '''
import pendulum
from squall import DAG, BashOperator

with DAG("bf_pool", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         is_paused_upon_creation=True, max_active_runs=16):
    for i in range(4):
        BashOperator(task_id=f"s{i}", bash_command="sleep 0.5", pool="one_slot")
'''

CHAIN_DAGS = ("bf_chain", "bf_back", "bf_dry", "bf_kill", "bf_multi")
RESUME_DAGS = ("bf_rerun", "bf_reset")
TASKS = ["a", "b", "c"]


def run_id(day: int) -> str:
    return f"backfill__2024-01-{day:02d}T00:00:00+00:00"


@pytest.fixture(scope="module", params=["redis-pg", "standalone"])
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster per kind for the whole module (each test has DAGs of its own): a
    scheduler and a worker of 4 processes, a pool ``one_slot`` of 1 slot."""
    c = make_cluster(request, request.param, tmp_path_factory.mktemp("backfill") / "home")
    (c.dags_folder / "bf_record.py").write_text(RECORD)
    for dag_id in CHAIN_DAGS:
        (c.dags_folder / f"{dag_id}.py").write_text(CHAIN_DAG.replace("DAG_ID", dag_id))
    (c.dags_folder / "bf_dop.py").write_text(DEPENDS_DAG)
    (c.dags_folder / "bf_pool.py").write_text(POOL_DAG)
    for dag_id in RESUME_DAGS:
        (c.dags_folder / f"{dag_id}.py").write_text(RESUME_DAG.replace("DAG_ID", dag_id))
    c.extra_env["SQUALL_TEST_EXEC_LOG"] = str(c.home / "executions.log")
    c.extra_env["SQUALL_TEST_FIXED_MARKER"] = str(c.home / "fixed")
    if request.param == "standalone":  # a copy of the session's migrated SQLite file
        _copy_sqlite(request.getfixturevalue("_sqlite_template"), c.home / "squall.db")
    # (the PostgreSQL database is migrated once a session and emptied by make_cluster)
    try:
        c.start_scheduler()
        worker = c.start_worker(concurrency=4, wait=False)
        c.cli("pools", "set", "one_slot", "1")
        wait_until(lambda: b"ready" in worker.log_path.read_bytes()
                   or worker.process.poll() is not None, 60, message="the worker to be ready")
        assert worker.process.poll() is None, c.logs()
        yield c
    finally:
        # all asked to stop at once, then waited for
        for proc in c.procs:
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        for proc in c.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.process.wait(30)
        c.stop_all()


# --------------------------------------------------------------------------- helpers


def executions(cluster: Cluster, dag_id: str) -> list[tuple[str, str, int]]:
    """``(task_id, run_id, try_number)`` of each execution of ``dag_id``, in start order."""
    path = Path(cluster.extra_env["SQUALL_TEST_EXEC_LOG"])
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        dag, task_id, run, try_number = line.split()
        if dag == dag_id:
            out.append((task_id, run, int(try_number)))
    return out


def backfills(cluster: Cluster, dag_id: str) -> list[Backfill]:
    with session_scope(cluster.session_factory) as session:
        return list(session.scalars(select(Backfill).where(Backfill.dag_id == dag_id)
                                    .order_by(Backfill.id)))


def dag_runs(cluster: Cluster, dag_id: str) -> list[DagRun]:
    """The DAG's runs, in logical date order."""
    with session_scope(cluster.session_factory) as session:
        return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                    .order_by(DagRun.logical_date, DagRun.id)))


def task_instances(cluster: Cluster, dag_id: str) -> list[TaskInstance]:
    with session_scope(cluster.session_factory) as session:
        return list(session.scalars(select(TaskInstance)
                                    .where(TaskInstance.dag_id == dag_id)))


def backfill_id_in(output: str, dag_id: str) -> int:
    match = re.search(rf"Created backfill (\d+) of {dag_id}: ", output)
    assert match, output
    return int(match.group(1))


def wait_for_backfill(cluster: Cluster, backfill_id: int, timeout: float = 90) -> str:
    """Wait until the backfill is finished (success, failed or cancelled); its state."""
    def state() -> str | None:
        with session_scope(cluster.session_factory) as session:
            return session.scalar(select(Backfill.state).where(Backfill.id == backfill_id))

    def finished() -> bool:
        for proc in cluster.procs:
            if not proc.stopped and proc.process.poll() is not None:
                raise AssertionError(f"{proc.name} died:\n{cluster.logs()}")
        return state() in ("success", "failed", "cancelled")

    wait_until(finished, timeout, interval=0.2,
               message=f"backfill {backfill_id} to finish (state {state()})\n{cluster.logs()}")
    return str(state())


def assert_all_backfill_runs_succeeded(cluster: Cluster, dag_id: str, backfill_id: int,
                                       days: list[int]) -> list[DagRun]:
    runs = dag_runs(cluster, dag_id)
    assert [r.run_id for r in runs] == [run_id(d) for d in days], runs
    assert {(r.run_type, r.backfill_id, r.state) for r in runs} == {
        ("backfill", backfill_id, "success")}, [(r.run_id, r.state) for r in runs]
    return runs


def assert_one_after_the_other(cluster: Cluster, dag_id: str, order: list[int]) -> None:
    """Each run's task instances ran once, in chain order, and each run's first task
    started after the previous run (in ``order``) had its last task end: in the execution
    log and by the task instances' start and end dates."""
    assert executions(cluster, dag_id) == [
        (task_id, run_id(day), 1) for day in order for task_id in TASKS]
    tis = {(ti.run_id, ti.task_id): ti for ti in task_instances(cluster, dag_id)}
    assert len(tis) == len(order) * len(TASKS)
    assert {(ti.state, ti.try_number) for ti in tis.values()} == {("success", 1)}
    intervals: list[tuple[datetime, datetime]] = []
    for day in order:
        for task_id in TASKS:
            ti = tis[(run_id(day), task_id)]
            assert ti.start_date is not None and ti.end_date is not None, ti
            intervals.append((ti.start_date, ti.end_date))
    for (_, end), (start, _) in pairwise(intervals):
        assert end <= start, intervals


# --------------------------------------------------------------------------- the tests


def test_backfill_runs_each_date_once_in_logical_date_order(cluster: Cluster) -> None:
    proc = cluster.cli("dags", "backfill", "bf_chain", "-s", "2024-01-01", "-e", "2024-01-10",
                       "-y", "--max-active-runs", "1", timeout=150)
    backfill_id = backfill_id_in(proc.stdout, "bf_chain")
    assert f"Backfill {backfill_id} of bf_chain: success (10 runs)" in proc.stdout, proc.stdout
    [row] = backfills(cluster, "bf_chain")
    assert (row.id, row.state, row.total_runs) == (backfill_id, "success", 10)
    assert row.completed_at is not None
    assert_all_backfill_runs_succeeded(cluster, "bf_chain", backfill_id, list(range(1, 11)))
    assert_one_after_the_other(cluster, "bf_chain", list(range(1, 11)))


def test_backwards_backfill_runs_newest_first(cluster: Cluster) -> None:
    proc = cluster.cli("dags", "backfill", "bf_back", "-s", "2024-01-03", "-e", "2024-01-05",
                       "-B", "-y", "--max-active-runs", "1", timeout=150)
    backfill_id = backfill_id_in(proc.stdout, "bf_back")
    assert f"Backfill {backfill_id} of bf_back: success (3 runs)" in proc.stdout, proc.stdout
    assert [(b.run_backwards, b.state) for b in backfills(cluster, "bf_back")] == [
        (True, "success")]
    assert_all_backfill_runs_succeeded(cluster, "bf_back", backfill_id, [3, 4, 5])
    assert_one_after_the_other(cluster, "bf_back", [5, 4, 3])


def test_dry_run_creates_nothing(cluster: Cluster) -> None:
    out = cluster.cli("dags", "backfill", "bf_dry", "-s", "2024-01-01", "-e", "2024-01-03",
                      "--dry-run").stdout
    for day in (1, 2, 3):
        assert run_id(day) in out, out
    assert "nothing was created" in out, out
    assert backfills(cluster, "bf_dry") == []
    assert dag_runs(cluster, "bf_dry") == []
    assert executions(cluster, "bf_dry") == []


def test_backfill_goes_on_when_the_following_cli_is_killed(cluster: Cluster) -> None:
    out_path = cluster.home / "bf_kill.out"
    with out_path.open("wb") as out:
        cli = subprocess.Popen(
            [sys.executable, "-m", "squall", "dags", "backfill", "bf_kill", "-s", "2024-01-01",
             "-e", "2024-01-04", "-y", "--max-active-runs", "1"],
            env=cluster.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        def one_run_finished() -> bool:
            assert cli.poll() is None, out_path.read_text(errors="replace")
            return any(r.state == "success" for r in dag_runs(cluster, "bf_kill"))

        wait_until(one_run_finished, 60, interval=0.1,
                   message=f"a bf_kill run to succeed\n{cluster.logs()}")
        runs = dag_runs(cluster, "bf_kill")
        assert sum(r.state == "success" for r in runs) < 4, "too late to kill it midway"
        os.killpg(cli.pid, signal.SIGKILL)
        assert cli.wait(10) == -signal.SIGKILL
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    [row] = backfills(cluster, "bf_kill")
    assert wait_for_backfill(cluster, row.id) == "success", cluster.logs()
    assert_all_backfill_runs_succeeded(cluster, "bf_kill", row.id, [1, 2, 3, 4])
    assert_one_after_the_other(cluster, "bf_kill", [1, 2, 3, 4])


@pytest.mark.parametrize("cluster", ["redis-pg"], indirect=True)  # several schedulers: PG
def test_two_schedulers_create_and_run_each_date_once(cluster: Cluster) -> None:
    second = cluster.start_scheduler("s2")
    try:
        wait_until(lambda: re.search(rb"scheduler: job \d+ started",
                                     second.log_path.read_bytes())
                   or second.process.poll() is not None, 60,
                   message="the second scheduler's job to start")
        proc = cluster.cli("dags", "backfill", "bf_multi", "-s", "2024-01-01", "-e",
                           "2024-01-10", "-y", "--max-active-runs", "4", timeout=150)
        backfill_id = backfill_id_in(proc.stdout, "bf_multi")
        assert f"Backfill {backfill_id} of bf_multi: success (10 runs)" in proc.stdout, (
            proc.stdout)
        assert second.process.poll() is None, cluster.logs("s2")
    finally:
        cluster.stop(second)
    assert [b.state for b in backfills(cluster, "bf_multi")] == ["success"]
    runs = assert_all_backfill_runs_succeeded(cluster, "bf_multi", backfill_id,
                                              list(range(1, 11)))
    assert len({r.logical_date for r in runs}) == 10
    ran = Counter(executions(cluster, "bf_multi"))
    assert ran == Counter({(t, run_id(d), 1): 1 for d in range(1, 11) for t in TASKS})
    tis = task_instances(cluster, "bf_multi")
    assert len(tis) == 30 and {(ti.state, ti.try_number) for ti in tis} == {("success", 1)}


def test_depends_on_past_holds_later_runs_back_until_the_first_is_cleared(
        cluster: Cluster) -> None:
    out = cluster.cli("dags", "backfill", "bf_dop", "-s", "2024-01-01", "-e", "2024-01-03",
                      "--max-active-runs", "3", "--detach", "-y").stdout
    backfill_id = backfill_id_in(out, "bf_dop")

    def reasons() -> dict[str, tuple[str, str | None]]:
        return {ti.run_id: (ti.state, ti.state_reason)
                for ti in task_instances(cluster, "bf_dop")}

    def waiting_on(day: int, state: str) -> str:
        return (f"depends_on_past: waiting for previous task instance bf_dop.t of run "
                f"{run_id(day - 1)} ({state}) to succeed or be skipped")

    def held_back() -> bool:
        now = reasons()
        return (now.get(run_id(1), ("",))[0] == "failed"
                and now.get(run_id(2)) == ("none", waiting_on(2, "failed"))
                and now.get(run_id(3)) == ("none", waiting_on(3, "none")))

    wait_until(held_back, 60, interval=0.2,
               message=f"run 1 to fail and runs 2, 3 to wait ({reasons()})\n{cluster.logs()}")
    assert {r.run_id: r.state for r in dag_runs(cluster, "bf_dop")} == {
        run_id(1): "failed", run_id(2): "running", run_id(3): "running"}
    assert executions(cluster, "bf_dop") == [("t", run_id(1), 1)]

    (cluster.home / "fixed").touch()
    out = cluster.cli("tasks", "clear", "bf_dop", "-t", "^t$", "-s", "2024-01-01", "-e",
                      "2024-01-01", "-y").stdout
    assert "Cleared 1 task instance(s)" in out, out

    def all_succeeded() -> bool:
        return [r.state for r in dag_runs(cluster, "bf_dop")] == ["success"] * 3

    wait_until(all_succeeded, 60, interval=0.2,
               message=f"the three runs to succeed ({reasons()})\n{cluster.logs()}")
    assert executions(cluster, "bf_dop") == [
        ("t", run_id(1), 1), ("t", run_id(1), 2), ("t", run_id(2), 1), ("t", run_id(3), 1)]
    tis = {ti.run_id: ti for ti in task_instances(cluster, "bf_dop")}
    for earlier, later in ((1, 2), (2, 3)):
        end, start = tis[run_id(earlier)].end_date, tis[run_id(later)].start_date
        assert end is not None and start is not None and end <= start, tis
    # the backfill is over too: a success when the clear came in time, else failed by the
    # scheduler's deadlock verdict (5 s with nothing able to move), naming the held runs
    state = wait_for_backfill(cluster, backfill_id)
    [row] = backfills(cluster, "bf_dop")
    if state != "success":
        assert state == "failed" and row.reason is not None, (state, row.reason)
        assert row.reason.startswith("deadlock: 2 task instance(s) can never run:"), row.reason
        assert f"t in {run_id(2)} (none): {waiting_on(2, 'failed')}" in row.reason, row.reason


def test_a_pool_of_one_slot_runs_one_task_instance_at_a_time(cluster: Cluster) -> None:
    proc = cluster.cli("dags", "backfill", "bf_pool", "-s", "2024-01-01", "-e", "2024-01-02",
                       "-y", "--max-active-runs", "2", timeout=150)
    backfill_id = backfill_id_in(proc.stdout, "bf_pool")
    assert f"Backfill {backfill_id} of bf_pool: success (2 runs)" in proc.stdout, proc.stdout
    assert_all_backfill_runs_succeeded(cluster, "bf_pool", backfill_id, [1, 2])
    tis = task_instances(cluster, "bf_pool")
    assert len(tis) == 8 and {(ti.state, ti.pool) for ti in tis} == {("success", "one_slot")}
    intervals = sorted((ti.start_date, ti.end_date, ti.run_id, ti.task_id) for ti in tis
                       if ti.start_date is not None and ti.end_date is not None)
    assert len(intervals) == 8, tis
    for earlier, later in pairwise(intervals):
        assert earlier[1] <= later[0], f"{earlier} overlaps {later}"


def deadlock_at_day_3(cluster: Cluster, dag_id: str) -> int:
    """Backfill days 1-5 of ``dag_id``: day 3 fails and days 4, 5 wait behind it until the
    backfill is called deadlocked (exit 1). Days 4 and 5, left unfinished, say so and how
    to resume them, where a run's backfill is shown. The backfill's id."""
    first = cluster.cli("dags", "backfill", dag_id, "-s", "2024-01-01", "-e", "2024-01-05",
                        "-y", check=False, timeout=150)
    assert first.returncode == 1, f"{first.stdout}\n{first.stderr}\n{cluster.logs()}"
    assert "deadlock: 2 task instance(s) can never run" in first.stderr, first.stderr
    assert {r.run_id: r.state for r in dag_runs(cluster, dag_id)} == {
        run_id(1): "success", run_id(2): "success", run_id(3): "failed",
        run_id(4): "running", run_id(5): "running"}
    backfill_id = backfill_id_in(first.stdout, dag_id)
    resume = (f"squall dags backfill {dag_id} -s 2024-01-01T00:00:00+00:00 -e "
              "2024-01-05T00:00:00+00:00 --rerun-failed-tasks --max-active-runs 16")
    left = f"It left 2 run(s) unfinished, which no backfill follows: {run_id(4)}, {run_id(5)}"
    assert left in first.stderr and resume in first.stderr, first.stderr
    shown = cluster.cli("backfills", "show", str(backfill_id)).stdout
    assert left in shown and resume in shown, shown
    states = cluster.cli("tasks", "states-for-dag-run", dag_id, run_id(4)).stdout
    assert (f"Run {run_id(4)}: backfill {backfill_id} ended (deadlocked) with this run "
            "unfinished and no backfill follows it; fix what held it back, then resume with: "
            + resume) in states, states
    return backfill_id


@pytest.mark.parametrize("cluster", ["redis-pg"], indirect=True)
def test_rerun_failed_tasks_takes_in_the_runs_a_deadlocked_backfill_left_waiting(
        cluster: Cluster) -> None:
    first = deadlock_at_day_3(cluster, "bf_rerun")
    (cluster.home / "fixed.bf_rerun").touch()
    again = cluster.cli("dags", "backfill", "bf_rerun", "-s", "2024-01-01", "-e",
                        "2024-01-05", "--rerun-failed-tasks", "-y", check=False, timeout=150)
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}\n{cluster.logs()}"
    second = backfill_id_in(again.stdout, "bf_rerun")
    assert (f"Taken in: bf_rerun run {run_id(4)} (backfill, running) at "
            f"2024-01-04T00:00:00+00:00: nothing drives it (backfill {first} ended (failed))"
            ) in again.stdout, again.stdout
    assert (f"Backfill {second} of bf_rerun: success (3 runs); its range has 5 runs: "
            "success 5") in again.stdout, again.stdout
    runs = dag_runs(cluster, "bf_rerun")
    assert [(r.run_id, r.state, r.backfill_id) for r in runs] == [
        (run_id(1), "success", first), (run_id(2), "success", first),
        (run_id(3), "success", second), (run_id(4), "success", second),
        (run_id(5), "success", second)]
    assert executions(cluster, "bf_rerun") == [
        ("t", run_id(1), 1), ("t", run_id(2), 1), ("t", run_id(3), 1), ("t", run_id(3), 2),
        ("t", run_id(4), 1), ("t", run_id(5), 1)]


@pytest.mark.parametrize("cluster", ["redis-pg"], indirect=True)
def test_reset_dagruns_over_a_deadlocked_backfill_runs_its_whole_range_again(
        cluster: Cluster) -> None:
    deadlock_at_day_3(cluster, "bf_reset")
    (cluster.home / "fixed.bf_reset").touch()
    again = cluster.cli("dags", "backfill", "bf_reset", "-s", "2024-01-01", "-e",
                        "2024-01-05", "--reset-dagruns", "-y", check=False, timeout=150)
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}\n{cluster.logs()}"
    second = backfill_id_in(again.stdout, "bf_reset")
    assert (f"Backfill {second} of bf_reset: success (5 runs); its range has 5 runs: "
            "success 5") in again.stdout, again.stdout
    assert [(r.state, r.backfill_id) for r in dag_runs(cluster, "bf_reset")] == [
        ("success", second)] * 5
    ran = executions(cluster, "bf_reset")
    assert ran[:3] == [("t", run_id(d), 1) for d in (1, 2, 3)], ran
    assert ran[3:] == [("t", run_id(1), 2), ("t", run_id(2), 2), ("t", run_id(3), 2),
                       ("t", run_id(4), 1), ("t", run_id(5), 1)], ran
