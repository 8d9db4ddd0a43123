"""Airflow 2.10 DAG files that defer (``tests/integration/airflow210_deferral_dags``: each
core trigger and deferrable sensor or operator) run unchanged under ``[core]
airflow_compat``: they import, and through a Redis + PostgreSQL cluster with a triggerer
(``squall triggerer``) every task ends in the state, with the XComs, Airflow 2.10.5 gives it.

The expected states were checked with Airflow 2.10.5's ``airflow dags test`` where it can
run them (it runs triggers inline, ignoring deferral timeouts, and cannot run a triggered
DAG), and otherwise follow the rules named in each DAG file's docstring:
``SchedulerJobRunner.check_trigger_timeouts`` (a timed-out deferral resumes in ``__fail__``),
``BaseOperator.resume_execution`` (which raises ``TaskDeferralError``) and
``BaseSensorOperator.resume_execution`` (``soft_fail`` skips), ``TaskInstance.defer_task``
and ``TriggerEvent.handle_submit`` (the resumed method gets the ``defer()`` kwargs and the
event), ``BaseTaskEndEvent.handle_submit`` (``end_from_trigger`` ends the task in success in
Airflow's triggerer; in Squall's it resumes on a worker and succeeds).

The cluster test runs a scheduler, a Celery worker with two slots and ``squall triggerer``:
a deferred task instance is in state ``deferred`` with a ``trigger_id`` while the triggerer
runs its trigger.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import XCom
from tests.integration.test_cluster import make_cluster
from tests.support.airflow_files import copy_dag_files
from tests.support.cluster import Cluster
from tests.support.services import wait_until

DAGS = Path(__file__).parent / "airflow210_deferral_dags"
DAG_IDS = {"af210_defer_time", "af210_defer_file", "af210_defer_target",
           "af210_defer_failing", "af210_defer_controller"}

TIME_STATES = {t: "success" for t in ("delta_wait", "delta_past", "delta_end", "date_wait",
                                      "date_past", "time_past", "report")}
TIME_XCOMS = {"delta_wait": None, "delta_past": True, "delta_end": None, "date_wait": None,
              "date_past": None, "time_past": None,
              "report": {"note": "waited", "event_is_a_moment": True}}
FILE_STATES = {"file_there": "success", "file_later": "success", "after_later": "success",
               "file_never": "failed", "file_never_soft": "skipped"}
CONTROLLER_STATES = {"trigger": "success", "trigger_fails": "failed", "wait_task": "success",
                     "wait_group": "success", "wait_run": "success",
                     "wait_yesterday_soft": "failed"}


def test_the_deferral_dag_files_import(tmp_path: Path) -> None:
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    copy_dag_files(cluster, DAGS)
    cluster.cli("db", "migrate")
    listed = cluster.cli_json("dags", "list")
    assert {d["dag_id"] for d in listed} == DAG_IDS
    assert cluster.cli("dags", "list-import-errors").stdout.strip() == "No import errors."


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def _xcoms(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, Any]:
    with session_scope(cluster.session_factory) as session:
        rows = session.execute(select(XCom.task_id, XCom.value).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id,
            XCom.key == "return_value")).all()
    return {task_id: json.loads(value) for task_id, value in rows}


def _states(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, str | None]:
    return {t: ti.state for t, ti in cluster.task_instances(dag_id, run_id).items()}


def test_the_deferral_dag_files_through_a_cluster(pg_cluster: Cluster, tmp_path: Path) -> None:
    cluster = pg_cluster
    copy_dag_files(cluster, DAGS)
    cluster.cli("db", "migrate")
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "ready.txt").write_text("here before the run")
    cluster.start_scheduler()
    # two slots for a dozen waiting tasks: they can only all wait at once in a triggerer
    cluster.start_worker(concurrency=2)
    cluster.start("triggerer", ["triggerer"])

    runs = {"af210_defer_time": cluster.trigger("af210_defer_time"),
            "af210_defer_file": cluster.trigger("af210_defer_file", "-c",
                                                json.dumps({"folder": str(folder)})),
            "af210_defer_controller": cluster.trigger("af210_defer_controller")}

    # file_later hands its wait to the triggerer (deferred, with a trigger), freeing its slot
    def later_is_deferred() -> bool:
        for proc in cluster.procs:
            if proc.process.poll() is not None:
                raise AssertionError(f"{proc.name} died:\n{cluster.logs()}")
        ti = cluster.task_instances("af210_defer_file", runs["af210_defer_file"]).get(
            "file_later")
        return ti is not None and ti.state == "deferred" and ti.trigger_id is not None

    wait_until(later_is_deferred, 120, message="file_later to defer to a FileTrigger")
    (folder / "later").mkdir()
    (folder / "later" / "data.csv").write_text("a,b\n")

    for dag_id, run_id in runs.items():
        cluster.wait_for_run(dag_id, run_id, timeout=240)
    assert _states(cluster, "af210_defer_time", runs["af210_defer_time"]) == TIME_STATES
    assert _xcoms(cluster, "af210_defer_time", runs["af210_defer_time"]) == {
        t: v for t, v in TIME_XCOMS.items() if v is not None}
    assert _states(cluster, "af210_defer_file", runs["af210_defer_file"]) == FILE_STATES
    controller = runs["af210_defer_controller"]
    assert _states(cluster, "af210_defer_controller", controller) == CONTROLLER_STATES
    assert cluster.run_state("af210_defer_controller", controller) == "failed"
    never = cluster.task_instances("af210_defer_file", runs["af210_defer_file"])["file_never"]
    assert "Trigger/execution timeout" in (never.state_reason or "")
    # execution_timeout passed while deferred: failed before resume_execution (soft_fail or
    # not), as Airflow 2.10.5 (TaskInstance._execute_task raises AirflowTaskTimeout)
    late = cluster.task_instances("af210_defer_controller", controller)["wait_yesterday_soft"]
    assert "execution_timeout" in (late.state_reason or ""), late.state_reason
    fails = cluster.task_instances("af210_defer_controller", controller)["trigger_fails"]
    assert "af210_defer_failing failed with failed state failed" in (fails.state_reason or "")

    # the runs the controller triggered, at its logical date, ended as it saw them
    target_runs = cluster.cli_json("dags", "list-runs", "af210_defer_target")
    failing_runs = cluster.cli_json("dags", "list-runs", "af210_defer_failing")
    assert [r["state"] for r in target_runs] == ["success"]
    assert [r["state"] for r in failing_runs] == ["failed"]
    pushed = _trigger_xcoms(cluster, controller)
    assert pushed[("trigger", "trigger_run_id")] == target_runs[0]["run_id"]


def _trigger_xcoms(cluster: Cluster, run_id: str) -> dict[tuple[str, str], Any]:
    with session_scope(cluster.session_factory) as session:
        rows = session.execute(select(XCom.task_id, XCom.key, XCom.value).where(
            XCom.dag_id == "af210_defer_controller", XCom.run_id == run_id)).all()
    return {(t, k): json.loads(v) for t, k, v in rows}
