"""``squall dags list`` on a folder the database already knows (issue 26): a file whose
answer is the one recorded (``dag_file.fingerprint``) is not decoded or written again, and
the list is still the folder's. Run as a user runs it: ``python -m squall`` in a subprocess
with ``SQUALL_HOME=tmp_path`` (an embedded SQLite database)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def dag_file(*dag_ids: str, tag: str = "t1") -> str:
    lines = ["from squall import DAG, EmptyOperator", ""]
    for dag_id in dag_ids:
        lines += [f"with DAG({dag_id!r}, schedule=None, tags=[{tag!r}]):",
                  "    EmptyOperator(task_id='a')", ""]
    return "\n".join(lines)


def squall(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)})
    return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False)


def listed(home: Path) -> dict[str, dict[str, Any]]:
    proc = squall(home, "dags", "list", "-o", "json")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return {row["dag_id"]: row for row in json.loads(proc.stdout)}


def query(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "squall.db") as conn:
        return conn.execute(sql).fetchall()


def test_an_unchanged_file_is_not_rewritten_and_a_changed_one_is(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "a.py").write_text(dag_file("alpha"))
    (dags / "b.py").write_text(dag_file("beta"))
    first = listed(tmp_path)
    assert set(first) == {"alpha", "beta"}
    serialized = dict(query(tmp_path, "SELECT dag_id, last_updated FROM serialized_dag"))
    parsed = dict(query(tmp_path, "SELECT dag_id, last_parsed_time FROM dag"))

    (dags / "b.py").write_text(dag_file("beta", tag="t2"))
    second = listed(tmp_path)
    assert set(second) == {"alpha", "beta"}
    assert second["beta"]["tags"] == "t2"
    assert second["alpha"]["tags"] == "t1"
    now_serialized = dict(query(tmp_path, "SELECT dag_id, last_updated FROM serialized_dag"))
    now_parsed = dict(query(tmp_path, "SELECT dag_id, last_parsed_time FROM dag"))
    assert now_serialized["alpha"] == serialized["alpha"]  # not written again
    assert now_serialized["beta"] != serialized["beta"]
    assert now_parsed["alpha"] > parsed["alpha"]  # but seen parsed now


def test_a_file_gone_takes_its_dags_off_the_list(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "a.py").write_text(dag_file("alpha"))
    (dags / "b.py").write_text(dag_file("beta"))
    assert set(listed(tmp_path)) == {"alpha", "beta"}
    (dags / "b.py").unlink()
    assert set(listed(tmp_path)) == {"alpha"}


def test_an_unchanged_file_takes_back_a_dag_id_the_other_file_dropped(tmp_path: Path) -> None:
    # a.py and b.py both define "twin": a.py (first) holds it, b.py has an import error.
    # When a.py drops it, b.py's answer is unchanged, yet its DAG has no active row any more:
    # b.py is parsed again in full and takes the DAG.
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "a.py").write_text(dag_file("twin", "alpha"))
    (dags / "b.py").write_text(dag_file("twin"))
    first = listed(tmp_path)
    assert first["twin"]["fileloc"] == str(dags / "a.py")
    assert query(tmp_path, "SELECT filename FROM import_error") == [(str(dags / "b.py"),)]

    (dags / "a.py").write_text(dag_file("alpha"))
    second = listed(tmp_path)
    assert set(second) == {"twin", "alpha"}
    assert second["twin"]["fileloc"] == str(dags / "b.py")
    assert query(tmp_path, "SELECT filename FROM import_error") == []


def test_an_unchanged_broken_file_keeps_its_import_error(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "a.py").write_text(dag_file("alpha"))
    (dags / "broken.py").write_text("from squall import DAG\n\n"
                                    "raise ValueError('broken on purpose')\n")
    assert set(listed(tmp_path)) == {"alpha"}
    errors = query(tmp_path, "SELECT filename FROM import_error")
    assert errors == [(str(dags / "broken.py"),)]

    (dags / "a.py").write_text(dag_file("alpha", tag="t2"))
    second = listed(tmp_path)
    assert second["alpha"]["tags"] == "t2"
    assert query(tmp_path, "SELECT filename FROM import_error") == errors
    proc = squall(tmp_path, "dags", "list-import-errors", "-o", "json")
    assert "broken on purpose" in proc.stdout
