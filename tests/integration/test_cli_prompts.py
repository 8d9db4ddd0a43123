"""The CLI's ``[y/N]`` prompts on a terminal (a pseudo-terminal here): Ctrl-D (the end of
the input) is a "no", as an empty answer is, never an ``EOFError`` traceback (issue 22
item 8)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_clear_cli import DAG_FILE, ok, squall, states

REPO_ROOT = Path(__file__).resolve().parents[2]

DAILY_DAG = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("daily", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="a")
'''


def on_terminal(home: Path, *args: str, typed: bytes) -> subprocess.CompletedProcess[str]:
    """Run ``squall ARGS`` with a terminal as its stdin, on which ``typed`` is typed."""
    controller, terminal = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)})
    try:
        os.write(controller, typed)  # the terminal keeps it until the prompt reads it
        return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                              stdin=terminal, capture_output=True, text=True, timeout=120,
                              check=False)
    finally:
        os.close(terminal)
        os.close(controller)


CTRL_D = b"\x04"


# one home for the module (a cancelled prompt changes nothing; the "yes" test comes last)
pytestmark = pytest.mark.xdist_group("cli_prompts")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("prompts")
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "clr.py").write_text(DAG_FILE)
    (tmp_path / "dags" / "daily.py").write_text(DAILY_DAG)
    ok(squall(tmp_path, "dags", "trigger", "clr", "--run-id", "r1", "--logical-date",
              "2024-03-01"))
    ok(squall(tmp_path, "tasks", "set-state", "clr", "b", "r1", "--state", "failed"))
    return tmp_path


@pytest.mark.parametrize(("args", "cancelled"), [
    (("tasks", "clear", "clr", "-t", "^b$"), "cancelled; nothing cleared"),
    (("db", "reset"), "Cancelled."),
    (("dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-02"),
     "Cancelled, nothing created"),
], ids=["tasks clear", "db reset", "dags backfill"])
def test_ctrl_d_at_a_prompt_is_no(home: Path, args: tuple[str, ...], cancelled: str) -> None:
    before = states(home, "r1")
    proc = on_terminal(home, *args, typed=CTRL_D)
    assert proc.returncode == 1, f"{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "EOFError" not in proc.stderr, proc.stderr
    assert "[y/N] \n" in proc.stdout  # the prompt's line is ended
    assert cancelled in proc.stdout + proc.stderr
    assert states(home, "r1") == before  # nothing changed, nothing reset
    assert ok(squall(home, "backfills", "list", "-o", "json")).strip() == "[]"


def test_yes_on_the_terminal_goes_on(home: Path) -> None:
    proc = on_terminal(home, "tasks", "clear", "clr", "-t", "^b$", typed=b"y\n")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert states(home, "r1")["b"][0] == "none"
