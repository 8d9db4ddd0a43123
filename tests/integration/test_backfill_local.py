"""``squall dags backfill`` options driven from the outside against real Celery workers, on
Redis + PostgreSQL and on the standalone default: ``--local`` (no scheduler needed; with a
scheduler alive too, nothing runs twice), ``--rerun-failed-tasks`` re-running only the
failed task instances, ``--mark-success`` running nothing, and a deadlock reported by name
with a non-zero exit code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_cluster import executions, make_cluster
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration

OPT_DAG = '''
import os
import pendulum
from squall import DAG, PythonOperator

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]
FIXED = os.environ["SQUALL_TEST_FIXED"]

def record(ti, ds):
    with open(LOG, "a") as f:
        f.write(f"{ti.task_id} {ds} {ti.try_number}\\n")
    if ti.task_id == "a" and ds == "2024-01-02" and not os.path.exists(FIXED):
        raise RuntimeError("broken until fixed")

with DAG("opt", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         catchup=False, max_active_runs=3):
    (PythonOperator(task_id="a", python_callable=record, retries=0)
     >> PythonOperator(task_id="b", python_callable=record))

with DAG("nopool", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         catchup=False):
    PythonOperator(task_id="x", python_callable=record, pool="no_such_pool")
'''


@pytest.fixture(params=["redis-pg", "standalone"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, request.param, tmp_path / "home")
    (c.dags_folder / "opt.py").write_text(OPT_DAG)
    c.extra_env["SQUALL_TEST_EXEC_LOG"] = str(c.home / "executions.log")
    c.extra_env["SQUALL_TEST_FIXED"] = str(c.home / "fixed")
    c.cli("db", "migrate")
    yield c
    c.stop_all()


def ran(cluster: Cluster) -> dict[tuple[str, str, str], int]:
    return dict(executions(cluster.home / "executions.log"))


def test_local_backfill_rerun_failed_mark_success_and_deadlock(cluster: Cluster) -> None:
    cluster.start_worker(concurrency=4)  # no scheduler: --local drives the backfill

    first = cluster.cli("dags", "backfill", "opt", "-s", "2024-01-01", "-e", "2024-01-03",
                        "--local", "-y", check=False, timeout=180)
    assert first.returncode == 1, cluster.logs()
    assert "failed runs: backfill__2024-01-02T00:00:00+00:00" in first.stderr, first.stderr
    assert ran(cluster) == {("a", "2024-01-01", "1"): 1, ("b", "2024-01-01", "1"): 1,
                            ("a", "2024-01-02", "1"): 1, ("a", "2024-01-03", "1"): 1,
                            ("b", "2024-01-03", "1"): 1}

    (cluster.home / "fixed").touch()
    again = cluster.cli("dags", "backfill", "opt", "-s", "2024-01-01", "-e", "2024-01-03",
                        "--rerun-failed-tasks", "--local", "-y", timeout=180)
    assert "Run again: opt run backfill__2024-01-02T00:00:00+00:00" in again.stdout
    assert "clears a, b" in again.stdout, again.stdout
    # only day 2's failed and upstream_failed task instances ran again
    assert ran(cluster) == {("a", "2024-01-01", "1"): 1, ("b", "2024-01-01", "1"): 1,
                            ("a", "2024-01-02", "1"): 1, ("a", "2024-01-03", "1"): 1,
                            ("b", "2024-01-03", "1"): 1, ("a", "2024-01-02", "2"): 1,
                            ("b", "2024-01-02", "1"): 1}
    run2 = cluster.task_instances("opt", "backfill__2024-01-02T00:00:00+00:00")
    assert {t: (ti.state, ti.try_number) for t, ti in run2.items()} == {
        "a": ("success", 2), "b": ("success", 1)}

    before = ran(cluster)
    cluster.cli("dags", "backfill", "opt", "-s", "2024-01-04", "-e", "2024-01-05",
                "--mark-success", "--local", "-y", timeout=180)
    assert ran(cluster) == before  # nothing ran
    for day in ("2024-01-04", "2024-01-05"):
        run_id = f"backfill__{day}T00:00:00+00:00"
        assert cluster.run_state("opt", run_id) == "success"
        assert {ti.state for ti in cluster.task_instances("opt", run_id).values()} == {
            "success"}

    stuck = cluster.cli("dags", "backfill", "nopool", "-s", "2024-01-01", "-e", "2024-01-02",
                        "--local", "-y", check=False, timeout=180)
    assert stuck.returncode == 1, cluster.logs()
    assert "deadlock: 2 task instance(s) can never run" in stuck.stderr, stuck.stderr
    assert ("x in backfill__2024-01-01T00:00:00+00:00 (scheduled): pool 'no_such_pool' "
            "does not exist") in stuck.stderr


def test_local_backfill_beside_a_scheduler_runs_each_task_once(cluster: Cluster) -> None:
    (cluster.home / "fixed").touch()
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    cluster.cli("dags", "backfill", "opt", "-s", "2024-01-01", "-e", "2024-01-08",
                "--local", "--max-active-runs", "4", "-y", timeout=240)
    # (the scheduler also makes the DAG's latest scheduled run: today's, not counted)
    counts = {k: n for k, n in ran(cluster).items() if k[1].startswith("2024-01-")}
    assert len(counts) == 16 and set(counts.values()) == {1}, counts
    assert {key[2] for key in counts} == {"1"}
