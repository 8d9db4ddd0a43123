"""The ``squall`` command line as a user runs it.

Most tests run ``python -m squall ...`` in a subprocess with ``SQUALL_HOME=tmp_path`` and no
other ``SQUALL*`` variable inherited. Checks of pure output (``--help``, ``config``) call
:func:`squall.cli.main` in-process through the ``cli`` fixture, which sets the environment
with ``monkeypatch`` and puts the logging configuration back afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from squall.cli import main
from squall.common import dbops
from squall.common.db import make_engine

# --------------------------------------------------------------------------- helpers


def squall(home: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m squall ARGS`` with ``SQUALL_HOME=home`` and only the SQUALL* ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ["SQUALL_HOME"] = str(home)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON on stdout (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """The command failed with ``code`` and a one-line ``squall: ...`` message, no traceback."""
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    messages = [line for line in proc.stderr.splitlines() if line.startswith("squall: ")]
    assert len(messages) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in messages[0], (fragment, messages[0])


def words(text_: str) -> str:
    """``text_`` with runs of whitespace made single spaces (argparse wraps to the terminal)."""
    return " ".join(text_.split())


@dataclass
class Result:
    code: int
    out: str
    err: str


CliRunner = Callable[..., Result]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Iterator[CliRunner]:
    """Call ``squall.cli.main(argv)`` in-process with ``SQUALL_HOME=tmp_path``."""
    for name in list(os.environ):
        if name.startswith("SQUALL"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("SQUALL_HOME", str(tmp_path))
    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    saved = (root.level, list(root.handlers), alembic.level)

    def run(*argv: str, env: dict[str, str] | None = None) -> Result:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield run
    root.setLevel(saved[0])
    for handler in root.handlers[:]:
        if handler not in saved[1]:
            root.removeHandler(handler)
    alembic.setLevel(saved[2])


DAG_ALPHA = '''
import pendulum
from squall import DAG, EmptyOperator, PythonOperator


def hello():
    return "hi"


with DAG(dag_id="alpha", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         tags=["team"]):
    PythonOperator(task_id="hello", python_callable=hello) >> EmptyOperator(task_id="done")
'''

DAG_BETA = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG(dag_id="beta", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="only")
'''

DAG_BROKEN = '''
from squall import DAG

raise ValueError("this DAG file is broken on purpose")
'''


@pytest.fixture
def dag_home(tmp_path: Path) -> Path:
    """A SQUALL_HOME whose dags folder holds two good DAG files and one broken one."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "alpha.py").write_text(DAG_ALPHA)
    (dags / "beta.py").write_text(DAG_BETA)
    (dags / "broken.py").write_text(DAG_BROKEN)
    return tmp_path


def sqlite_tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def sqlite_count(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


# --------------------------------------------------------------------------- --help


def test_top_level_help_in_a_subprocess(tmp_path: Path) -> None:
    proc = ok(squall(tmp_path, "--help"))
    assert proc.stdout.startswith("usage: squall")
    for command in ("db", "dags", "tasks", "config", "version"):
        assert f"    {command} " in proc.stdout
    assert "SQUALL__SECTION__KEY" in words(proc.stdout)
    assert not (tmp_path / "squall.db").exists()


HELP_CASES: list[tuple[list[str], str]] = [
    ([], "Celery-based workflow executor"),
    (["db"], "Create, upgrade, reset or check the metadata database"),
    (["db", "migrate"], "create or upgrade the schema"),
    (["db", "reset"], "drop every Squall table"),
    (["db", "check"], "check that the database is reachable"),
    (["dags"], "Work with the DAGs in [core] dags_folder"),
    (["dags", "list"], "parse the DAG folder and list its DAGs"),
    (["dags", "list-import-errors"], "DAG files that failed to load"),
    (["dags", "show"], "print a DAG's tasks and dependencies"),
    (["dags", "pause"], "pause a DAG"),
    (["dags", "unpause"], "unpause a DAG"),
    (["dags", "test"], "Runs every task of one DAG run here"),
    (["tasks"], "run or inspect single tasks"),
    (["tasks", "test"], "runs one try of TASK_ID"),
    (["config"], "Settings come from defaults"),
    (["config", "list"], "every setting with its value and where it came from"),
    (["config", "get"], "the value of one setting"),
    (["version"], "print Squall's version"),
]


@pytest.mark.parametrize(("command", "explanation"), HELP_CASES,
                         ids=[" ".join(c) or "squall" for c, _ in HELP_CASES])
def test_help_exits_0_and_explains(cli: CliRunner, command: list[str], explanation: str,
                                   tmp_path: Path) -> None:
    result = cli(*command, "--help")
    assert result.code == 0, result
    assert result.out.startswith(f"usage: {' '.join(['squall', *command])} ")
    assert explanation in words(result.out)
    assert result.err == ""
    assert list(tmp_path.iterdir()) == []


def test_usage_error_exits_2(cli: CliRunner) -> None:
    result = cli("dags", "frobnicate")
    assert result.code == 2
    assert "invalid choice: 'frobnicate'" in result.err


# --------------------------------------------------------------------------- db


def test_db_migrate_creates_the_database_in_an_empty_home(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    head = dbops.head_revision()
    proc = ok(squall(home, "db", "migrate"))
    db = home / "squall.db"
    assert db.is_file()
    assert f"sqlite:///{db}" in proc.stdout
    assert f"schema revision none -> {head}" in proc.stdout
    assert {"alembic_version", "dag", "dag_run", "task_instance"} <= sqlite_tables(db)

    again = ok(squall(home, "db", "migrate"))
    assert f"schema revision {head} -> {head}" in again.stdout


def test_default_pool_task_slot_count_sizes_the_default_pool_created(tmp_path: Path) -> None:
    def pools() -> list[tuple[str, int]]:
        conn = sqlite3.connect(tmp_path / "squall.db")
        try:
            return [tuple(r) for r in conn.execute("SELECT pool, slots FROM slot_pool")]
        finally:
            conn.close()

    ok(squall(tmp_path, "db", "migrate", env={"SQUALL__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "5"}))
    assert pools() == [("default_pool", 5)]
    # an existing pool keeps its slots; a reset creates it anew
    ok(squall(tmp_path, "db", "migrate", env={"SQUALL__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "7"}))
    assert pools() == [("default_pool", 5)]
    ok(squall(tmp_path, "db", "reset", "--yes",
              env={"SQUALL__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "7"}))
    assert pools() == [("default_pool", 7)]


def test_db_check_ok_then_broken(tmp_path: Path) -> None:
    ok(squall(tmp_path, "db", "migrate"))
    proc = ok(squall(tmp_path, "db", "check"))
    assert "is reachable" in proc.stdout
    assert dbops.head_revision() in proc.stdout

    conn = sqlite3.connect(tmp_path / "squall.db")
    conn.execute("DROP TABLE xcom")
    conn.commit()
    conn.close()

    proc = squall(tmp_path, "db", "check")
    assert proc.returncode == 1, proc
    problems = [line for line in proc.stderr.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1, proc.stderr
    assert "xcom" in problems[0]
    assert "is reachable" not in proc.stdout


def test_db_reset_asks_for_yes_without_a_tty(dag_home: Path) -> None:
    ok(squall(dag_home, "dags", "list"))
    db = dag_home / "squall.db"
    assert sqlite_count(db, "dag") == 2

    proc = squall(dag_home, "db", "reset")
    assert_clean_error(proc, 1, "db reset", "--yes")
    assert sqlite_count(db, "dag") == 2

    proc = ok(squall(dag_home, "db", "reset", "--yes"))
    assert f"reset to revision {dbops.head_revision()}" in proc.stdout
    assert sqlite_count(db, "dag") == 0
    assert sqlite_count(db, "slot_pool") == 1  # the default pool is back


# --------------------------------------------------------------------------- dags


def test_dags_list_shows_the_good_dags(dag_home: Path) -> None:
    proc = ok(squall(dag_home, "dags", "list", "-o", "json"))
    rows = {row["dag_id"]: row for row in as_json(proc)}
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"]["fileloc"] == str(dag_home / "dags" / "alpha.py")
    assert rows["alpha"]["schedule"] == "@daily"
    assert rows["alpha"]["tags"] == "team"
    assert rows["beta"]["fileloc"] == str(dag_home / "dags" / "beta.py")
    # new DAGs start paused ([core] dags_are_paused_at_creation), as in Airflow
    assert all(row["is_paused"] is True for row in rows.values())
    # broken.py failed to load: said on stderr (as Airflow 2's dags list says it), with how
    # to see why; stdout is the list alone
    assert proc.stderr.strip() == (
        "Error: Failed to load all files (1 file(s) with import errors). For details, run "
        "`squall dags list-import-errors`")

    (dag_home / "dags" / "broken.py").unlink()
    proc = ok(squall(dag_home, "dags", "list"))
    assert "alpha" in proc.stdout and proc.stderr == ""


def test_dags_list_import_errors_explains_the_broken_file(dag_home: Path) -> None:
    proc = ok(squall(dag_home, "dags", "list-import-errors", "-o", "json"))
    errors = as_json(proc)
    assert [e["filepath"] for e in errors] == [str(dag_home / "dags" / "broken.py")]
    reason = errors[0]["error"]
    assert "ValueError: this DAG file is broken on purpose" in reason
    assert "broken.py\", line 4" in reason
    assert "dagbag.py" not in reason  # Squall's own frames are left out

    (dag_home / "dags" / "broken.py").unlink()
    proc = ok(squall(dag_home, "dags", "list-import-errors"))
    assert proc.stdout.strip() == "No import errors."


def test_dags_show_prints_the_tasks_and_their_order(dag_home: Path) -> None:
    proc = ok(squall(dag_home, "dags", "show", "alpha"))
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("DAG alpha")
    assert "schedule=@daily" in lines[0]
    hello = next(line for line in lines if "hello" in line)
    done = next(line for line in lines if "done" in line)
    assert lines.index(hello) < lines.index(done)
    indent = len(done) - len(done.lstrip())
    assert indent > len(hello) - len(hello.lstrip())  # done is drawn under hello

    proc = squall(dag_home, "dags", "show", "nope")
    assert_clean_error(proc, 1, "'nope'", "not found")


def test_dags_pause_and_unpause(dag_home: Path) -> None:
    def paused() -> dict[str, bool]:
        rows = as_json(ok(squall(dag_home, "dags", "list", "-o", "json")))
        return {row["dag_id"]: row["is_paused"] for row in rows}

    # pausing works before any `dags list` has recorded the DAGs
    assert "alpha: unpaused" in ok(squall(dag_home, "dags", "unpause", "alpha")).stdout
    assert paused() == {"alpha": False, "beta": True}  # new DAGs start paused
    assert "alpha: paused" in ok(squall(dag_home, "dags", "pause", "alpha")).stdout
    assert paused() == {"alpha": True, "beta": True}

    proc = squall(dag_home, "dags", "pause", "nope")
    assert_clean_error(proc, 1, "'nope'", "not found")


def test_dags_test_unknown_dag(dag_home: Path) -> None:
    proc = squall(dag_home, "dags", "test", "nope")
    assert_clean_error(proc, 1, "DAG 'nope' not found", str(dag_home / "dags"),
                       "list-import-errors")
    assert proc.stdout == ""


def test_dags_test_bad_logical_date(dag_home: Path) -> None:
    proc = squall(dag_home, "dags", "test", "alpha", "yesterday-ish")
    assert_clean_error(proc, 1, "logical date 'yesterday-ish'", "ISO date")
    assert proc.stdout == ""


def test_a_naive_logical_date_is_in_the_default_timezone(dag_home: Path) -> None:
    env = {"SQUALL__CORE__DEFAULT_TIMEZONE": "Europe/Amsterdam"}
    ok(squall(dag_home, "dags", "trigger", "beta", "--run-id", "r1",
              "--logical-date", "2024-03-01T02:00", env=env))
    ok(squall(dag_home, "dags", "trigger", "beta", "--run-id", "r2",
              "--logical-date", "2024-03-01T02:00+00:00", env=env))
    runs = {r["run_id"]: r["logical_date"]
            for r in as_json(squall(dag_home, "dags", "list-runs", "beta", "-o", "json"))}
    assert runs["r1"].startswith("2024-03-01T01:00:00")  # 02:00 in Amsterdam
    assert runs["r2"].startswith("2024-03-01T02:00:00")


def test_tasks_test_runs_one_task(dag_home: Path) -> None:
    proc = ok(squall(dag_home, "tasks", "test", "alpha", "hello", "2024-03-01", "-o", "json"))
    assert as_json(proc) == {"task_id": "hello", "state": "success", "try_number": 1,
                             "reason": None}

    proc = squall(dag_home, "tasks", "test", "alpha", "nope")
    assert_clean_error(proc, 1, "alpha", "'nope'", "hello", "done")


# --------------------------------------------------------------------------- config


def rows_by_key(result: Result) -> dict[str, dict[str, str]]:
    assert result.code == 0, result
    return {f"{r['section']}.{r['key']}": r for r in json.loads(result.out)}


def test_config_list_shows_values_and_sources(cli: CliRunner, tmp_path: Path) -> None:
    toml = tmp_path / "squall.toml"
    toml.write_text("[metrics]\nstatsd_port = 9090\n")
    rows = rows_by_key(cli("config", "list", "-o", "json",
                           env={"SQUALL__CORE__PARALLELISM": "7"}))
    assert rows["core.parallelism"]["value"] == "7"
    assert rows["core.parallelism"]["source"] == "env SQUALL__CORE__PARALLELISM"
    assert rows["metrics.statsd_port"] == {"section": "metrics", "key": "statsd_port",
                                           "value": "9090", "source": f"file {toml}"}
    assert rows["core.dags_folder"]["value"] == str(tmp_path / "dags")
    assert rows["core.dags_folder"]["source"] == "default"
    assert rows["core.load_examples"]["value"] == "false"
    assert {r["source"] for k, r in rows.items()
            if k not in ("core.parallelism", "metrics.statsd_port")} == {"default"}


def test_config_list_masks_passwords(cli: CliRunner) -> None:
    env = {"SQUALL__DATABASE__SQL_ALCHEMY_CONN": "postgresql://squall:s3cr3t@db.example/squall",
           "SQUALL__CELERY__BROKER_URL": "redis://:hunter2@redis.example:6379/0"}
    rows = rows_by_key(cli("config", "list", "-o", "json", env=env))
    conn = rows["database.sql_alchemy_conn"]["value"]
    assert "s3cr3t" not in conn
    assert conn == "postgresql://squall:***@db.example/squall"
    assert "hunter2" not in rows["celery.broker_url"]["value"]

    table = cli("config", "list")
    assert table.code == 0
    assert "s3cr3t" not in table.out and "hunter2" not in table.out
    assert "squall:***@db.example" in table.out


def test_config_get(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("config", "get", "core", "dags_folder")
    assert (result.code, result.out) == (0, f"{tmp_path / 'dags'}\n")
    result = cli("config", "get", "core", "load_examples",
                 env={"SQUALL__CORE__LOAD_EXAMPLES": "1"})
    assert (result.code, result.out) == (0, "true\n")


@pytest.mark.parametrize(("section", "key", "fragment"), [
    ("core", "nope", "unknown setting [core] nope"),
    ("nope", "dags_folder", "unknown section [nope]"),
])
def test_config_get_unknown_setting(cli: CliRunner, section: str, key: str,
                                    fragment: str) -> None:
    result = cli("config", "get", section, key)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("squall: ")
    assert fragment in result.err
    assert "Traceback" not in result.err


def test_output_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    """``squall ... | head`` where head has already gone: no traceback, the exit code of a
    command ended by SIGPIPE. The pipe's read end is closed before the command starts, so
    its first write fails whatever the timing."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ["SQUALL_HOME"] = str(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "squall", "config", "get", "core",
                               "dags_folder"], env=environ, stdin=subprocess.DEVNULL,
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120, check=False)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def test_invalid_setting_in_env_exits_2(tmp_path: Path) -> None:
    proc = squall(tmp_path, "config", "list", env={"SQUALL__CORE__PARALLELISM": "abc"})
    assert_clean_error(proc, 2, "[core] parallelism", "'abc'", "env SQUALL__CORE__PARALLELISM")
    assert proc.stdout == ""


@pytest.mark.parametrize("key, value, fragment", [
    ("PORT", "http", "[api] port = 'http'"),
    ("WORKERS", "0", "[api] workers = '0'"),
    ("HOSTNAME", "x", "unknown setting [api] hostname"),
])
def test_bad_api_settings_exit_2(tmp_path: Path, key: str, value: str, fragment: str) -> None:
    proc = squall(tmp_path, "api", env={f"SQUALL__API__{key}": value})
    assert_clean_error(proc, 2, f"SQUALL__API__{key}", fragment)


def test_malformed_env_variable_exits_2(cli: CliRunner) -> None:
    result = cli("version", env={"SQUALL__CORE": "1"})
    assert result.code == 2
    assert result.err.startswith("squall: ")
    assert "SQUALL__CORE" in result.err and "SQUALL__SECTION__KEY" in result.err


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_dags_test_on_postgresql(db_url: str, tmp_path: Path) -> None:
    env = {"SQUALL__DATABASE__SQL_ALCHEMY_CONN": db_url, "SQUALL__CORE__LOAD_EXAMPLES": "true"}

    proc = squall(tmp_path, "dags", "test", "example_trigger_rules", "2024-03-01", "-o", "json",
                  env=env)
    data = as_json(proc)
    assert proc.returncode == 1  # the run fails: `fail` fails on purpose
    assert data["state"] == "failed"
    states = {t["task_id"]: (t["state"], t["try_number"]) for t in data["task_instances"]}
    assert states["ok"] == ("success", 1)
    assert states["fail"] == ("failed", 1)
    assert states["skip"][0] == "skipped"
    assert states["rule_all_success"][0] == "upstream_failed"
    assert states["rule_all_done"][0] == "success"
    assert states["rule_one_failed"][0] == "success"
    assert states["rule_none_skipped"][0] == "skipped"

    proc = squall(tmp_path, "dags", "test", "example_retries", "2024-03-01", "-o", "json",
                  env=env)
    data = as_json(proc)
    assert proc.returncode == 0, proc.stderr
    assert data["state"] == "success"
    states = {t["task_id"]: (t["state"], t["try_number"]) for t in data["task_instances"]}
    assert states["flaky"] == ("success", 3)
    assert states["no_retry"] == ("failed", 1)
    assert states["report"][0] == "success"

    # the runs went to PostgreSQL, not to a SQLite file in the home
    assert not (tmp_path / "squall.db").exists()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            runs = {dag_id: state for dag_id, state
                    in conn.execute(text("SELECT dag_id, state FROM dag_run"))}
            flaky = conn.execute(text(
                "SELECT state, try_number FROM task_instance "
                "WHERE dag_id = 'example_retries' AND task_id = 'flaky'")).one()
    finally:
        engine.dispose()
    assert runs == {"example_trigger_rules": "failed", "example_retries": "success"}
    assert tuple(flaky) == ("success", 3)


def test_flower_with_require_auth_refuses_to_start_without_authentication(
        tmp_path: Path) -> None:
    proc = squall(tmp_path, "celery", "flower", "--require-auth",
                  env={"FLOWER_BASIC_AUTH": "", "FLOWER_AUTH": ""}, timeout=60)
    assert_clean_error(proc, 1, "--require-auth", "set FLOWER_BASIC_AUTH to user:password")
