"""The CLI's actions write the audit log as ``cli:<os user>``, each in its own transaction,
through ``python -m squall`` in a subprocess on an embedded SQLite database under
SQUALL_HOME; dry runs and refused actions write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from squall.runs import audit

REPO_ROOT = Path(__file__).resolve().parents[2]

DAG_FILE = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("aud", schedule="@daily", catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
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


class Log:
    """The audit entries of ``home``'s database written since the last look."""

    def __init__(self, home: Path) -> None:
        self.engine = create_engine(f"sqlite:///{home / 'squall.db'}")
        self.seen = 0

    def new(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(text(
                "SELECT id, event, owner, dag_id, run_id, task_id, extra FROM log "
                "WHERE id > :seen ORDER BY id"), {"seen": self.seen})]
        if rows:
            self.seen = rows[-1]["id"]
        return rows

    def one(self, event: str, **expected: Any) -> dict[str, Any]:
        rows = self.new()
        assert len(rows) == 1, rows
        row = rows[0]
        assert row["event"] == event and row["owner"] == audit.cli_owner(), row
        for key, value in expected.items():
            assert row[key] == value, (key, row)
        extra: dict[str, Any] = json.loads(row["extra"])
        assert extra["source"] == "cli"
        return extra


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "aud.py").write_text(DAG_FILE)
    return tmp_path


def test_cli_actions_write_cli_owner_entries(home: Path) -> None:
    ok(squall(home, "dags", "unpause", "aud"))
    log = Log(home)
    log.one(audit.UNPAUSED, dag_id="aud")
    ok(squall(home, "dags", "pause", "aud"))
    log.one(audit.PAUSED, dag_id="aud")

    ok(squall(home, "dags", "trigger", "aud", "--run-id", "r1", "--logical-date",
              "2024-03-01", "--conf", '{"n": 1}'))
    assert log.one(audit.TRIGGER, dag_id="aud", run_id="r1")["conf"] == {"n": 1}
    refused = squall(home, "dags", "trigger", "aud", "--run-id", "r1")
    assert refused.returncode != 0
    assert log.new() == []

    ok(squall(home, "tasks", "set-state", "aud", "a", "r1", "--state", "failed"))
    assert log.one(audit.MARK_FAILED, dag_id="aud", run_id="r1", task_id="a")["changed"] == 1
    ok(squall(home, "tasks", "clear", "aud", "--dry-run"))
    assert log.new() == []
    ok(squall(home, "tasks", "clear", "aud", "-t", "^a$", "-f", "-y"))
    extra = log.one(audit.CLEAR, dag_id="aud", run_id="r1", task_id="a")
    assert extra["cleared"] == 1 and extra["only_failed"] is True
    assert "No task instances to clear" in ok(squall(home, "tasks", "clear", "aud", "-f", "-y"))
    assert log.new() == []

    ok(squall(home, "dags", "backfill", "aud", "-s", "2024-02-01", "-e", "2024-02-02",
              "--dry-run"))
    assert log.new() == []
    ok(squall(home, "dags", "backfill", "aud", "-s", "2024-02-01", "-e", "2024-02-02",
              "--detach", "-y"))
    extra = log.one(audit.BACKFILL, dag_id="aud")
    assert (extra["backfill_id"], extra["runs"]) == (1, 2)
    ok(squall(home, "backfills", "cancel", "1"))
    assert log.one(audit.BACKFILL_CANCEL, dag_id="aud")["backfill_id"] == 1

    ok(squall(home, "pools", "set", "etl", "3"))
    assert log.one(audit.POOL_CREATE, dag_id=None)["pool"] == "etl"
    ok(squall(home, "pools", "set", "etl", "4"))
    assert log.one(audit.POOL_EDIT, dag_id=None)["slots"] == 4
    ok(squall(home, "pools", "delete", "etl"))
    log.one(audit.POOL_DELETE, dag_id=None)
    assert squall(home, "pools", "delete", "etl").returncode != 0
    assert log.new() == []
