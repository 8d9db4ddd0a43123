"""``squall pools ...`` as a user runs it: ``python -m squall`` in a subprocess, on the
SQLite database under SQUALL_HOME (and one round on PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import as_json, assert_clean_error, ok, squall

ETL_DAG = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("etl_dag", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="load", pool="etl")
'''
MISSING = "pool 'etl' does not exist; create it with `squall pools set etl SLOTS`"


def pools_json(home: Path, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    rows = as_json(ok(squall(home, "pools", "list", "-o", "json", env=env)))
    return {row.pop("pool"): row for row in rows}


def test_list_shows_the_default_pool_with_its_usage(tmp_path: Path) -> None:
    assert pools_json(tmp_path) == {"default_pool": {
        "slots": 128, "description": "Default pool", "running_slots": 0, "queued_slots": 0,
        "open_slots": 128}}
    table = ok(squall(tmp_path, "pools", "list")).stdout
    for column in ("pool", "slots", "description", "open_slots", "default_pool", "128"):
        assert column in table


def test_set_creates_updates_and_get_shows_it(tmp_path: Path) -> None:
    created = as_json(ok(squall(tmp_path, "pools", "set", "etl", "3", "nightly loads",
                                "-o", "json")))
    assert created == [{"pool": "etl", "slots": 3, "description": "nightly loads",
                        "running_slots": 0, "queued_slots": 0, "open_slots": 3}]
    # new slots; the description is kept when none is given
    ok(squall(tmp_path, "pools", "set", "etl", "5"))
    [got] = as_json(ok(squall(tmp_path, "pools", "get", "etl", "-o", "json")))
    assert (got["slots"], got["description"]) == (5, "nightly loads")
    ok(squall(tmp_path, "pools", "set", "etl", "-1", "no limit"))
    assert pools_json(tmp_path)["etl"]["open_slots"] == "unlimited"
    assert set(pools_json(tmp_path)) == {"default_pool", "etl"}


@pytest.mark.parametrize(("args", "fragments"), [
    (["set", "etl", "-5"], ["pool 'etl'", "slots must be 0 or more", "-5"]),
    (["set", "etl", "many"], ["slots must be an integer", "'many'"]),
    (["get", "nope"], ["pool 'nope' does not exist"]),
    (["delete", "nope"], ["pool 'nope' does not exist"]),
    (["delete", "default_pool"], ["default_pool cannot be deleted"]),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(
        tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    before = pools_json(tmp_path)
    proc = squall(tmp_path, "pools", *args)
    if "many" in args:  # an argparse usage error
        assert proc.returncode == 2 and all(f in proc.stderr for f in fragments), proc.stderr
    else:
        assert_clean_error(proc, 1, *fragments)
    assert pools_json(tmp_path) == before


def test_delete(tmp_path: Path) -> None:
    ok(squall(tmp_path, "pools", "set", "etl", "2"))
    ok(squall(tmp_path, "pools", "delete", "etl"))
    assert set(pools_json(tmp_path)) == {"default_pool"}


def test_export_then_import_round_trips_in_airflows_format(tmp_path: Path) -> None:
    ok(squall(tmp_path, "pools", "set", "etl", "3", "nightly loads"))
    exported = tmp_path / "pools.json"
    assert "Exported 2 pool(s)" in ok(squall(tmp_path, "pools", "export", str(exported))).stdout
    document = json.loads(exported.read_text())
    assert document == {"default_pool": {"slots": 128, "description": "Default pool"},
                        "etl": {"slots": 3, "description": "nightly loads"}}

    other = tmp_path / "other"
    other.mkdir()
    document["reports"] = {"slots": 1}  # the description may be left out
    exported.write_text(json.dumps(document))
    assert "Uploaded 3 pool(s)" in ok(squall(other, "pools", "import", str(exported))).stdout
    pools = pools_json(other)
    assert {name: (p["slots"], p["description"]) for name, p in pools.items()} == {
        "default_pool": (128, "Default pool"), "etl": (3, "nightly loads"),
        "reports": (1, "")}


@pytest.mark.parametrize(("content", "fragments"), [
    ("{not json", ["is not valid JSON"]),
    ('["etl"]', ["expected a JSON object", "nothing was imported"]),
    ('{"good": {"slots": 2}, "etl": {"description": "no slots"}}',
     ["pool 'etl'", '"slots" is missing', "nothing was imported"]),
    ('{"good": {"slots": 2}, "etl": {"slots": -3}}',
     ["pool 'etl'", "slots must be 0 or more", "nothing was imported"]),
    ('{"good": {"slots": 2}, "etl": 4}', ["pool 'etl'", "expected an object"]),
])
def test_a_bad_import_file_changes_nothing(tmp_path: Path, content: str,
                                           fragments: list[str]) -> None:
    before = pools_json(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert_clean_error(squall(tmp_path, "pools", "import", str(bad)), 1, str(bad), *fragments)
    assert pools_json(tmp_path) == before


def test_import_of_a_missing_file(tmp_path: Path) -> None:
    assert_clean_error(squall(tmp_path, "pools", "import", str(tmp_path / "none.json")), 1,
                       "cannot read", "none.json")


def test_a_task_in_a_missing_pool_says_so_until_the_pool_is_created(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "etl.py").write_text(ETL_DAG)
    env = {"SQUALL__CORE__LOAD_EXAMPLES": "false",
           # etl_dag is scheduled at once (new DAGs start paused by default, as in Airflow)
           "SQUALL__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false"}
    ok(squall(tmp_path, "dags", "trigger", "etl_dag", "-r", "r1", env=env))
    first = ok(squall(tmp_path, "scheduler", "-n", "3", env=env))
    assert first.stderr.count("pool 'etl' does not exist") == 1, first.stderr

    [ti] = as_json(ok(squall(tmp_path, "tasks", "states-for-dag-run", "etl_dag", "r1",
                             "-o", "json", env=env)))
    assert (ti["state"], ti["reason"]) == ("scheduled", MISSING)
    state = ok(squall(tmp_path, "tasks", "state", "etl_dag", "load", "r1", env=env))
    assert state.stdout.strip() == "scheduled"  # the state alone, for scripts
    assert f"reason: {MISSING}" in state.stderr  # and why, for the person reading

    ok(squall(tmp_path, "pools", "set", "etl", "1", env=env))
    [ti] = as_json(ok(squall(tmp_path, "tasks", "states-for-dag-run", "etl_dag", "r1",
                             "-o", "json", env=env)))
    assert (ti["state"], ti["reason"]) == ("scheduled", None)  # cleared by `pools set`
    ok(squall(tmp_path, "scheduler", "-n", "2", env=env))
    [ti] = as_json(ok(squall(tmp_path, "tasks", "states-for-dag-run", "etl_dag", "r1",
                             "-o", "json", env=env)))
    assert (ti["state"], ti["reason"]) == ("queued", None)
    assert pools_json(tmp_path, env)["etl"]["queued_slots"] == 1
    assert pools_json(tmp_path, env)["etl"]["open_slots"] == 0


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_pools_on_postgresql(db_url: str, tmp_path: Path) -> None:
    env = {"SQUALL__DATABASE__SQL_ALCHEMY_CONN": db_url}
    ok(squall(tmp_path, "pools", "set", "etl", "3", "loads", env=env))
    ok(squall(tmp_path, "pools", "set", "etl", "4", env=env))
    assert pools_json(tmp_path, env)["etl"]["slots"] == 4
    bad = tmp_path / "bad.json"
    bad.write_text('{"more": {"slots": 1}, "etl": {"slots": -9}}')
    assert_clean_error(squall(tmp_path, "pools", "import", str(bad), env=env), 1,
                       "nothing was imported")
    assert set(pools_json(tmp_path, env)) == {"default_pool", "etl"}
    assert_clean_error(squall(tmp_path, "pools", "delete", "default_pool", env=env), 1,
                       "default_pool cannot be deleted")
    ok(squall(tmp_path, "pools", "delete", "etl", env=env))
    assert set(pools_json(tmp_path, env)) == {"default_pool"}
    assert not (tmp_path / "squall.db").exists()
