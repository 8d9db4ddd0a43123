"""``squall tasks set-state`` with relatives (--upstream / --downstream / --past / --future),
--dry-run and confirmation, through the CLI in a subprocess as a user runs it, on an
embedded SQLite database under SQUALL_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_runs_cli import REPO_ROOT, as_json, failed, ok, squall

MARK_DAG = '''
import pendulum
from squall import DAG, BashOperator, EmptyOperator

with DAG("m", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    c = BashOperator(task_id="c", bash_command="exit 1")
    d = EmptyOperator(task_id="d")
    a >> b >> c
    a >> d
'''


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "m.py").write_text(MARK_DAG)
    return tmp_path


def no_stdin(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)})
    return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False)


def at_terminal(home: Path, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command with a terminal as its stdin, on which ``answer`` is typed."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)})
    master, slave = os.openpty()
    try:
        os.write(master, f"{answer}\n".encode())
        return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                              stdin=slave, capture_output=True, text=True, timeout=120,
                              check=False)
    finally:
        os.close(master)
        os.close(slave)


def states(home: Path, run_id: str) -> dict[str, str]:
    rows = as_json(squall(home, "tasks", "states-for-dag-run", "m", run_id, "-o", "json"))
    return {r["task_id"]: r["state"] for r in rows}


def test_relatives_dry_run_and_confirmation(home: Path) -> None:
    for run_id, day in (("r1", "2024-03-01"), ("r2", "2024-03-02"), ("r3", "2024-03-03")):
        ok(squall(home, "dags", "trigger", "m", "--run-id", run_id, "--logical-date", day))
    untouched = {"a": "none", "b": "none", "c": "none", "d": "none"}

    # more than one task instance and no terminal to ask on: -y is needed, nothing changes
    proc = no_stdin(home, "tasks", "set-state", "m", "b", "r2", "--state", "success",
                    "--upstream", "--past")
    failed(proc, "pass -y")
    assert "m.a[r1]" in proc.stdout and "m.b[r2]" in proc.stdout
    assert states(home, "r1") == states(home, "r2") == untouched

    out = ok(squall(home, "tasks", "set-state", "m", "b", "r2", "--state", "success",
                    "--upstream", "--past", "--dry-run")).stdout
    listed = [line.split(":")[0].strip() for line in out.splitlines()
              if line.startswith("  m.")]
    assert listed == ["m.a[r1]", "m.b[r1]", "m.a[r2]", "m.b[r2]"]
    assert "nothing changed" in out
    assert states(home, "r1") == untouched

    # at a terminal: asked, and "n" changes nothing
    proc = at_terminal(home, "n", "tasks", "set-state", "m", "b", "r2", "--state", "success",
                       "--upstream", "--past")
    failed(proc, "cancelled")
    assert "Change these 4 task instances (marked success)? [y/N]" in proc.stdout
    assert states(home, "r2") == untouched
    out = ok(at_terminal(home, "y", "tasks", "set-state", "m", "b", "r2", "--state",
                         "success", "--upstream", "--past")).stdout
    assert "TaskInstance m.a[r1]: none -> success" in out
    for run_id in ("r1", "r2"):
        assert states(home, run_id) == {"a": "success", "b": "success", "c": "none",
                                        "d": "none"}
    assert states(home, "r3") == untouched

    # downstream and future; those already in the state are left out
    out = ok(squall(home, "tasks", "set-state", "m", "a", "r2", "--state", "skipped",
                    "--downstream", "--future", "-y")).stdout
    changed = sorted(line.split()[1] for line in out.splitlines()
                     if line.startswith("TaskInstance"))
    assert changed == sorted(f"m.{t}[{r}]:" for t in "abcd" for r in ("r2", "r3"))
    assert states(home, "r1")["a"] == "success"
    assert set(states(home, "r3").values()) == {"skipped"}
    out = ok(squall(home, "tasks", "set-state", "m", "a", "r3", "--state", "skipped",
                    "--downstream")).stdout
    assert "Nothing to change: the 4 task instance(s) selected are skipped" in out

    # one task instance: no confirmation needed
    out = ok(no_stdin(home, "tasks", "set-state", "m", "d", "r1", "--state", "failed")).stdout
    assert out.strip() == "TaskInstance m.d[r1]: none -> failed"


def test_a_failed_run_succeeds_after_its_failed_leaf_is_marked_success(home: Path) -> None:
    # c fails, so the run fails (and `dags test` exits 1)
    assert squall(home, "dags", "test", "m", "2024-03-01").returncode == 1
    [run] = as_json(squall(home, "dags", "list-runs", "m", "-o", "json"))
    run_id = run["run_id"]
    assert run["state"] == "failed"

    out = ok(squall(home, "tasks", "set-state", "m", "c", run_id, "--state", "success")).stdout
    assert f"TaskInstance m.c[{run_id}]: failed -> success" in out
    assert f"DagRun m {run_id}: failed -> running" in out
    assert ok(squall(home, "dags", "state", "m", run_id)).stdout.strip() == "running"

    ok(squall(home, "dags", "unpause", "m"))
    ok(squall(home, "scheduler", "--num-runs", "1", "--no-dag-processor"))
    assert ok(squall(home, "dags", "state", "m", run_id)).stdout.strip() == "success"


def test_set_state_errors(home: Path) -> None:
    ok(squall(home, "dags", "trigger", "m", "--run-id", "r1"))
    failed(squall(home, "tasks", "set-state", "m", "ghost", "r1", "--state", "failed",
                  "--downstream"), "has no task 'ghost'")
    failed(squall(home, "tasks", "set-state", "m", "a", "r9", "--state", "failed",
                  "--future"), "has no run 'r9'")
