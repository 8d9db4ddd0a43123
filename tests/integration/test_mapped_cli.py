"""The CLI on the instances of a mapped task (rows with map_index 0..2 written directly into
the SQLite database of a SQUALL_HOME), through ``python -m squall`` in a subprocess:
``tasks state --map-index``, ``tasks states-for-dag-run`` with its map_index column,
``tasks set-state --map-index``, ``tasks clear -t ... --map-index`` and ``tasks logs
--map-index``.

Airflow 2.10: ``tasks state`` takes ``--map-index`` (default -1; airflow/cli/cli_config.py
``ARG_MAP_INDEX``), and ``tasks states-for-dag-run`` adds a ``map_index`` column ("" for an
unmapped task) only when the run has mapped instances (airflow/cli/commands/task_command.py
``task_states_for_dag_run``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, select

from squall.common.db import make_engine, make_session_factory, session_scope
from squall.common.models import TaskInstance, TaskInstanceKey
from squall.common.settings import Settings
from squall.execution.runner import task_log_path
from tests.integration.test_runs_cli import as_json, failed, ok, squall

DAG_FILE = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("fanned", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="first") >> EmptyOperator(task_id="fan")
'''
STATES = ["success", "failed", "running"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """``fanned`` triggered as run r1 (queued, no scheduler), its ``fan`` replaced by three
    mapped instances in STATES, with a log for instance 1."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "fanned.py").write_text(DAG_FILE)
    ok(squall(tmp_path, "dags", "trigger", "fanned", "--run-id", "r1"))
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    engine = make_engine(settings.sql_alchemy_conn)
    with session_scope(make_session_factory(engine)) as session:
        session.execute(delete(TaskInstance).where(TaskInstance.task_id == "fan"))
        for index, state in enumerate(STATES):
            session.add(TaskInstance(dag_id="fanned", task_id="fan", run_id="r1",
                                     map_index=index, state=state, try_number=1))
    engine.dispose()
    path = task_log_path(settings.log_folder, TaskInstanceKey("fanned", "fan", "r1", 1), 1)
    path.parent.mkdir(parents=True)
    path.write_text("instance one\n")
    return tmp_path


def fan_states(home: Path) -> list[str]:
    engine = make_engine(Settings.load(env={"SQUALL_HOME": str(home)}).sql_alchemy_conn)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return list(session.scalars(select(TaskInstance.state).where(
                TaskInstance.task_id == "fan").order_by(TaskInstance.map_index)))
    finally:
        engine.dispose()


def test_state_and_states_for_dag_run(home: Path) -> None:
    assert ok(squall(home, "tasks", "state", "fanned", "fan", "r1", "--map-index", "1")
              ).stdout.strip() == "failed"
    failed(squall(home, "tasks", "state", "fanned", "fan", "r1"), "is mapped: give --map-index")
    failed(squall(home, "tasks", "state", "fanned", "fan", "r1", "--map-index", "5"),
           "has no map index 5")
    assert ok(squall(home, "tasks", "state", "fanned", "first", "r1")).stdout.strip() == "none"
    rows = as_json(squall(home, "tasks", "states-for-dag-run", "fanned", "r1", "-o", "json"))
    assert [(r["task_id"], r["map_index"], r["state"]) for r in rows] == [
        ("fan", 0, "success"), ("fan", 1, "failed"), ("fan", 2, "running"),
        ("first", -1, "none")]
    table = ok(squall(home, "tasks", "states-for-dag-run", "fanned", "r1")).stdout
    assert "map_index" in table


def test_set_state_one_instance(home: Path) -> None:
    out = ok(squall(home, "tasks", "set-state", "fanned", "fan", "r1", "--state", "success",
                    "--map-index", "1")).stdout
    assert "fanned.fan[r1][1]: failed -> success" in out
    assert fan_states(home) == ["success", "success", "running"]
    failed(squall(home, "tasks", "set-state", "fanned", "fan", "r1", "--state", "success",
                  "--map-index", "7"), "has no map index 7")


def test_clear_one_instance_and_logs(home: Path) -> None:
    failed(squall(home, "tasks", "clear", "fanned", "--map-index", "1", "-y"),
           "--map-index needs -t")
    out = ok(squall(home, "tasks", "clear", "fanned", "-t", "^fan$", "--map-index", "1",
                    "--run-id", "r1", "-y")).stdout
    assert "map_index" in out and "Cleared 1 task instance(s)" in out
    assert fan_states(home) == ["success", "none", "running"]
    assert ok(squall(home, "tasks", "logs", "fanned", "fan", "r1", "--map-index", "1")
              ).stdout == "instance one\n"
    failed(squall(home, "tasks", "logs", "fanned", "fan", "r1"), "no log")
