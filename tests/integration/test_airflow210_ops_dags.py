"""Airflow 2.10 task decorators, operators, edge labels, task groups, chains and timetables
(issue 24 item 4; the DAG files in ``tests/integration/airflow210_ops_dags``) run unchanged
under ``[core] airflow_compat = true``: through ``squall dags test`` and through a Redis +
PostgreSQL cluster, each task instance in the state Airflow 2.10.5 gives it.

The expected states and XComs were taken from Airflow 2.10.5 itself (``airflow dags test``
of the same files, and its ``DAG.next_dagrun_info`` for the timetables). The rules behind
them: ``BranchMixIn.skip_all_except`` / ``_expand_task_group_roots`` (airflow/operators/
branch.py: a branch to a task group follows the group's roots); ``ShortCircuitOperator.
execute`` (airflow/operators/python.py: ``ignore_downstream_trigger_rules=False`` skips only
the direct downstream tasks, so an ``all_done`` task after them runs; True skips all of them);
``BranchDayOfWeekOperator.choose_branch`` / ``BranchDateTimeOperator.choose_branch`` with
``use_task_logical_date`` (2024-01-03 12:00 UTC is a Wednesday within 09:00-17:00);
``TaskGroup._check_for_group_id_collisions`` (airflow/utils/task_group.py: ``process``,
``process__1``, ``process__2``); ``_BasePythonVirtualenvOperator.
_execute_python_callable_in_subprocess`` (a listed exit code skips, an exception fails);
``CronTriggerTimetable.next_dagrun_info`` and ``EventsTimetable.next_dagrun_info``
(airflow/timetables/trigger.py, events.py).
"""

from __future__ import annotations

import json
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

DAGS = Path(__file__).parent / "airflow210_ops_dags"
ON = "2024-01-03T12:00:00+00:00"

BRANCH_STATES = {
    "pick": "success", "left": "success", "right": "skipped", "join": "success",
    "to_group": "success", "grp.inner": "success", "grp.inner2": "success",
    "not_grp": "skipped",
    "gate_direct": "success", "sc_direct": "skipped", "sc_after": "success",
    "gate_all": "success", "sc_all_1": "skipped", "sc_all_2": "skipped",
    "gate_open": "success", "sc_open": "success",
    "weekday": "success", "midweek": "success", "other_day": "skipped",
    "weekend": "success", "sunday": "skipped", "not_sunday": "success",
    "hours": "success", "office": "success", "night": "skipped",
    "window": "success", "in_window": "skipped", "late": "success",
}
TASKFLOW_STATES = {t: "success" for t in [
    "say", "ready", "total", "process.double", "process.store", "process__1.double",
    "process__1.store", "process__2.double", "process__2.store",
    "ch_a", "ch_b", "ch_c", "ch_d", "ch_e", "ch_f", "cl_g", "cl_h", "cl_i", "cl_j",
    "cd_k", "cd_m"]}
TASKFLOW_XCOMS = {"say": "hello 2024-01-03", "ready": "ready", "process.store": 2,
                  "process__1.store": 4, "process__2.store": 6, "total": 12}
#: ``run_if`` / ``skip_if`` (airflow/decorators/condition.py: ``wrap_skip`` raises
#: AirflowSkipException in pre_execute), a branch in another interpreter
CONDITIONS_STATES = {"on_the_3rd": "success", "on_the_4th": "skipped", "both": "skipped",
                     "choose": "success", "chosen": "success", "not_chosen": "skipped"}
VENV_STATES = {"with_six": "success", "classic": "success", "external": "success",
               "ext_classic": "success", "skipper": "skipped", "broken": "failed",
               "report": "success"}
CLASSIC = {"sum": 3, "string_args": ["first", "second"], "parsed": {"x": 1}}
VENV_XCOMS = {"with_six": {"six": "1.16.0", "n": 42, "ds": "2024-01-03"},
              "classic": CLASSIC, "external": [43, 3], "ext_classic": 3,
              "report": {"a": [43, 3], "b": CLASSIC}}
#: logical dates of the scheduled runs Airflow 2.10.5 creates (catchup over a closed range)
SCHEDULED = {
    "af210_workday": ["2024-01-05T00:00:00+00:00", "2024-01-08T00:00:00+00:00",
                      "2024-01-09T00:00:00+00:00", "2024-01-10T00:00:00+00:00"],
    "af210_cron_trigger": ["2024-01-01T00:00:00+00:00", "2024-01-08T00:00:00+00:00",
                           "2024-01-15T00:00:00+00:00"],
    "af210_events": ["2024-01-02T00:00:00+00:00", "2024-01-05T12:00:00+00:00"],
}


@pytest.fixture(scope="module")
def venv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One venv cache for the module: the second test reuses the first one's venvs."""
    return tmp_path_factory.mktemp("venv_cache")


def _prepare(cluster: Cluster, venv_cache: Path) -> None:
    for path in DAGS.glob("*.py"):
        shutil.copy(path, cluster.dags_folder / path.name)
    plugins = cluster.home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    for path in (DAGS / "plugins").glob("*.py"):
        shutil.copy(path, plugins / path.name)
    cluster.extra_env.update({"SQUALL__CORE__AIRFLOW_COMPAT": "true",
                              "SQUALL__CORE__VENV_CACHE_PATH": str(venv_cache)})


def _xcoms(cluster: Cluster, dag_id: str, run_id: str) -> dict[tuple[str, str], Any]:
    with session_scope(cluster.session_factory) as session:
        rows = session.execute(select(XCom.task_id, XCom.key, XCom.value).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id)).all()
    return {(t, k): json.loads(v) for t, k, v in rows}


def _check_xcoms(cluster: Cluster, dag_id: str, run_id: str, wanted: dict[str, Any]) -> None:
    xcoms = _xcoms(cluster, dag_id, run_id)
    got = {task: xcoms.get((task, "return_value")) for task in wanted}
    assert got == wanted


def _dags_test(cluster: Cluster, dag_id: str, date: str) -> dict[str, Any]:
    proc = cluster.cli("dags", "test", dag_id, date, "-o", "json", check=False, timeout=400)
    assert proc.returncode in (0, 1), proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    result["states"] = {t["task_id"]: t["state"] for t in result["task_instances"]}
    print(dag_id, {t["task_id"]: t["reason"] for t in result["task_instances"]})
    return result


def test_airflow210_ops_dag_files_under_dags_test(tmp_path: Path, venv_cache: Path) -> None:
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    _prepare(cluster, venv_cache)
    cluster.cli("db", "migrate")
    listed = {d["dag_id"]: d for d in cluster.cli_json("dags", "list")}
    assert {"af210_branch", "af210_taskflow", "af210_conditions", "af210_venv", "af210_workday",
            "af210_cron_trigger", "af210_events"} <= set(listed)
    # a custom timetable no plugin registers: the file's import error, as Airflow's
    # "Timetable class ... is not registered"
    errors = cluster.cli("dags", "list-import-errors", "-o", "json").stdout
    assert "af210_unregistered" not in listed
    assert "af210_unregistered.NotRegistered' is not registered" in errors
    assert "af210_timetables.py" not in errors
    assert cluster.cli_json("plugins") == [{
        "name": "workday_timetable_plugin",
        "source": str(cluster.home / "plugins" / "af210_workday.py"),
        "timetables": "af210_workday.AfterWorkdayTimetable"}]

    ran = _dags_test(cluster, "af210_branch", ON)
    assert ran["states"] == BRANCH_STATES
    assert ran["state"] == "success"
    ran = _dags_test(cluster, "af210_taskflow", "2024-01-03")
    assert ran["states"] == TASKFLOW_STATES
    _check_xcoms(cluster, "af210_taskflow", ran["run_id"], TASKFLOW_XCOMS)
    ran = _dags_test(cluster, "af210_conditions", "2024-01-03")
    assert ran["states"] == CONDITIONS_STATES
    reasons = {t["task_id"]: t["reason"] for t in ran["task_instances"]}
    assert (reasons["on_the_4th"], reasons["both"]) == ("not the 4th", "skipped by its condition")
    ran = _dags_test(cluster, "af210_venv", "2024-01-03")
    assert ran["states"] == VENV_STATES
    assert ran["state"] == "failed"  # broken failed
    _check_xcoms(cluster, "af210_venv", ran["run_id"], VENV_XCOMS)
    xcoms = _xcoms(cluster, "af210_venv", ran["run_id"])
    assert xcoms[("with_six", "n")] == 42  # multiple_outputs from the dict annotation
    reasons = {t["task_id"]: t["reason"] for t in ran["task_instances"]}
    assert "ValueError: boom in the venv" in reasons["broken"]
    # the venvs are cached per requirement set
    assert len(list(venv_cache.glob("venv-*/install_complete_marker.json"))) == 3


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def _logical_dates(cluster: Cluster, dag_id: str) -> list[tuple[str, str]]:
    with session_scope(cluster.session_factory) as session:
        rows = session.execute(select(DagRun.logical_date, DagRun.run_id)
                               .where(DagRun.dag_id == dag_id)
                               .order_by(DagRun.logical_date)).all()
    return [(pendulum.instance(d).in_timezone("UTC").isoformat(), r) for d, r in rows]


def test_airflow210_ops_dag_files_through_a_cluster(pg_cluster: Cluster,
                                                    venv_cache: Path) -> None:
    cluster = pg_cluster
    _prepare(cluster, venv_cache)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=6)
    runs = {"af210_branch": cluster.trigger("af210_branch", "-e", ON),
            "af210_taskflow": cluster.trigger("af210_taskflow", "-e", ON),
            "af210_conditions": cluster.trigger("af210_conditions", "-e", ON),
            "af210_venv": cluster.trigger("af210_venv", "-e", ON)}
    for dag_id, run_id in runs.items():
        cluster.wait_for_run(dag_id, run_id, timeout=300)
    states = {d: {t: ti.state for t, ti in cluster.task_instances(d, r).items()}
              for d, r in runs.items()}
    assert states["af210_branch"] == BRANCH_STATES
    assert states["af210_taskflow"] == TASKFLOW_STATES
    assert states["af210_conditions"] == CONDITIONS_STATES
    assert states["af210_venv"] == VENV_STATES
    _check_xcoms(cluster, "af210_taskflow", runs["af210_taskflow"], TASKFLOW_XCOMS)
    _check_xcoms(cluster, "af210_venv", runs["af210_venv"], VENV_XCOMS)

    # the scheduler rebuilds the custom timetable through the plugin, and the built-in
    # Airflow-style ones, and creates the runs Airflow creates
    for dag_id, dates in SCHEDULED.items():
        deadline = time.monotonic() + 90
        got = _logical_dates(cluster, dag_id)
        while [d for d, _ in got] != dates and time.monotonic() < deadline:
            time.sleep(0.2)
            got = _logical_dates(cluster, dag_id)
        assert [d for d, _ in got] == dates, cluster.logs()
        for _, run_id in got:
            assert cluster.wait_for_run(dag_id, run_id) == "success"
