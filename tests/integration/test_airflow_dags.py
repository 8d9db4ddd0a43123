"""Airflow 2 DAG files written in Airflow's own idiom (``tests/integration/airflow_dags``)
run with ``squall dags test`` under ``[core] airflow_compat = true`` and reach, task by task,
the states Airflow 2 gives them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.integration.test_cli import as_json, ok, squall

DAGS = Path(__file__).parent / "airflow_dags"
PASSWORD = "db-pa55word-31337"


def _states(home: Path, dag_id: str, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    result = as_json(squall(home, "dags", "test", dag_id, "-o", "json", env=env))
    return result["state"], {t["task_id"]: t["state"] for t in result["task_instances"]}


def test_airflow_idiom_dags_reach_airflows_states(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        "SQUALL__CORE__AIRFLOW_COMPAT": "true",
        "SQUALL__CORE__DAGS_FOLDER": str(DAGS),
        "SQUALL__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW_VAR_REGION": "eu-west-1",
        "AIRFLOW_CONN_HTTP_API": "http://api.example.com/?timeout=30",
    }
    ok(squall(home, "variables", "set", "environment", "staging", env=env))
    ok(squall(home, "variables", "set", "pipeline_config",
              '{"batch": 100, "tables": ["a", "b"]}', "-j", env=env))
    ok(squall(home, "connections", "add", "my_db", "--conn-uri",
              f"postgres://app_user:{PASSWORD}@db.example.com:5432/appdb?sslmode=require",
              env=env))

    assert _states(home, "af_variables", env) == ("failed", {
        "read_vars": "success", "templated": "success", "from_env": "success",
        "deploy_staging": "success", "missing_var": "failed",
        "after_failure": "upstream_failed"})
    assert _states(home, "af_connections", env) == ("success", {
        "read_db": "success", "templated": "success", "from_env": "success",
        "round_trip": "success", "missing_connection": "skipped"})

    [log] = (home / "logs").rglob("task_id=read_db/attempt=1.log")
    assert "connecting with password ***" in log.read_text()
    assert PASSWORD not in log.read_text()
    [log] = (home / "logs").rglob("task_id=missing_var/attempt=1.log")
    assert "KeyError: 'Variable does_not_exist does not exist'" in log.read_text()


def test_airflow_idiom_dags_through_a_cluster(request: pytest.FixtureRequest,
                                              tmp_path: Path) -> None:
    """The same DAG files through a real scheduler and Celery worker (Redis + PostgreSQL):
    each task's state is the one Airflow 2 gives it there too."""
    from tests.integration.test_cluster import make_cluster

    cluster = make_cluster(request, "redis-pg", tmp_path / "home")
    cluster.extra_env.update({
        "SQUALL__CORE__AIRFLOW_COMPAT": "true",
        "SQUALL__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW_VAR_REGION": "eu-west-1",
        "AIRFLOW_CONN_HTTP_API": "http://api.example.com/?timeout=30",
    })
    try:
        for path in DAGS.glob("*.py"):
            shutil.copy(path, cluster.dags_folder / path.name)
        cluster.cli("db", "migrate")
        cluster.cli("variables", "set", "environment", "staging")
        cluster.cli("variables", "set", "pipeline_config",
                    '{"batch": 100, "tables": ["a", "b"]}', "-j")
        cluster.cli("connections", "add", "my_db", "--conn-uri",
                    f"postgres://app_user:{PASSWORD}@db.example.com:5432/appdb"
                    "?sslmode=require")
        cluster.start_scheduler()
        cluster.start_worker(concurrency=4)
        runs = {dag_id: cluster.trigger(dag_id) for dag_id in ("af_variables", "af_connections")}
        assert cluster.wait_for_run("af_variables", runs["af_variables"]) == "failed"
        assert cluster.wait_for_run("af_connections", runs["af_connections"]) == "success"
        states = {dag_id: {t: ti.state for t, ti in
                           cluster.task_instances(dag_id, run_id).items()}
                  for dag_id, run_id in runs.items()}
        assert states == {
            "af_variables": {"read_vars": "success", "templated": "success",
                             "from_env": "success", "deploy_staging": "success",
                             "missing_var": "failed", "after_failure": "upstream_failed"},
            "af_connections": {"read_db": "success", "templated": "success",
                               "from_env": "success", "round_trip": "success",
                               "missing_connection": "skipped"},
        }, cluster.logs()
        [log] = (cluster.home / "logs").rglob("task_id=read_db/attempt=1.log")
        assert "connecting with password ***" in log.read_text()
        assert PASSWORD not in log.read_text()
    finally:
        cluster.stop_all()
