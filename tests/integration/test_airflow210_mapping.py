"""Dynamic task mapping (issue 24 item 1): the Airflow 2.10 DAG files in
``tests/integration/airflow210_mapping_dags`` run unchanged under ``squall dags test`` and
through a Redis + PostgreSQL cluster, each task instance ending with the map index and the
state Airflow 2.10.5 gives it; and a mapped task of 1,000 instances is expanded in one
transaction with one INSERT.

:data:`AIRFLOW_210` is what ``airflow dags test DAG 2024-01-01`` of Airflow 2.10.5
(/work/ref/airflow-venv) left in its ``task_instance`` table for the same files. The rules
behind the less obvious rows, in Airflow's source:

* an expanded task has map indexes 0..n-1 only: ``AbstractOperator.expand_mapped_task``
  turns the unexpanded instance (-1) into index 0 and adds the others;
* an empty list: ``expand_mapped_task`` marks the unexpanded instance ``skipped`` (it keeps
  map index -1); its ``all_success`` downstream is then skipped by its trigger rule;
* a return value that is not a list or dict, or longer than ``[core] max_map_length``
  (1024): ``taskinstance.py`` ``_record_task_map_for_downstreams`` raises
  ``UnmappableXComTypePushed`` / ``UnmappableXComLengthPushed`` in the *upstream*, which
  fails; the mapped task is ``upstream_failed`` at map index -1;
* trigger rules count every instance of a mapped upstream (``TriggerRuleDep``): one failed
  instance makes ``all_success`` upstream_failed, and ``all_done`` / ``one_failed`` run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagRun, TaskInstance
from squall.common.state import DagRunState, DagRunType
from squall.runs.run_creation import create_dag_run
from squall.scheduler.decisions import update_dag_run
from squall.scheduler.local_run import ensure_dag_row
from squall.sdk.dag import DAG
from squall.sdk.decorators import task
from squall.sdk.operators.bash import BashOperator
from tests.integration.test_cluster import make_cluster
from tests.support.cluster import Cluster

DAGS = Path(__file__).parent / "airflow210_mapping_dags"
COMPAT = {"SQUALL__CORE__AIRFLOW_COMPAT": "true"}

S, F, UF, SK = "success", "failed", "upstream_failed", "skipped"

#: dag_id -> (run state, {(task_id, map_index): state}) as Airflow 2.10.5 gives them
AIRFLOW_210: dict[str, tuple[str, dict[tuple[str, int], str]]] = {
    "map_taskflow_reduce": (S, {("make_list", -1): S, ("add_one", 0): S, ("add_one", 1): S,
                                ("add_one", 2): S, ("total", -1): S}),
    "map_bash_partial": (S, {("echo", 0): S, ("echo", 1): S, ("echo", 2): S,
                             ("check", -1): S}),
    "map_expand_kwargs": (S, {("commands", -1): S, ("power", 0): S, ("power", 1): S,
                              ("run", 0): S, ("run", 1): S, ("check", -1): S}),
    "map_over_dict": (S, {("prices", -1): S, ("describe", 0): S, ("describe", 1): S,
                          ("check", -1): S}),
    "map_xcomarg_map_zip": (S, {("numbers", -1): S, ("letters", -1): S,
                                ("doubled", 0): S, ("doubled", 1): S, ("doubled", 2): S,
                                ("zipped", 0): S, ("zipped", 1): S,
                                ("filled", 0): S, ("filled", 1): S, ("filled", 2): S,
                                ("check", -1): S}),
    "map_cross_product": (S, {**{("pair", i): S for i in range(6)}, ("check", -1): S}),
    "map_zero_length": (S, {("nothing", -1): S, ("each", -1): SK, ("after", -1): SK}),
    "map_unmappable": (F, {("too_long", -1): F, ("not_a_list", -1): F,
                           ("each_long", -1): UF, ("each_int", -1): UF}),
    "map_trigger_rules": (F, {("maybe_fail", 0): S, ("maybe_fail", 1): F,
                              ("maybe_fail", 2): S, ("strict", -1): UF,
                              ("cleanup", -1): S, ("alert", -1): S}),
}

#: why the upstreams of map_unmappable failed (Airflow's messages, the same words)
UNMAPPABLE_REASONS = {"too_long": "unmappable return value length: 1025 > 1024",
                      "not_a_list": "unmappable return type 'int'"}


def _copy_dags(cluster: Cluster) -> None:
    for path in DAGS.iterdir():
        if path.suffix == ".py":
            shutil.copy(path, cluster.dags_folder / path.name)
    cluster.extra_env.update(COMPAT)


def _instances(factory: SessionFactory, dag_id: str, run_id: str
               ) -> dict[tuple[str, int], TaskInstance]:
    with session_scope(factory) as session:
        tis = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all()
        session.expunge_all()
    return {(ti.task_id, ti.map_index): ti for ti in tis}


def test_mapping_dag_files_under_dags_test(tmp_path: Path) -> None:
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    _copy_dags(cluster)
    cluster.cli("db", "migrate")
    assert cluster.cli("dags", "list-import-errors").stdout.strip() == "No import errors."
    for dag_id, (run_state, expected) in AIRFLOW_210.items():
        proc = cluster.cli("dags", "test", dag_id, "2024-01-01", "-o", "json", check=False,
                           timeout=120)
        assert proc.returncode in (0, 1), proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        states = {(t["task_id"], t["map_index"]): t["state"]
                  for t in result["task_instances"]}
        reasons = {(t["task_id"], t["map_index"]): t["reason"]
                   for t in result["task_instances"]}
        assert (result["state"], states) == (run_state, expected), (dag_id, reasons)
        if dag_id == "map_unmappable":
            for task_id, why in UNMAPPABLE_REASONS.items():
                assert why in reasons[(task_id, -1)]
    # each mapped instance logs to a file of its own (Airflow's map_index=N folder)
    run_folder = (cluster.home / "logs" / "dag_id=map_taskflow_reduce"
                  / "run_id=manual__2024-01-01T00:00:00+00:00")
    assert (run_folder / "task_id=add_one" / "map_index=2" / "attempt=1.log").is_file()
    assert (run_folder / "task_id=total" / "attempt=1.log").is_file()


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def test_mapping_dag_files_through_a_cluster(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    _copy_dags(cluster)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    runs = {dag_id: cluster.trigger(dag_id, "-e", "2024-01-01T00:00:00+00:00")
            for dag_id in AIRFLOW_210}
    for dag_id, run_id in runs.items():
        run_state, expected = AIRFLOW_210[dag_id]
        assert cluster.wait_for_run(dag_id, run_id) == run_state, cluster.logs()
        found = _instances(cluster.session_factory, dag_id, run_id)
        assert {k: ti.state for k, ti in found.items()} == expected, (
            dag_id, {k: ti.state_reason for k, ti in found.items()})


# --------------------------------------------------------------------------- one transaction


def _mapped_dag(length: int) -> DAG:
    with DAG("map_thousand", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        @task
        def numbers() -> list[int]:
            return list(range(length))

        @task
        def each(x: int) -> int:
            return x

        each.expand(x=numbers())
        BashOperator.partial(task_id="literal").expand(
            bash_command=[f"echo {i}" for i in range(length)])
    return dag


def test_a_thousand_instances_are_expanded_in_one_insert(session_factory: SessionFactory
                                                         ) -> None:
    """Both mapped tasks (over an upstream's 1,000 values and over a literal list of 1,000)
    expand in the one decision transaction, each with one INSERT of 999 rows (the
    unexpanded instance becomes map index 0, as in Airflow)."""
    from squall.execution import xcom

    dag = _mapped_dag(1000)
    now = datetime(2024, 1, 2, tzinfo=UTC)
    with session_scope(session_factory) as session:
        ensure_dag_row(session, dag)
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=now,
                             data_interval=None, state=DagRunState.RUNNING)
        session.query(TaskInstance).filter_by(dag_id=dag.dag_id, task_id="numbers").update(
            {"state": "success"})
        xcom.push(session, dag_id=dag.dag_id, run_id=run.run_id, task_id="numbers",
                  key="return_value", value=list(range(1000)))
        run_pk = run.id

    statements: list[str] = []
    commits: list[int] = []
    engine = session_factory.kw["bind"]

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def on_commit(conn: Any) -> None:
        commits.append(1)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "commit", on_commit)
    try:
        with session_scope(session_factory) as session:
            run = session.get_one(DagRun, run_pk)
            update = update_dag_run(session, dag, run, now=now)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "commit", on_commit)

    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO TASK_INSTANCE")]
    assert len(inserts) == 2, inserts
    assert len(commits) == 1
    assert len(update.schedulable) == 2000
    with session_scope(session_factory) as session:
        counts = dict(session.execute(
            select(TaskInstance.task_id, func.count()).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.map_index >= 0)
            .group_by(TaskInstance.task_id)).all())
        placeholders = session.scalar(select(func.count()).where(
            TaskInstance.dag_id == dag.dag_id, TaskInstance.task_id.in_(["each", "literal"]),
            TaskInstance.map_index == -1))
        top = session.scalar(select(func.max(TaskInstance.map_index)).where(
            TaskInstance.dag_id == dag.dag_id, TaskInstance.task_id == "each"))
    assert counts == {"each": 1000, "literal": 1000}
    assert placeholders == 0 and top == 999
