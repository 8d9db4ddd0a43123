"""``squall dags backfill`` through the CLI in a subprocess, on an embedded SQLite database
under SQUALL_HOME."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

DAILY_DAG = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("daily", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         max_active_runs=3):
    EmptyOperator(task_id="first", depends_on_past=DEPENDS) >> EmptyOperator(task_id="second")
'''


def squall(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT),
                    # a manual run of an active DAG (a paused DAG's run joins a backfill)
                    "SQUALL__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false"})
    return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def failed(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


def rows(home: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(home / "squall.db")
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def make_home(tmp_path: Path, *, depends_on_past: bool = False) -> Path:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "daily.py").write_text(
        DAILY_DAG.replace("DEPENDS", str(depends_on_past)))
    return tmp_path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path)


def test_dry_run_creates_nothing(home: Path) -> None:
    trigger = ok(squall(home, "dags", "trigger", "daily", "--run-id", "by_hand",
                        "--logical-date", "2024-01-02"))
    # a one-shot command prints its result, not INFO logs (it parsed the DAG folder)
    assert " INFO " not in trigger.stderr, trigger.stderr
    out = ok(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e",
                    "2024-01-04", "--dry-run", "-o", "json")).stdout
    plan = json.loads(out)
    assert [r["run_id"] for r in plan["runs"]] == [
        f"backfill__2024-01-0{n}T00:00:00+00:00" for n in (1, 3, 4)]
    assert plan["runs"][0]["task_ids"] == ["first", "second"]
    assert [r["run_id"] for r in plan["existing"]] == ["by_hand"]

    table = ok(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e",
                      "2024-01-04", "--dry-run")).stdout
    assert "backfill__2024-01-03" in table and "nothing was created" in table
    assert "already has run by_hand" in table
    assert rows(home, "SELECT count(*) FROM backfill") == [(0,)]
    assert rows(home, "SELECT run_id FROM dag_run") == [("by_hand",)]
    verbose = ok(squall(home, "-v", "dags", "trigger", "daily", "--run-id", "loud",
                        "--logical-date", "2023-06-01"))
    assert " INFO " in verbose.stderr, verbose.stderr  # unless asked


def test_backfill_row_is_created(home: Path) -> None:
    out = ok(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e",
                    "2024-01-10", "-B", "-c", '{"k": "v"}', "--detach", "-y")).stdout
    assert "Created backfill 1 of daily: 10 runs" in out
    assert "at most 3 active" in out  # the DAG's max_active_runs
    [row] = rows(home, "SELECT id, dag_id, run_backwards, max_active_runs, conf, state, "
                       "total_runs FROM backfill")
    assert row[:4] == (1, "daily", 1, 3)
    assert json.loads(row[4]) == {"k": "v"} and row[5:] == ("queued", 10)
    assert rows(home, "SELECT count(*) FROM dag_run") == [(0,)]  # the scheduler creates them

    out = ok(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e",
                    "2024-01-02", "--max-active-runs", "1", "--detach", "-o", "json")).stdout
    assert json.loads(out)["backfill_id"] == 2
    assert rows(home, "SELECT max_active_runs FROM backfill WHERE id = 2") == [(1,)]


def test_backfill_errors(tmp_path: Path) -> None:
    home = make_home(tmp_path, depends_on_past=True)
    failed(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-03",
                  "-B"), "cannot backfill DAG daily backwards")
    failed(squall(home, "dags", "backfill", "daily", "-s", "2024-01-05", "-e", "2024-01-03"),
           "is after the end")
    failed(squall(home, "dags", "backfill", "ghost", "-s", "2024-01-01", "-e", "2024-01-03"),
           "DAG 'ghost' not found")
    failed(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-03",
                  "-c", "[1]"), "must be a JSON object")
    failed(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-03",
                  "--max-active-runs", "0"), "max_active_runs must be >= 1")
    assert rows(home, "SELECT count(*) FROM backfill") == [(0,)]


#: the same bad options as ``squall dags backfill`` arguments and as a REST body
BAD_OPTIONS: list[tuple[list[str], dict[str, Any]]] = [
    (["-s", "2024-01-05", "-e", "2024-01-03"],
     {"from_date": "2024-01-05", "to_date": "2024-01-03"}),
    (["--max-active-runs", "0"], {"max_active_runs": 0}),
    (["--delay-on-limit", "-1"], {"delay_on_limit": -1}),
    (["-t", "zzz"], {"task_regex": "zzz"}),
    (["-t", "("], {"task_regex": "("}),
    (["-i"], {"ignore_dependencies": True}),
    (["--pool", "nope"], {"pool": "nope"}),
]


def test_the_cli_and_the_rest_api_refuse_bad_options_alike(home: Path) -> None:
    from squall.common.db import make_engine, make_session_factory
    from squall.common.settings import Settings
    from tests.support.api import serve

    squall(home, "dags", "list")  # the database, with the DAG in it
    settings = Settings.load(env={"SQUALL_HOME": str(home)})
    engine = make_engine(settings.sql_alchemy_conn)
    try:
        with serve(settings, make_session_factory(engine)) as api:
            for args, body in BAD_OPTIONS:
                dates = ["-s", "2024-01-01", "-e", "2024-01-02"] if "-s" not in args else []
                cli = squall(home, "dags", "backfill", "daily", *dates, *args, "--detach",
                             "-y")
                assert cli.returncode == 1, (args, cli.stdout, cli.stderr)
                rest = api.post("/api/v1/backfills", user="op", json={
                    "dag_id": "daily", "from_date": "2024-01-01", "to_date": "2024-01-02",
                    **body})
                assert rest.status_code == 400, (body, rest.text)
                said = cli.stderr.strip().splitlines()[-1]
                assert said == f"squall: {rest.json()['detail']}", (args, body)
    finally:
        engine.dispose()
    assert rows(home, "SELECT count(*) FROM backfill") == [(0,)]


def test_without_detach_and_no_scheduler_it_says_so_at_once(home: Path) -> None:
    proc = squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-02")
    failed(proc, "no scheduler is running")
    assert "squall backfills show 1 -f" in proc.stderr
    assert "Created backfill 1" in proc.stdout
    assert rows(home, "SELECT state FROM backfill") == [("queued",)]


def test_backfills_list_show_cancel(home: Path) -> None:
    for end in ("2024-01-03", "2024-01-05"):
        ok(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", end,
                  "--detach"))
    listed = json.loads(ok(squall(home, "backfills", "list", "-o", "json")).stdout)
    assert [(b["id"], b["dag_id"], b["state"], b["total_runs"]) for b in listed] == [
        (2, "daily", "queued", 5), (1, "daily", "queued", 3)]
    assert listed[0]["from_date"].startswith("2024-01-01T00:00:00")
    assert "daily" in ok(squall(home, "backfills", "list")).stdout
    assert json.loads(ok(squall(home, "backfills", "list", "--dag-id", "other", "-o",
                                "json")).stdout) == []

    shown = json.loads(ok(squall(home, "backfills", "show", "1", "-o", "json")).stdout)
    assert {k: shown[k] for k in ("id", "state", "total_runs", "runs_finished",
                                  "runs_by_state", "failed_runs")} == {
        "id": 1, "state": "queued", "total_runs": 3, "runs_finished": 0,
        "runs_by_state": {}, "failed_runs": []}
    assert "Backfill 1 of daily: queued" in ok(squall(home, "backfills", "show", "1")).stdout

    assert "cancelled" in ok(squall(home, "backfills", "cancel", "1")).stdout
    assert rows(home, "SELECT id, state FROM backfill ORDER BY id") == [
        (1, "cancelled"), (2, "queued")]
    failed(squall(home, "backfills", "cancel", "1"), "is cancelled: nothing to cancel")
    failed(squall(home, "backfills", "cancel", "9"), "no backfill 9")
    failed(squall(home, "backfills", "show", "9"), "no backfill 9")
    # a finished backfill is followed to its end at once, scheduler or not
    failed(squall(home, "backfills", "show", "1", "-f"), "Backfill 1 of daily: cancelled")


def test_options_are_checked_before_anything_is_recorded(home: Path) -> None:
    failed(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-02",
                  "--pool", "nope", "-y"), "pool 'nope' does not exist")
    failed(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-02",
                  "-i", "-y"), "ignore_dependencies needs task_regex")
    failed(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-02",
                  "-t", "(", "-y"), "is not a regular expression")
    failed(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-02",
                  "-t", "zzz", "-y"), "matches no task of DAG daily")
    assert rows(home, "SELECT count(*) FROM backfill") == [(0,)]
    ok(squall(home, "pools", "set", "one", "1"))
    out = ok(squall(home, "dags", "backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-02",
                    "--pool", "one", "-t", "^second$", "--detach", "-y")).stdout
    assert "Created backfill 1 of daily: 2 runs" in out
    assert rows(home, "SELECT options FROM backfill")[0][0].count('"pool": "one"') == 1
