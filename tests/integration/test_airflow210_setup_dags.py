"""Airflow 2.7-2.10 DAG files (``tests/integration/airflow210_setup_dags``, issue 24 items 2
and 5) run unchanged under ``[core] airflow_compat = true``, through ``squall dags test`` and
through a Redis + PostgreSQL cluster, each task instance ending in the state Airflow 2.10.5's
``airflow dags test`` gives it for the same file (checked with a real Airflow 2.10.5).

The rules, in Airflow's source:

* a teardown's trigger rule ``all_done_setup_success``: it runs once every upstream is done
  and one of its setups succeeded; no setup succeeded makes it upstream_failed
  (``airflow/ti_deps/deps/trigger_rule_dep.py``, ``_evaluate_direct_relatives``);
* a work task in a setup's scope is upstream_failed when the setup failed, whatever its own
  trigger rule (``_evaluate_setup_constraint``);
* the run's state leaves out teardowns unless ``on_failure_fail_dagrun``
  (``airflow/models/dagrun.py``, ``DagRun._tis_for_dagrun_state``);
* clearing a task clears its relevant setups and their teardowns
  (``airflow/models/dag.py``, ``DAG.partial_subset`` through
  ``AbstractOperator.get_upstreams_only_setups_and_teardowns``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import DagRun, TaskInstance
from squall.common.settings import Settings
from tests.integration.test_cluster import make_cluster
from tests.support.airflow_files import copy_dag_files, dags_test
from tests.support.api import serve
from tests.support.cluster import Cluster

DAGS = Path(__file__).parent / "airflow210_setup_dags"

#: dag id -> (run state, task states), as Airflow 2.10.5's `airflow dags test` gives them
EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    # the work fails: the teardown still runs; the run fails because of the work
    "af210_st_work_fails": ("failed", {
        "create_cluster": "success", "work": "failed", "delete_cluster": "success"}),
    # only the teardown fails: the run succeeds
    "af210_st_teardown_fails": ("success", {
        "create_cluster": "success", "work": "success", "delete_cluster": "failed"}),
    # ... unless the teardown has on_failure_fail_dagrun
    "af210_st_fail_dagrun": ("failed", {
        "create_cluster": "success", "work": "success", "delete_cluster": "failed"}),
    # the setup fails: its work (even all_done "report") and its teardown upstream_failed
    "af210_st_setup_fails": ("failed", {
        "create_cluster": "failed", "work": "upstream_failed", "report": "upstream_failed",
        "delete_cluster": "upstream_failed"}),
    # one of two setups fails: the teardown still runs
    "af210_st_two_setups": ("failed", {
        "create_bucket": "success", "create_cluster": "failed", "work": "upstream_failed",
        "delete_all": "success"}),
    # a short circuit skips what follows it, but not a teardown (left to its rule: skipped
    # when its setup was, run when its setup succeeded): python.py ShortCircuitOperator
    "af210_st_short_circuit": ("success", {
        "gate": "success", "create_cluster": "skipped", "work": "skipped",
        "delete_cluster": "skipped", "create_bucket": "success", "check": "success",
        "load": "skipped", "delete_bucket": "success"}),
    "af210_st_decorators": ("success", {
        "make_table": "success", "load": "success", "check": "success",
        "drop_table": "success", "start_server": "success", "query_a": "success",
        "query_b": "success", "stop_server": "success"}),
}


def _clear_dry_run(cluster: Cluster, dag_id: str, *args: str) -> set[str]:
    out = cluster.cli("tasks", "clear", dag_id, *args, "--dry-run").stdout
    rows = [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in out.splitlines() if line.startswith("│")]
    return {cells[2] for cells in rows if cells[0] == dag_id}


@pytest.fixture
def local(tmp_path: Path) -> Cluster:
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    copy_dag_files(cluster, DAGS)
    cluster.cli("db", "migrate")
    return cluster


def test_setup_teardown_under_dags_test(local: Cluster) -> None:
    listed = {d["dag_id"] for d in local.cli_json("dags", "list")}
    assert set(EXPECTED) <= listed
    assert local.cli("dags", "list-import-errors").stdout.strip() == "No import errors."
    for dag_id, (state, states) in EXPECTED.items():
        ran = dags_test(local, dag_id, "2024-01-01")
        assert (ran["state"], ran["states"]) == (state, states), dag_id


def test_clearing_a_work_task_clears_its_setup_and_teardown(local: Cluster) -> None:
    """``airflow tasks clear -t '^work$'`` of af210_st_work_fails lists create_cluster and
    delete_cluster too (Airflow 2.10.5: DAG.partial_subset adds the relevant setups and
    their teardowns); clearing the setup alone takes its teardown along, and clearing the
    teardown takes nothing else (a setup or teardown adds no setups)."""
    dags_test(local, "af210_st_work_fails", "2024-01-01")
    assert _clear_dry_run(local, "af210_st_work_fails", "-t", "^work$") == {
        "create_cluster", "work", "delete_cluster"}
    assert _clear_dry_run(local, "af210_st_work_fails", "-t", "^create_cluster$") == {
        "create_cluster", "delete_cluster"}
    assert _clear_dry_run(local, "af210_st_work_fails", "-t", "^delete_cluster$") == {
        "delete_cluster"}
    # the setup of a work task that is only downstream of the matched one comes along
    dags_test(local, "af210_st_setup_fails", "2024-01-01")
    assert _clear_dry_run(local, "af210_st_setup_fails", "-t", "^report$") == {
        "create_cluster", "report", "delete_cluster"}

    # cleared for real, the run goes again: the work fails again, the teardown runs again
    out = local.cli("tasks", "clear", "af210_st_work_fails", "-t", "^work$", "-y").stdout
    assert "Cleared 3 task instance(s)" in out


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def test_setup_teardown_through_a_cluster(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    copy_dag_files(cluster, DAGS)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    runs = {dag_id: cluster.trigger(dag_id) for dag_id in EXPECTED}
    for dag_id, run_id in runs.items():
        state = cluster.wait_for_run(dag_id, run_id)
        got = {t: ti.state for t, ti in cluster.task_instances(dag_id, run_id).items()}
        assert (state, got) == EXPECTED[dag_id], dag_id

    # clearing the failed work task of the finished run: setup, work and teardown run again
    dag_id, run_id = "af210_st_work_fails", runs["af210_st_work_fails"]
    cluster.cli("tasks", "clear", dag_id, "-t", "^work$", "--run-id", run_id, "-y")
    assert cluster.wait_for_run(dag_id, run_id) == "failed"
    tis = cluster.task_instances(dag_id, run_id)
    assert {t: (ti.state, ti.try_number) for t, ti in tis.items()} == {
        "create_cluster": ("success", 2), "work": ("failed", 2),
        "delete_cluster": ("success", 2)}

    # ExternalTaskMarker through the API (include_subdags, false by default as in Airflow)
    on = "2024-01-01T00:00:00+00:00"
    marked = {d: cluster.trigger(d, "-e", on)
              for d in ("af210_parent", "af210_child", "af210_grandchild")}
    for dag_id, run_id in marked.items():
        assert cluster.wait_for_run(dag_id, run_id) == "success", dag_id
    url = "/api/v1/dags/af210_parent/clearTaskInstances"
    body = {"dry_run": True, "only_failed": False, "task_ids": ["produce"],
            "include_downstream": True, "dag_run_id": marked["af210_parent"]}
    with serve(Settings.load(env=cluster.env), cluster.session_factory) as api:
        alone = api.post(url, user="op", json=body).json()["task_instances"]
        assert {(t["dag_id"], t["task_id"]) for t in alone} == {
            ("af210_parent", "produce"), ("af210_parent", "mark_child")}
        done = api.post(url, user="op", json={**body, "dry_run": False,
                                              "include_subdags": True}).json()
    assert {(t["dag_id"], t["task_id"]) for t in done["task_instances"]} == {
        ("af210_parent", "produce"), ("af210_parent", "mark_child"),
        ("af210_child", "wait_parent"), ("af210_child", "process"),
        ("af210_child", "mark_grandchild"), ("af210_grandchild", "finish"),
        ("af210_grandchild", "after_finish")}
    # the scheduler runs the three DAGs' cleared task instances again
    for dag_id, run_id in marked.items():
        assert cluster.wait_for_run(dag_id, run_id) == "success", dag_id
    tries = {t: ti.try_number for t, ti in cluster.task_instances(
        "af210_grandchild", marked["af210_grandchild"]).items()}
    assert tries == {"finish": 2, "after_finish": 2, "unrelated": 1}


# --------------------------------------------------------------------------- item 5


def test_latest_only_under_dags_test_for_a_past_date(local: Cluster) -> None:
    """Airflow 2.10.5's `airflow dags test` makes a manual run that is not externally
    triggered (DAG.test -> _get_or_create_dagrun -> DAG.create_dagrun, external_trigger
    False), so LatestOnlyOperator.choose_branch checks the schedule: for a past date now is
    not in the next data interval, and the direct downstream is skipped."""
    ran = dags_test(local, "af210_latest_only", "2024-03-05")
    assert (ran["state"], ran["states"]) == ("success", {
        "latest_only": "success", "work": "skipped", "after": "success"})


def _cleared(cluster: Cluster, dag_id: str, *args: str) -> set[tuple[str, str]]:
    proc = cluster.cli("tasks", "clear", dag_id, *args, "--dry-run", check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in proc.stdout.splitlines() if line.startswith("│")]
    return {(cells[0], cells[2]) for cells in rows if cells[0].startswith("af210_")}


def test_external_task_marker_clears_across_dags(local: Cluster) -> None:
    """As `airflow tasks clear` (DAG.clear with include_subdags, which follows
    ExternalTaskMarker in DAG._get_task_instances): checked with Airflow 2.10.5 on the
    same files, after `airflow dags reserialize`."""
    local.cli("dags", "list")  # the marked DAGs are read from the metadata database
    for dag_id in ("af210_parent", "af210_child", "af210_grandchild", "af210_shallow"):
        assert dags_test(local, dag_id, "2024-01-01")["state"] == "success", dag_id
    assert _cleared(local, "af210_parent", "-t", "^produce$", "-d") == {
        ("af210_parent", "produce"), ("af210_parent", "mark_child"),
        ("af210_child", "wait_parent"), ("af210_child", "process"),
        ("af210_child", "mark_grandchild"),
        ("af210_grandchild", "finish"), ("af210_grandchild", "after_finish")}
    # no marker among the selection, or -x: this DAG's only
    assert _cleared(local, "af210_parent", "-t", "^produce$") == {("af210_parent", "produce")}
    assert _cleared(local, "af210_parent", "-t", "^produce$", "-d", "-x") == {
        ("af210_parent", "produce"), ("af210_parent", "mark_child")}
    # the state filter applies to the marker too: nothing failed, nothing cleared
    out = local.cli("tasks", "clear", "af210_parent", "-t", "^produce$", "-d", "-f",
                    "--dry-run").stdout
    assert "No task instances to clear" in out
    # the first marker allows one level: the child's marker is one too many
    proc = local.cli("tasks", "clear", "af210_shallow", "--dry-run", check=False)
    assert proc.returncode != 0
    assert ("Maximum recursion depth 1 reached for ExternalTaskMarker "
            "af210_child.mark_grandchild") in proc.stderr

    # cleared for real: the other DAGs' runs are queued again, their task instances none
    local.cli("tasks", "clear", "af210_parent", "-t", "^produce$", "-d", "-y")
    with session_scope(local.session_factory) as session:
        rows = session.execute(
            select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.state)
            .where(TaskInstance.dag_id.in_(["af210_child", "af210_grandchild"]))).all()
        runs = dict(session.execute(select(DagRun.dag_id, DagRun.state).where(
            DagRun.dag_id.in_(["af210_child", "af210_grandchild"]))).all())
    assert {(d, t): s for d, t, s in rows} == {
        ("af210_child", "wait_parent"): "none", ("af210_child", "process"): "none",
        ("af210_child", "mark_grandchild"): "none", ("af210_grandchild", "finish"): "none",
        ("af210_grandchild", "after_finish"): "none",
        ("af210_grandchild", "unrelated"): "success"}
    assert runs == {"af210_child": "queued", "af210_grandchild": "queued"}
