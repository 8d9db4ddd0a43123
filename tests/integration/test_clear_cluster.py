"""``squall tasks clear`` against a real cluster (scheduler and Celery worker): a running
try is stopped and runs again as the next try, and a finished run runs again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_cluster import executions, make_cluster
from tests.support.cluster import Cluster
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

CLEAR_DAG = '''
import os
import time
import pendulum
from squall import DAG, PythonOperator

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]

def record(ti):
    with open(LOG, "a") as f:
        f.write(f"{ti.task_id} {ti.run_id} {ti.try_number}\\n")
    if ti.task_id == "slow" and ti.try_number == 1:
        time.sleep(300)  # until cleared

with DAG("clr", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    (PythonOperator(task_id="first", python_callable=record)
     >> PythonOperator(task_id="slow", python_callable=record)
     >> PythonOperator(task_id="last", python_callable=record))
'''


@pytest.fixture(params=["redis-pg", "standalone"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, request.param, tmp_path / "home")
    yield c
    c.stop_all()


def test_clear_a_running_task_then_a_finished_run(cluster: Cluster) -> None:
    (cluster.dags_folder / "clr.py").write_text(CLEAR_DAG)
    exec_log = cluster.home / "executions.log"
    cluster.extra_env["SQUALL_TEST_EXEC_LOG"] = str(exec_log)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker()
    run_id = cluster.trigger("clr")
    wait_until(lambda: ("slow", run_id, "1") in executions(exec_log), 90,
               message=f"slow to start its first try\n{cluster.logs()}")

    out = cluster.cli("tasks", "clear", "clr", "-t", "^slow$", "-d", "-y").stdout
    assert "Cleared 2 task instance(s) (1 running" in out, out
    assert cluster.wait_for_run("clr", run_id) == "success", cluster.logs()
    tis = {t: (ti.state, ti.try_number) for t, ti in
           cluster.task_instances("clr", run_id).items()}
    assert tis == {"first": ("success", 1), "slow": ("success", 2), "last": ("success", 1)}
    assert executions(exec_log) == {("first", run_id, "1"): 1, ("slow", run_id, "1"): 1,
                                    ("slow", run_id, "2"): 1, ("last", run_id, "1"): 1}

    out = cluster.cli("tasks", "clear", "clr", "--run-id", run_id, "-y").stdout
    assert "Queued again 1 finished DAG run(s)" in out, out
    wanted = {"first": ("success", 2), "slow": ("success", 3), "last": ("success", 2)}

    def ran_again() -> bool:
        tis = {t: (ti.state, ti.try_number) for t, ti in
               cluster.task_instances("clr", run_id).items()}
        return tis == wanted and cluster.run_state("clr", run_id) == "success"

    wait_until(ran_again, 90, interval=0.2,
               message=f"the cleared run to run again\n{cluster.logs()}")
    assert sum(executions(exec_log).values()) == 7
