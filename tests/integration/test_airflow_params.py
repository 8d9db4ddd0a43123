"""Params (issue 24 item 3) in Airflow 2.10 DAG files run unchanged under
``[core] airflow_compat``: ``squall dags test`` with and without a conf, ``squall dags
trigger`` and ``POST /api/v1/dags/{dag_id}/dagRuns`` refusing a conf that does not validate
(naming the param; no run created), the details endpoint's params with their schemas.

The expectations were checked with Airflow 2.10.5 (see the docstring of
``airflow2_params_dags/af2_params.py``): ``DAG.create_dagrun`` validates the params updated
with the conf (``airflow dags test -c '{"count": "x"}'`` exits 1 with
``ParamValidationError``); ``process_params`` gives tries the DAG's params, updated with the
task's, then with the conf unless ``[core] dag_run_conf_overrides_params`` is false;
``DAG.validate_schedule_and_params`` refuses a scheduled DAG whose defaults do not validate.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagRun, XCom
from squall.common.settings import Settings
from squall.sdk.dag import DAG
from squall.sdk.params import Param
from tests.integration.test_cluster import make_cluster
from tests.support.api import serve
from tests.support.cluster import Cluster
from tests.support.scheduling import Noop, sync_dags

DAGS = Path(__file__).parent / "airflow2_params_dags"
COMPAT = {"SQUALL__CORE__AIRFLOW_COMPAT": "true"}
DEFAULTS = {"count": 2, "name": "world", "flag": False, "when": "2024-01-01T00:00:00+00:00",
            "maybe": None, "tags": ["a"], "plain": 1}


def _prepare(c: Cluster) -> Cluster:
    for path in DAGS.glob("*.py"):
        shutil.copy(path, c.dags_folder / path.name)
    c.extra_env.update(COMPAT)
    c.cli("db", "migrate")
    return c


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return _prepare(Cluster(home=tmp_path / "home",
                            db_url=f"sqlite:///{tmp_path / 'squall.db'}", broker_url="",
                            result_backend=""))


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield _prepare(c)
    c.stop_all()


def _xcom(cluster: Cluster, dag_id: str, run_id: str, task_id: str) -> Any:
    with session_scope(cluster.session_factory) as session:
        text = session.scalar(select(XCom.value).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id,
            XCom.key == "return_value"))
    return None if text is None else json.loads(text)


def _runs(factory: SessionFactory, dag_id: str) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(DagRun).where(
            DagRun.dag_id == dag_id)) or 0)


def _dags_test(cluster: Cluster, dag_id: str, date: str, *extra: str,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = cluster.cli("dags", "test", dag_id, date, *extra, "-o", "json", env=env)
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["state"] == "success", result
    return result


def test_params_under_dags_test_and_trigger(cluster: Cluster) -> None:
    listed = {d["dag_id"] for d in cluster.cli_json("dags", "list")}
    assert {"af2_params", "af2_params_required", "af2_params_task_bad",
            "af2_params_decorated"} <= listed
    assert "af2_params_bad" not in listed
    # JSON: the table wraps a long file path at the terminal's width
    errors = {Path(e["filepath"]).name: e["error"]
              for e in cluster.cli_json("dags", "list-import-errors")}
    assert "af2_params_bad.py" in errors, errors
    assert "DAG is not allowed to define a Schedule" in errors["af2_params_bad.py"], errors

    ran = _dags_test(cluster, "af2_params", "2024-01-02")
    assert _xcom(cluster, "af2_params", ran["run_id"], "show") == DEFAULTS
    # the task's params over the DAG's
    assert _xcom(cluster, "af2_params", ran["run_id"], "moon") == {**DEFAULTS, "name": "moon"}
    assert _xcom(cluster, "af2_params", ran["run_id"], "echo") == "count=2"

    # the conf overrides params; a key that is no param joins them (Airflow's process_params)
    ran = _dags_test(cluster, "af2_params", "2024-01-03", "--conf",
                     '{"count": 5, "extra": "x"}')
    assert _xcom(cluster, "af2_params", ran["run_id"], "show") == {
        **DEFAULTS, "count": 5, "extra": "x"}
    assert _xcom(cluster, "af2_params", ran["run_id"], "echo") == "count=5"

    # ... unless [core] dag_run_conf_overrides_params is false
    ran = _dags_test(cluster, "af2_params", "2024-01-04", "--conf", '{"count": 7}',
                     env={"SQUALL__CORE__DAG_RUN_CONF_OVERRIDES_PARAMS": "false"})
    assert _xcom(cluster, "af2_params", ran["run_id"], "show") == DEFAULTS

    before = _runs(cluster.session_factory, "af2_params")
    bad = cluster.cli("dags", "test", "af2_params", "2024-01-05", "--conf", '{"count": "x"}',
                      check=False)
    assert bad.returncode != 0
    assert "Invalid input for param count: 'x' is not of type 'integer'" in bad.stderr
    trigger = cluster.cli("dags", "trigger", "af2_params", "--conf", '{"count": 0}',
                          check=False)
    assert trigger.returncode != 0
    assert "Invalid input for param count: 0 is less than the minimum of 1" in trigger.stderr
    assert _runs(cluster.session_factory, "af2_params") == before  # nothing was created

    missing = cluster.cli("dags", "test", "af2_params_required", "2024-01-02", check=False)
    assert missing.returncode != 0
    assert ("Invalid input for param must: No value passed and Param has no default value"
            in missing.stderr)
    ran = _dags_test(cluster, "af2_params_required", "2024-01-02", "--conf", '{"must": "ok"}')
    assert _xcom(cluster, "af2_params_required", ran["run_id"], "show") == {"must": "ok"}
    run_id = cluster.trigger("af2_params", "--conf", '{"count": 3, "name": "moon"}')
    assert run_id.startswith("manual__")

    # @dag arguments are DagParams: the conf's value, else the argument's
    ran = _dags_test(cluster, "af2_params_decorated", "2024-01-02")
    assert _xcom(cluster, "af2_params_decorated", ran["run_id"], "show") == {
        "rows": 3, "label": "x", "params_rows": 3}
    ran = _dags_test(cluster, "af2_params_decorated", "2024-01-03", "--conf", '{"rows": 8}')
    assert _xcom(cluster, "af2_params_decorated", ran["run_id"], "show") == {
        "rows": 8, "label": "x", "params_rows": 8}
    assert _xcom(cluster, "af2_params_decorated", ran["run_id"], "echo") == "8"
    bad = cluster.cli("dags", "test", "af2_params_decorated", "2024-01-04", "--conf",
                      '{"rows": "many"}', check=False)
    assert bad.returncode != 0
    assert "Invalid input for param rows: 'many' is not of type 'integer'" in bad.stderr

    # a task's own bad Param fails its try (see af2_params.py for Airflow's behaviour)
    proc = cluster.cli("dags", "test", "af2_params_task_bad", "2024-01-02", "-o", "json",
                       check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 1 and result["state"] == "failed"
    assert {t["task_id"]: t["state"] for t in result["task_instances"]} == {
        "bad": "failed", "after": "upstream_failed", "ok": "success"}
    bad_reason = next(t["reason"] for t in result["task_instances"] if t["task_id"] == "bad")
    assert "Invalid input for param n: 'x' is not of type 'integer'" in bad_reason


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_the_rest_api_validates_the_conf_and_shows_the_params(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    with DAG("p_api", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC),
             params={"count": Param(2, type="integer", minimum=1, description="How many"),
                     "who": "x"}) as dag:
        Noop(task_id="t")
    sync_dags(session_factory, dag)
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    with serve(settings, session_factory) as api:
        bad = api.post("/api/v1/dags/p_api/dagRuns", json={"conf": {"count": "x"}})
        assert bad.status_code == 400, bad.text
        assert bad.json()["detail"] == (
            "Invalid input for param count: 'x' is not of type 'integer'")
        assert _runs(session_factory, "p_api") == 0
        good = api.post("/api/v1/dags/p_api/dagRuns", json={"conf": {"count": 4}})
        assert good.status_code == 200, good.text
        details = api.get("/api/v1/dags/p_api/details").json()
        assert details["params"] == {
            "count": {"__class": "squall.sdk.params.Param", "value": 2,
                      "description": "How many", "schema": {"type": "integer", "minimum": 1}},
            "who": {"__class": "squall.sdk.params.Param", "value": "x", "description": None,
                    "schema": {}}}


def _states(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, str]:
    return {t: str(ti.state) for t, ti in cluster.task_instances(dag_id, run_id).items()}


@pytest.mark.integration
def test_params_through_a_cluster(pg_cluster: Cluster) -> None:
    """The same DAG files through a scheduler and a Celery worker on Redis + PostgreSQL;
    TriggerDagRunOperator's conf is validated against the target's params (checked with
    Airflow 2.10.5, see af2_params_controller.py)."""
    cluster = pg_cluster
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    runs = {"af2_params": cluster.trigger("af2_params", "--conf", '{"count": 4}'),
            "af2_params_decorated": cluster.trigger("af2_params_decorated", "--conf",
                                                    '{"rows": 9}'),
            "af2_params_task_bad": cluster.trigger("af2_params_task_bad"),
            "af2_params_controller": cluster.trigger("af2_params_controller")}
    for dag_id, run_id in runs.items():
        cluster.wait_for_run(dag_id, run_id)
    assert _xcom(cluster, "af2_params", runs["af2_params"], "show") == {**DEFAULTS, "count": 4}
    assert _xcom(cluster, "af2_params", runs["af2_params"], "moon")["name"] == "moon"
    assert _xcom(cluster, "af2_params", runs["af2_params"], "echo") == "count=4"
    assert _xcom(cluster, "af2_params_decorated", runs["af2_params_decorated"], "show") == {
        "rows": 9, "label": "x", "params_rows": 9}
    assert _states(cluster, "af2_params_task_bad", runs["af2_params_task_bad"]) == {
        "bad": "failed", "after": "upstream_failed", "ok": "success"}
    controller = runs["af2_params_controller"]
    assert _states(cluster, "af2_params_controller", controller) == {
        "trigger_good": "success", "trigger_bad": "failed"}
    bad = cluster.task_instances("af2_params_controller", controller)["trigger_bad"]
    assert "Invalid input for param count: 'x' is not of type 'integer'" in (
        bad.state_reason or "")
    with session_scope(cluster.session_factory) as session:
        confs = session.scalars(select(DagRun.conf).where(
            DagRun.dag_id == "af2_params", DagRun.run_id.like("from_controller_%"))).all()
    assert confs == [{"count": 6}]
