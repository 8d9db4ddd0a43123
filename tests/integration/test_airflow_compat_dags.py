"""Airflow 2 DAG files (``tests/integration/airflow2_dags``, one per area of issue 14 items 4
and 7) run unchanged under ``[core] airflow_compat = true``: through ``squall dags test``
as a user runs it, and through a cluster, each task ending in the state Airflow 2 gives it."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import DagRun, XCom
from tests.integration.test_cluster import make_cluster
from tests.support.cluster import Cluster

DAGS = Path(__file__).parent / "airflow2_dags"
COMPAT = {"SQUALL__CORE__AIRFLOW_COMPAT": "true"}


def _copy_dags(cluster: Cluster) -> None:
    for path in DAGS.iterdir():
        if path.suffix in (".py", ".sql"):
            shutil.copy(path, cluster.dags_folder / path.name)
    cluster.extra_env.update(COMPAT)


def _xcom(cluster: Cluster, dag_id: str, run_id: str, task_id: str,
          key: str = "return_value") -> Any:
    with session_scope(cluster.session_factory) as session:
        text = session.scalar(select(XCom.value).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id,
            XCom.key == key))
    return None if text is None else json.loads(text)


def _states(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, str]:
    return {t: ti.state for t, ti in cluster.task_instances(dag_id, run_id).items()}


def _dags_test(cluster: Cluster, dag_id: str, date: str, *extra: str) -> dict[str, Any]:
    proc = cluster.cli("dags", "test", dag_id, date, *extra, "-o", "json", check=False,
                       timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    result["states"] = {t["task_id"]: t["state"] for t in result["task_instances"]}
    # why a task ended as it did, shown when an assertion on the states fails
    print(dag_id, {t["task_id"]: t["reason"] for t in result["task_instances"]})
    assert proc.returncode == (0 if result["state"] == "success" else 1)
    return result


CUSTOM_STATES = {"greet": "success", "wait_for_greeting": "success", "branch": "success",
                 "taken": "success", "not_taken": "skipped", "join": "success"}
DOWNSTREAM_STATES = {"wait_produce": "success", "wait_produce_fn": "success",
                     "wait_broken": "failed", "wait_yesterday": "skipped", "done": "success"}


def test_airflow2_dag_files_under_dags_test(tmp_path: Path) -> None:
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    _copy_dags(cluster)
    cluster.cli("db", "migrate")
    listed = {d["dag_id"] for d in cluster.cli_json("dags", "list")}  # parses and records
    assert {"af2_context", "af2_custom", "af2_run_as_user", "af2_target", "af2_controller",
            "af2_upstream", "af2_downstream", "af2_latest_only"} <= listed
    assert cluster.cli("dags", "list-import-errors").stdout.strip() == "No import errors."

    # the template context (a manual run: prev_ds and next_ds are its own date); the DAG
    # starts two days ago (days_ago(2)), so the run is at noon yesterday
    noon = pendulum.now("UTC").start_of("day").subtract(hours=12)
    ran = _dags_test(cluster, "af2_context", noon.isoformat())
    assert ran["states"] == {"echo": "success", "check": "success", "pull": "success"}
    ds = noon.to_date_string()
    assert _xcom(cluster, "af2_context", ran["run_id"], "echo") == (
        f"{ds} {noon.format('YYYYMMDD')} {noon.subtract(days=1).to_date_string()} "
        f"{noon.add(days=1).to_date_string()} {noon.add(days=7).to_date_string()} "
        f"{noon.format('YYYYMMDD')}T120000+0000")

    # a custom operator (template_ext file, apply_defaults), a custom sensor, Airflow 1 paths
    ran = _dags_test(cluster, "af2_custom", "2024-01-01")
    assert ran["states"] == CUSTOM_STATES
    assert _xcom(cluster, "af2_custom", ran["run_id"], "greet") == (
        "hello 2024-01-01|SELECT '2024-01-01' AS day FROM events")

    # run_as_user is the worker's business: dags test runs the task as its own user
    ran = _dags_test(cluster, "af2_run_as_user", "2024-01-01")
    assert ran["states"] == {"whoami": "success"}
    assert _xcom(cluster, "af2_run_as_user", ran["run_id"], "whoami") == getpass.getuser()

    # TriggerDagRunOperator queues a run of the other DAG, with its conf, for a scheduler
    ran = _dags_test(cluster, "af2_controller", "2024-01-01")
    assert ran["states"] == {"trigger": "success"}
    assert _xcom(cluster, "af2_controller", ran["run_id"], "trigger",
                 "trigger_run_id") == "from_controller_20240101"
    with session_scope(cluster.session_factory) as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == "af2_target")).one()
        assert (run.run_id, run.state, run.conf, run.external_trigger) == (
            "from_controller_20240101", "queued", {"message": "hello from 2024-01-01"}, True)
        assert run.logical_date == pendulum.datetime(2024, 1, 1, tz="UTC")
    ran = _dags_test(cluster, "af2_target", "2024-01-02", "--conf", '{"message": "hi"}')
    assert ran["states"] == {"read_conf": "success"}
    assert _xcom(cluster, "af2_target", ran["run_id"], "read_conf") == "hi"

    # ExternalTaskSensor: the upstream DAG's run first, then the sensors at the same date
    ran = _dags_test(cluster, "af2_upstream", "2024-01-01")
    assert (ran["state"], ran["states"]) == ("failed", {"produce": "success",
                                                        "broken": "failed"})
    ran = _dags_test(cluster, "af2_downstream", "2024-01-01")
    assert (ran["state"], ran["states"]) == ("failed", DOWNSTREAM_STATES)

    # LatestOnlyOperator: `dags test` makes a manual run that is not externally triggered
    # (Airflow 2.10: DAG.test -> _get_or_create_dagrun -> create_dagrun(external_trigger
    # False)), so LatestOnlyOperator.choose_branch looks at the schedule: the run for today
    # (whose next data interval holds now) goes on, yesterday's skips its downstream
    today = pendulum.now("UTC").start_of("day")
    ran = _dags_test(cluster, "af2_latest_only", today.isoformat())
    assert ran["states"] == {"latest_only": "success", "work": "success", "after": "success"}
    ran = _dags_test(cluster, "af2_latest_only", today.subtract(days=1).isoformat())
    assert ran["states"] == {"latest_only": "success", "work": "skipped", "after": "success"}


def test_deprecated_airflow2_arguments_under_dags_test(tmp_path: Path) -> None:
    """af2_deprecated.py passes the arguments Airflow 2.10 accepts with a deprecation
    warning; the file loads, the warnings are shown, and the arguments have their effect
    (the trigger rules 'dummy' and 'none_failed_or_skipped' let tasks after a skip run)."""
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    shutil.copy(DAGS / "af2_deprecated.py", cluster.dags_folder / "af2_deprecated.py")
    cluster.extra_env.update(COMPAT)
    cluster.cli("db", "migrate")
    listed = cluster.cli("dags", "list", "-o", "json")
    assert [d["dag_id"] for d in json.loads(listed.stdout)] == ["af2_deprecated"]
    assert "provide_context is deprecated and has no effect" in listed.stderr
    assert cluster.cli("dags", "list-import-errors").stdout.strip() == "No import errors."

    ran = _dags_test(cluster, "af2_deprecated", "2024-01-01")
    assert ran["states"] == {"greet": "success", "skipped": "skipped", "ok": "success",
                             "joined": "success", "after_skip": "success"}
    assert _xcom(cluster, "af2_deprecated", ran["run_id"], "greet") == "hello 2024-01-01"


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def _wait_for_runs(cluster: Cluster, dag_id: str, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(cluster.session_factory) as session:
            runs = session.scalars(select(DagRun.run_id).where(DagRun.dag_id == dag_id)
                                   .order_by(DagRun.logical_date)).all()
        if len(runs) >= count:
            return list(runs)
        time.sleep(0.2)
    raise AssertionError(f"{dag_id}: fewer than {count} runs after {timeout} s:\n"
                         f"{cluster.logs()}")


def test_airflow2_dag_files_through_a_cluster(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    _copy_dags(cluster)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=6)
    on = "2024-02-01T00:00:00+00:00"
    runs = {
        "af2_custom": cluster.trigger("af2_custom"),
        "af2_run_as_user": cluster.trigger("af2_run_as_user"),
        "af2_controller_wait": cluster.trigger("af2_controller_wait"),
        # the sensors start first and wait (reschedule and poke) for the upstream run
        "af2_downstream": cluster.trigger("af2_downstream", "-e", on),
    }
    runs["af2_upstream"] = cluster.trigger("af2_upstream", "-e", on)
    # scheduled runs: one for the context DAG (no catch-up), three for latest-only
    scheduled_context = _wait_for_runs(cluster, "af2_context", 1)[0]
    latest_only_runs = _wait_for_runs(cluster, "af2_latest_only", 3)

    for dag_id, run_id in runs.items():
        cluster.wait_for_run(dag_id, run_id)
    assert _states(cluster, "af2_custom", runs["af2_custom"]) == CUSTOM_STATES
    assert _states(cluster, "af2_upstream", runs["af2_upstream"]) == {
        "produce": "success", "broken": "failed"}
    assert _states(cluster, "af2_downstream", runs["af2_downstream"]) == DOWNSTREAM_STATES

    whoami = cluster.task_instances("af2_run_as_user", runs["af2_run_as_user"])["whoami"]
    if os.geteuid() == 0:  # the worker runs as root: the task runs as nobody
        assert whoami.state == "success"
        assert _xcom(cluster, "af2_run_as_user", runs["af2_run_as_user"],
                     "whoami") == "nobody"
    else:  # a worker that is not root refuses, saying why
        assert whoami.state == "failed" and "not root" in (whoami.state_reason or "")

    assert _states(cluster, "af2_controller_wait", runs["af2_controller_wait"]) == {
        "trigger_and_wait": "success", "after_ok": "success", "trigger_failing": "failed"}
    waited = _xcom(cluster, "af2_controller_wait", runs["af2_controller_wait"],
                   "trigger_and_wait", "trigger_run_id")
    assert cluster.run_state("af2_target", waited) == "success"
    assert _xcom(cluster, "af2_target", waited, "read_conf") == "waited"

    # a scheduled run: prev_ds and next_ds are the neighbouring days
    assert cluster.wait_for_run("af2_context", scheduled_context) == "success"
    with session_scope(cluster.session_factory) as session:
        logical = session.scalar(select(DagRun.logical_date).where(
            DagRun.run_id == scheduled_context, DagRun.dag_id == "af2_context"))
    assert logical is not None
    echoed = _xcom(cluster, "af2_context", scheduled_context, "echo").split()
    day = pendulum.instance(logical)
    assert echoed[:2] == [day.subtract(days=1).to_date_string(),
                          day.add(days=1).format("YYYYMMDD")]

    # latest only: the older runs skip their work, the latest one does it
    *older, latest = latest_only_runs
    for run_id in latest_only_runs:
        cluster.wait_for_run("af2_latest_only", run_id)
    for run_id in older:
        assert _states(cluster, "af2_latest_only", run_id) == {
            "latest_only": "success", "work": "skipped", "after": "success"}
    assert _states(cluster, "af2_latest_only", latest) == {
        "latest_only": "success", "work": "success", "after": "success"}
