"""``squall dags trigger | state | list-runs`` and ``squall tasks state | states-for-dag-run``
through the CLI in a subprocess, on an embedded SQLite database under SQUALL_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

DEMO_DAG = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("demo", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="first") >> EmptyOperator(task_id="second")
'''


def squall(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)})
    return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                          capture_output=True, text=True, timeout=120, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def failed(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert message in proc.stderr, proc.stderr


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(proc).stdout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "demo.py").write_text(DEMO_DAG)
    return tmp_path


def test_trigger_then_inspect_the_run(home: Path) -> None:
    # a DAG the database has never seen: trigger parses the folder first
    out = ok(squall(home, "dags", "trigger", "demo", "--run-id", "r1", "--conf",
                    '{"x": 1}', "--logical-date", "2024-03-01")).stdout
    assert "r1" in out

    [run] = as_json(squall(home, "dags", "list-runs", "demo", "-o", "json"))
    assert {k: run[k] for k in ("dag_id", "run_id", "state", "run_type")} == {
        "dag_id": "demo", "run_id": "r1", "state": "queued", "run_type": "manual"}
    assert run["logical_date"].startswith("2024-03-01T00:00:00")
    assert ok(squall(home, "dags", "state", "demo", "r1")).stdout.strip() == "queued"
    assert as_json(squall(home, "dags", "list-runs", "demo", "--state", "running",
                          "-o", "json")) == []
    assert "r1" in ok(squall(home, "dags", "list-runs", "demo")).stdout

    rows = as_json(squall(home, "tasks", "states-for-dag-run", "demo", "r1", "-o", "json"))
    assert [(r["task_id"], r["state"], r["try_number"]) for r in rows] == [
        ("first", "none", 0), ("second", "none", 0)]
    assert set(rows[0]) == {"task_id", "state", "try_number", "hostname", "start_date",
                            "end_date", "reason"}
    table = ok(squall(home, "tasks", "states-for-dag-run", "demo", "r1")).stdout
    assert "first" in table and "second" in table
    assert ok(squall(home, "tasks", "state", "demo", "first", "r1")).stdout.strip() == "none"

    # a default run id, from the logical date
    out = ok(squall(home, "dags", "trigger", "demo")).stdout
    runs = as_json(squall(home, "dags", "list-runs", "demo", "-o", "json"))
    assert len(runs) == 2
    [auto] = [r for r in runs if r["run_id"] != "r1"]
    assert auto["run_id"].startswith("manual__") and auto["run_id"] in out


def test_trigger_errors(home: Path) -> None:
    failed(squall(home, "dags", "trigger", "nope"), "DAG 'nope' not found")
    failed(squall(home, "dags", "trigger", "demo", "--conf", "{bad"), "not valid JSON")
    failed(squall(home, "dags", "trigger", "demo", "--conf", "[1]"), "must be a JSON object")
    failed(squall(home, "dags", "trigger", "demo", "--logical-date", "someday"),
           "not an ISO date")
    ok(squall(home, "dags", "trigger", "demo", "--run-id", "dup"))
    failed(squall(home, "dags", "trigger", "demo", "--run-id", "dup"), "already has a run")


def test_trigger_refuses_a_dag_whose_file_has_import_errors(home: Path) -> None:
    # as the REST API does (and Airflow's): the run would use the DAG as it was before
    ok(squall(home, "dags", "trigger", "demo", "--run-id", "before"))
    (home / "dags" / "demo.py").write_text(DEMO_DAG + "\nraise RuntimeError('broken')\n")
    squall(home, "dags", "list")  # records the import error (exit 1: a file failed)
    failed(squall(home, "dags", "trigger", "demo", "--run-id", "after"),
           "DAG with dag_id: 'demo' has import errors")
    assert [r["run_id"] for r in as_json(squall(home, "dags", "list-runs", "demo", "-o",
                                                "json"))] == ["before"]


def test_trigger_several_dags_in_one_call(home: Path) -> None:
    (home / "dags" / "demo2.py").write_text(
        (home / "dags" / "demo.py").read_text().replace('DAG("demo"', 'DAG("demo2"'))
    out = ok(squall(home, "dags", "trigger", "demo", "demo2", "demo")).stdout
    created = [line.split()[2] for line in out.splitlines() if line.startswith("Created")]
    assert created == ["demo", "demo2"]  # each DAG once, in the order given
    for dag_id in ("demo", "demo2"):
        [run] = as_json(squall(home, "dags", "list-runs", dag_id, "-o", "json"))
        assert run["state"] == "queued" and run["run_id"] in out

    # one unknown DAG is reported; the others are still triggered
    proc = squall(home, "dags", "trigger", "ghost", "demo2", "--run-id", "second")
    failed(proc, "DAG 'ghost' not found")
    assert "Created DagRun demo2 second" in proc.stdout
    assert ok(squall(home, "dags", "state", "demo2", "second")).stdout.strip() == "queued"


def test_missing_runs_and_tasks(home: Path) -> None:
    ok(squall(home, "dags", "trigger", "demo", "--run-id", "r1"))
    failed(squall(home, "dags", "state", "demo", "r2"), "has no run 'r2'")
    failed(squall(home, "dags", "state", "ghost", "r1"), "DAG 'ghost' not found")
    failed(squall(home, "dags", "list-runs", "ghost"), "DAG 'ghost' not found")
    failed(squall(home, "tasks", "state", "demo", "third", "r1"), "has no task 'third'")
    failed(squall(home, "tasks", "state", "demo", "first", "r2"), "has no run 'r2'")
    failed(squall(home, "tasks", "states-for-dag-run", "demo", "r2"), "has no run 'r2'")


def test_trigger_of_a_paused_dag_says_so(home: Path) -> None:
    ok(squall(home, "dags", "pause", "demo"))
    out = ok(squall(home, "dags", "trigger", "demo", "--run-id", "p1")).stdout
    assert "p1" in out and "paused" in out


def test_set_task_state(home: Path) -> None:
    ok(squall(home, "dags", "trigger", "demo", "--run-id", "r1"))
    out = ok(squall(home, "tasks", "set-state", "demo", "first", "r1", "--state",
                    "success")).stdout
    assert "none -> success" in out
    assert ok(squall(home, "tasks", "state", "demo", "first", "r1")).stdout.strip() == "success"
    assert "already success" in ok(squall(home, "tasks", "set-state", "demo", "first", "r1",
                                          "--state", "success")).stdout
    failed(squall(home, "tasks", "set-state", "demo", "ghost", "r1", "--state", "failed"),
           "has no task 'ghost'")
    bad = squall(home, "tasks", "set-state", "demo", "first", "r1", "--state", "running")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
