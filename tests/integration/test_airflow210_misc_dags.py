"""Airflow 2.10 DAG files of issue 24's remaining core surface
(``tests/integration/airflow210_misc_dags``) run unchanged under ``[core] airflow_compat``:
through ``squall dags test`` and through a Redis + PostgreSQL cluster, each task ending in
the state the real Airflow 2.10.5 gives it (checked with ``airflow dags test``; the rule each
follows is in the DAG file's docstring)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import DagModel, DagRun
from tests.integration.test_airflow_compat_dags import _xcom
from tests.integration.test_cluster import make_cluster
from tests.support.airflow_files import copy_dag_files, dags_test
from tests.support.cluster import Cluster

DAGS = Path(__file__).parent / "airflow210_misc_dags"


SKIPS_STATES = {"skipper": "skipped", "after_skip": "skipped", "only_if_go": "skipped",
                "not_in_2024": "skipped", "always": "success", "lenient": "success",
                "smooth": "success"}
SENSOR_STATES = {"time_passed": "success", "date_passed": "success", "monday": "success",
                 "sunday_soft": "skipped", "bash_ok": "success", "bash_fails": "failed"}


def test_airflow210_dag_files_under_dags_test(tmp_path: Path) -> None:
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    copy_dag_files(cluster, DAGS, "af210_fail_stop", "af210_skips", "af210_sensors",
                   "af210_continuous")
    cluster.cli("db", "migrate")
    listed = cluster.cli("dags", "list", "-o", "json")
    assert {d["dag_id"] for d in json.loads(listed.stdout)} == {
        "af210_fail_stop", "af210_skips", "af210_sensors", "af210_continuous"}
    assert cluster.cli("dags", "list-import-errors").stdout.strip() == "No import errors."
    assert "access_control is ignored" in listed.stderr

    # fail_stop: one task at a time, slow before boom; boom fails and after is skipped; the
    # leaves succeeded or were skipped, so the run succeeds (Airflow 2.10.5's dags test
    # gives exactly these states)
    ran = dags_test(cluster, "af210_fail_stop", "2024-01-01")
    assert ran["states"] == {"start": "success", "boom": "failed", "slow": "success",
                             "after": "skipped"}
    assert ran["state"] == "success"
    assert "fail_stop" in (ran["reasons"]["after"] or "")

    # on_skipped_callback, run_if / skip_if, get_current_context, macros, template_undefined
    ran = dags_test(cluster, "af210_skips", "2024-01-01")
    assert ran["states"] == SKIPS_STATES
    run_id = ran["run_id"]
    assert _xcom(cluster, "af210_skips", run_id, "skipper", "skipped_callback") == "skipper"
    assert _xcom(cluster, "af210_skips", run_id, "always") == "2024-01-01 2024-01-02"
    assert _xcom(cluster, "af210_skips", run_id, "lenient") == "[]"
    assert _xcom(cluster, "af210_skips", run_id, "lenient", "pre") == "pre ran"

    ran = dags_test(cluster, "af210_sensors", "2024-01-01")
    assert (ran["state"], ran["states"]) == ("failed", SENSOR_STATES)


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def _wait(what: str, check: Any, cluster: Cluster, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what}: not after {timeout} s:\n{cluster.logs()}")


def test_airflow210_dag_files_through_a_cluster(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    copy_dag_files(cluster, DAGS)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    fail_stop = cluster.trigger("af210_fail_stop")
    skips = cluster.trigger("af210_skips", "-e", "2024-01-01T00:00:00+00:00")

    # fail_stop: slow is running when boom fails; it is failed (killed), after skipped
    assert cluster.wait_for_run("af210_fail_stop", fail_stop) == "failed"
    states = {t: ti.state for t, ti in cluster.task_instances(
        "af210_fail_stop", fail_stop).items()}
    assert states == {"start": "success", "boom": "failed", "slow": "failed",
                      "after": "skipped"}

    # the skipped callback runs on the worker, in the task's process
    assert cluster.wait_for_run("af210_skips", skips) == "success"
    assert {t: ti.state for t, ti in cluster.task_instances(
        "af210_skips", skips).items()} == SKIPS_STATES
    assert _xcom(cluster, "af210_skips", skips, "skipper", "skipped_callback") == "skipper"

    # max_consecutive_failed_dag_runs=2: both catch-up runs fail, then the DAG is paused
    def paused() -> bool:
        with session_scope(cluster.session_factory) as session:
            return bool(session.scalar(select(DagModel.is_paused).where(
                DagModel.dag_id == "af210_paused")))

    _wait("af210_paused paused", paused, cluster)
    with session_scope(cluster.session_factory) as session:
        run_states = session.scalars(select(DagRun.state).where(
            DagRun.dag_id == "af210_paused")).all()
    assert sorted(run_states) == ["failed", "failed"]
    assert "Pausing DAG af210_paused because last 2 DAG runs failed" in cluster.logs(
        "scheduler", tail=100_000)

    # @continuous: one run after another, never two at once
    def three_continuous_runs() -> list[str]:
        with session_scope(cluster.session_factory) as session:
            rows = session.execute(select(DagRun.state, DagRun.start_date, DagRun.end_date)
                                   .where(DagRun.dag_id == "af210_continuous")
                                   .order_by(DagRun.logical_date)).all()
        done = [r for r in rows if r.state == "success"]
        return done if len(done) >= 3 else []

    done = _wait("three @continuous runs", three_continuous_runs, cluster)
    for earlier, later in itertools.pairwise(done):
        assert later.start_date >= earlier.end_date
