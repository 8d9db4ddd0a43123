"""``squall dags report`` as a user runs it: ``python -m squall`` in a subprocess with
``SQUALL_HOME=tmp_path`` (an embedded SQLite database), after a real parse of the DAG folder
(``squall dags list`` parses it in child processes and records each file's stats)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

THREE_TASKS = '''
from squall import DAG, EmptyOperator

with DAG("alpha", schedule=None):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
with DAG("alpha_two", schedule=None):
    EmptyOperator(task_id="c")
'''

ONE_TASK = '''
from squall import DAG, EmptyOperator

with DAG("beta", schedule=None):
    EmptyOperator(task_id="only")
'''

BROKEN = '''
from squall import DAG

raise ValueError("this DAG file is broken on purpose")
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


@pytest.fixture
def parsed_home(tmp_path: Path) -> Path:
    dags = tmp_path / "dags"
    (dags / "sub").mkdir(parents=True)
    (dags / "alpha.py").write_text(THREE_TASKS)
    (dags / "sub" / "beta.py").write_text(ONE_TASK)
    (dags / "broken.py").write_text(BROKEN)
    ok(squall(tmp_path, "dags", "list"))
    return tmp_path


def test_report_json_has_one_row_per_file_slowest_first(parsed_home: Path) -> None:
    rows: list[dict[str, Any]] = json.loads(ok(squall(parsed_home, "dags", "report",
                                                      "-o", "json")))
    by_file = {row["file"]: row for row in rows}
    assert sorted(by_file) == ["alpha.py", "broken.py", "sub/beta.py"]
    dags = parsed_home / "dags"
    assert by_file["sub/beta.py"]["fileloc"] == str(dags / "sub" / "beta.py")
    assert [(by_file[f]["dag_num"], by_file[f]["task_num"], by_file[f]["dags"],
             by_file[f]["import_error"]) for f in ("alpha.py", "sub/beta.py", "broken.py")] == [
        (2, 3, ["alpha", "alpha_two"], False),
        (1, 1, ["beta"], False),
        (0, 0, [], True),
    ]
    durations = [row["duration"] for row in rows]
    assert all(d > 0 for d in durations)
    assert durations == sorted(durations, reverse=True)
    assert all(datetime.fromisoformat(row["last_parsed_at"]).tzinfo for row in rows)


def test_report_table_and_plain_show_every_file_and_the_total(parsed_home: Path) -> None:
    rows = json.loads(ok(squall(parsed_home, "dags", "report", "-o", "json")))
    total = sum(row["duration"] for row in rows)
    expected_total = (f"Total: 3 file(s), 3 DAG(s), 4 task(s), {total:.3f}s of parsing")

    table = ok(squall(parsed_home, "dags", "report"))
    assert table.splitlines()[-1] == expected_total
    for fragment in ("alpha.py", "sub/beta.py", "broken.py", "alpha, alpha_two", " ago"):
        assert fragment in table

    plain = ok(squall(parsed_home, "dags", "report", "-o", "plain")).splitlines()
    assert plain[0].split() == ["file", "duration", "dag_num", "task_num", "dags",
                                "last_parsed", "import_error"]
    assert plain[-1] == expected_total
    body = plain[1:-1]
    assert [line.split()[0] for line in body] == [row["file"] for row in rows]
    broken = next(line for line in body if line.startswith("broken.py"))
    assert broken.split()[-1] == "yes"
    assert not any(ch in "\n".join(plain) for ch in "┃│┏")


def test_report_of_a_file_deleted_and_reparsed(parsed_home: Path) -> None:
    (parsed_home / "dags" / "broken.py").unlink()
    ok(squall(parsed_home, "dags", "list"))
    rows = json.loads(ok(squall(parsed_home, "dags", "report", "-o", "json")))
    assert sorted(row["file"] for row in rows) == ["alpha.py", "sub/beta.py"]


def test_report_before_any_parse_says_so(tmp_path: Path) -> None:
    out = ok(squall(tmp_path, "dags", "report"))
    assert "No DAG file has been parsed yet" in out
    assert "is the scheduler running?" in out
    assert ok(squall(tmp_path, "dags", "report", "-o", "plain")) == out
    assert json.loads(ok(squall(tmp_path, "dags", "report", "-o", "json"))) == []


def test_report_help_explains_the_figures(tmp_path: Path) -> None:
    out = " ".join(ok(squall(tmp_path, "dags", "report", "--help")).split())
    assert out.startswith("usage: squall dags report")
    for fragment in ("slowest first", "seconds the parse's child process took",
                     "dag_num / task_num", "totals files, DAGs, tasks and durations"):
        assert fragment in out
    assert list(tmp_path.iterdir()) == []
