"""``squall tasks clear`` through the CLI in a subprocess, on an embedded SQLite database
under SQUALL_HOME (no scheduler: the task instances are set with ``tasks set-state``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

DAG_FILE = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("clr", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b", retries=2)
    c = EmptyOperator(task_id="c")
    a >> b >> c
'''


def squall(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)})
    return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def states(home: Path, run_id: str) -> dict[str, tuple[str, int]]:
    rows = json.loads(ok(squall(home, "tasks", "states-for-dag-run", "clr", run_id, "-o",
                                "json")))
    return {r["task_id"]: (r["state"], r["try_number"]) for r in rows}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "clr.py").write_text(DAG_FILE)
    ok(squall(tmp_path, "dags", "trigger", "clr", "--run-id", "r1", "--logical-date",
              "2024-03-01"))
    for task_id, state in (("a", "success"), ("b", "failed"), ("c", "skipped")):
        ok(squall(tmp_path, "tasks", "set-state", "clr", task_id, "r1", "--state", state))
    return tmp_path


def test_dry_run_lists_and_changes_nothing_and_without_a_terminal_y_is_required(
        home: Path) -> None:
    before = states(home, "r1")
    out = ok(squall(home, "tasks", "clear", "clr", "--dry-run"))
    assert "Dry run: 3 task instance(s) would be cleared" in out
    for task_id in ("a", "b", "c"):
        assert task_id in out
    proc = squall(home, "tasks", "clear", "clr", "-t", "^b$")
    assert proc.returncode == 1 and "pass -y" in proc.stderr, proc.stderr
    assert states(home, "r1") == before


def test_clear_a_task_and_its_downstream(home: Path) -> None:
    out = ok(squall(home, "tasks", "clear", "clr", "-t", "^b$", "-d", "-y"))
    assert "Cleared 2 task instance(s)" in out
    assert states(home, "r1") == {"a": ("success", 0), "b": ("none", 0), "c": ("none", 0)}


def test_only_failed_upstream_run_id_and_dates(home: Path) -> None:
    out = ok(squall(home, "tasks", "clear", "clr", "-f", "-u", "-y", "--run-id", "r1"))
    assert "Cleared 1 task instance(s)" in out  # only b is failed; a is upstream but success
    assert states(home, "r1")["b"] == ("none", 0)
    assert "No task instances to clear" in ok(squall(
        home, "tasks", "clear", "clr", "-y", "-s", "2024-03-02"))
    assert "No task instances to clear" in ok(squall(
        home, "tasks", "clear", "clr", "-y", "-e", "2024-02-28"))
    assert "No task instances to clear" in ok(squall(home, "tasks", "clear", "clr", "-r", "-y"))
    out = ok(squall(home, "tasks", "clear", "clr", "-y", "-s", "2024-03-01",
                    "-e", "2024-03-01T00:00:00+00:00"))
    assert "Cleared 3 task instance(s)" in out


def test_errors(home: Path) -> None:
    proc = squall(home, "tasks", "clear", "nope", "-y")
    assert proc.returncode == 1 and "not found" in proc.stderr
    proc = squall(home, "tasks", "clear", "clr", "-t", "(", "-y")
    assert proc.returncode == 1 and "--task-regex" in proc.stderr


def test_runs_of_dags_test_are_cleared_from_the_dag_folder(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "clr.py").write_text(DAG_FILE)
    ok(squall(tmp_path, "dags", "test", "clr", "2024-03-01"))
    [run] = json.loads(ok(squall(tmp_path, "dags", "list-runs", "clr", "-o", "json")))
    assert {s for s, _ in states(tmp_path, run["run_id"]).values()} == {"success"}
    out = ok(squall(tmp_path, "tasks", "clear", "clr", "-t", "^c$", "-y"))
    assert "Cleared 1 task instance(s)" in out
    assert states(tmp_path, run["run_id"])["c"] == ("none", 1)
