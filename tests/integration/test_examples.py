"""Every example DAG through ``squall dags test`` (the CLI, in a subprocess, as a user runs
it), asserting the run state and each task instance's state and try number."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from squall.dag_processing.files import list_dag_files
from squall.sdk.examples import EXAMPLES_FOLDER
from squall.sdk.trigger_rule import TriggerRule

S, F, K, UF = "success", "failed", "skipped", "upstream_failed"

# rule -> expected state with upstreams (success, failed, skipped)
_MIXED = {
    TriggerRule.ALL_SUCCESS: UF,
    TriggerRule.ALL_FAILED: K,
    TriggerRule.ALL_DONE: S,
    TriggerRule.ALL_SKIPPED: K,
    TriggerRule.ONE_SUCCESS: S,
    TriggerRule.ONE_FAILED: S,
    TriggerRule.ONE_DONE: S,
    TriggerRule.NONE_FAILED: UF,
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: UF,
    TriggerRule.NONE_SKIPPED: K,
    TriggerRule.ALWAYS: S,
    # a teardown's rule (Airflow 2.7+); without setup upstreams it is all_done (Airflow's
    # TriggerRuleDep: no setup to have failed or been skipped)
    TriggerRule.ALL_DONE_SETUP_SUCCESS: S,
}

EXPECTED: dict[str, tuple[str, dict[str, str | tuple[str, int]]]] = {
    "example_bash_operator": (S, {
        "hello": S, "in_tmp": S, "skipped": K, "after_skip": K, "done": S,
    }),
    "example_python_operator": (S, {"produce": S, "consume": S}),
    "example_taskflow": (S, {"extract": S, "transform": S, "load": S}),
    "example_branch": (S, {
        "choose": S, "path_a": S, "path_b": K, "after_b": K, "join": S, "pick_many": S,
        "left": S, "middle": S, "right": K, "all_ok": K,
    }),
    "example_short_circuit": (S, {
        "go": S, "after_go": S, "stop": S, "after_stop": K, "after_stop_2": K,
        "soft_stop": S, "soft_next": K, "soft_all_done": S,
    }),
    "example_trigger_rules": (F, {
        "ok": S, "fail": (F, 1), "skip": K, "skip_a": K, "skip_b": K, "ok_a": S,
        **{f"rule_{rule.value}": state for rule, state in _MIXED.items()},
        "all_skipped_yes": S, "none_failed_min_one_success_no": K,
        "all_failed_no": K, "one_failed_no": K,
    }),
    "example_retries": (S, {
        "flaky": (S, 3), "no_retry": (F, 1), "too_slow": (F, 1), "backoff": (S, 3),
        "report": S,
    }),
    "example_sensors": (S, {
        "touch": S, "wait_file": S, "cleanup": S, "poke_twice": (S, 1),
        "reschedule_twice": (S, 1), "never_true_soft_fail": K, "after_interval": S,
    }),
    "example_task_group": (S, {
        t: S for t in ("start", "extract.a", "extract.b", "extract.inner.c", "load.x",
                       "load.y", "end", "p1", "p2", "q1", "q2", "z1", "z2")
    }),
    "example_templating": (S, {"echo": S, "check": S}),
}


def squall(home: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({"SQUALL_HOME": str(home), "SQUALL__CORE__LOAD_EXAMPLES": "true"})
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_json(home: Path, dag_id: str, *extra: str,
             env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = squall(home, "dags", "test", dag_id, *extra, "-o", "json", env=env)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"dags test {dag_id} printed no JSON (exit {proc.returncode}):\n"
                    f"{proc.stdout}\n{proc.stderr}")
    return proc.returncode, data


def test_every_example_has_expectations() -> None:
    files = {p.stem for p in EXAMPLES_FOLDER.glob("example_*.py")}
    assert files == set(EXPECTED)


def test_the_examples_folder_lists_only_the_examples() -> None:
    """The package's __init__.py is not taken for a DAG file (safe mode skips it)."""
    assert {p.name for p in list_dag_files(EXAMPLES_FOLDER)} == {f"{d}.py" for d in EXPECTED}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_example_dag_reaches_expected_states(dag_id: str, tmp_path: Path) -> None:
    run_state, tasks = EXPECTED[dag_id]
    code, data = run_json(tmp_path, dag_id, "2024-03-01")
    assert data["dag_id"] == dag_id
    got = {t["task_id"]: (t["state"], t["try_number"]) for t in data["task_instances"]}
    assert set(got) == set(tasks)
    for task_id, want in tasks.items():
        state, tries = want if isinstance(want, tuple) else (want, None)
        assert got[task_id][0] == state, (task_id, got[task_id], data)
        if tries is not None:
            assert got[task_id][1] == tries, (task_id, got[task_id])
        elif state in (S, F):
            assert got[task_id][1] == 1, (task_id, got[task_id])
    assert data["state"] == run_state, data
    assert code == (0 if run_state == S else 1)


def test_dags_test_twice_for_one_date_replaces_the_run(tmp_path: Path) -> None:
    for _ in range(2):
        code, data = run_json(tmp_path, "example_python_operator", "2024-03-01")
        assert code == 0 and data["state"] == S
    proc = squall(tmp_path, "dags", "test", "example_python_operator", "2024-03-01",
                  "--conf", "[1]")
    assert proc.returncode == 1 and "--conf must be a JSON object" in proc.stderr


def test_conf_overrides_params(tmp_path: Path) -> None:
    code, data = run_json(tmp_path, "example_templating", "--conf", '{"who": "conf"}')
    assert code == 0, data
    assert {t["task_id"]: t["state"] for t in data["task_instances"]} == {
        "echo": S, "check": S}


def test_task_logs_are_written(tmp_path: Path) -> None:
    code, data = run_json(tmp_path, "example_bash_operator", "2024-03-01")
    assert code == 0
    log_file = (tmp_path / "logs" / "dag_id=example_bash_operator"
                / f"run_id={data['run_id']}" / "task_id=hello" / "attempt=1.log")
    assert log_file.is_file()
    assert "hello from example_bash_operator" in log_file.read_text()


AIRFLOW_STYLE_DAG = '''
from datetime import timedelta

from airflow import DAG
from airflow.decorators import task
from airflow.exceptions import AirflowSkipException
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import PythonOperator
from airflow.utils.dates import days_ago
from airflow.utils.trigger_rule import TriggerRule

def maybe_skip():
    raise AirflowSkipException("nothing to do today")

with DAG("airflow_style", schedule_interval="@daily", start_date=days_ago(2),
         catchup=False, default_args={"retries": 1, "retry_delay": timedelta(seconds=0.1)}):
    extract = BashOperator(task_id="extract", bash_command="echo 7")

    @task
    def double(value):
        return int(value) * 2

    skipper = PythonOperator(task_id="skipper", python_callable=maybe_skip)
    join = EmptyOperator(task_id="join", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    [double(extract.output), skipper] >> join
'''


def test_airflow_style_dag_runs_with_compat_switch(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "airflow_style.py").write_text(AIRFLOW_STYLE_DAG)
    env = {"SQUALL__CORE__LOAD_EXAMPLES": "false", "SQUALL__CORE__AIRFLOW_COMPAT": "true"}
    code, data = run_json(tmp_path, "airflow_style", env=env)
    assert code == 0, data
    assert {t["task_id"]: t["state"] for t in data["task_instances"]} == {
        "extract": S, "double": S, "skipper": K, "join": S}

    # without the switch the file is an import error that says why
    env["SQUALL__CORE__AIRFLOW_COMPAT"] = "false"
    proc = squall(tmp_path, "dags", "list-import-errors", "-o", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    errors = json.loads(proc.stdout)
    assert len(errors) == 1 and "airflow" in errors[0]["error"]
