"""BashOperator, PythonOperator, BranchPythonOperator, ShortCircuitOperator, EmptyOperator."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest

from squall.common.errors import DagDefinitionError, TaskSkipped
from squall.sdk.dag import DAG
from squall.sdk.operators.bash import BashCommandFailed, BashOperator
from squall.sdk.operators.dummy import DummyOperator
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.operators.python import (
    BranchPythonOperator,
    InvalidBranchError,
    PythonOperator,
    ShortCircuitOperator,
)
from squall.sdk.taskgroup import TaskGroup
from tests.unit.fake_ti import FakeTI, make_context, run_task

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _dag(dag_id: str = "ops") -> DAG:
    return DAG(dag_id, start_date=START, schedule=None)


# --------------------------------------------------------------------------- Empty


def test_empty_and_dummy() -> None:
    with _dag():
        e = EmptyOperator(task_id="e")
        d = DummyOperator(task_id="d")
    assert e.execute(make_context(e)) is None
    assert isinstance(d, EmptyOperator)


# --------------------------------------------------------------------------- Bash


def test_bash_last_line_returned_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with _dag():
        op = BashOperator(task_id="b", bash_command="echo first; echo oops >&2; echo last")
    with caplog.at_level(logging.INFO, logger="squall.sdk.operators.bash"):
        assert run_task(op) == "last"
    messages = [r.getMessage() for r in caplog.records]
    assert "first" in messages
    assert "oops" in messages


def test_bash_no_output_returns_none() -> None:
    with _dag():
        op = BashOperator(task_id="b", bash_command="true")
    assert run_task(op) is None


def test_bash_templated_command() -> None:
    with _dag():
        op = BashOperator(task_id="b", bash_command="echo {{ ds }} $((1 + 2))")
    assert run_task(op) == "2024-03-05 3"


def test_bash_env_replaces_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUALL_TEST_OUTER", "outer")
    with _dag():
        op = BashOperator(
            task_id="b",
            bash_command='echo "$FOO-${SQUALL_TEST_OUTER:-unset}-$AIRFLOW_CTX_TASK_ID"',
            env={"FOO": "{{ ds_nodash }}"},
        )
    assert run_task(op) == "20240305-unset-b"


def test_bash_append_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUALL_TEST_OUTER", "outer")
    with _dag():
        op = BashOperator(task_id="b", bash_command='echo "$FOO-$SQUALL_TEST_OUTER"',
                          env={"FOO": "bar"}, append_env=True)
        inherit = BashOperator(task_id="c", bash_command='echo "$SQUALL_TEST_OUTER"')
    assert run_task(op) == "bar-outer"
    assert run_task(inherit) == "outer"


def test_bash_cwd(tmp_path: Path) -> None:
    with _dag():
        op = BashOperator(task_id="b", bash_command="pwd", cwd=str(tmp_path))
        default = BashOperator(task_id="c", bash_command="pwd")
        missing = BashOperator(task_id="d", bash_command="pwd", cwd=str(tmp_path / "no"))
    assert os.path.realpath(run_task(op)) == os.path.realpath(tmp_path)
    tmp = run_task(default)
    assert "squalltmp" in tmp
    assert not os.path.exists(tmp)  # the temporary directory is removed afterwards
    with pytest.raises(BashCommandFailed, match="does not exist"):
        run_task(missing)


def test_bash_exit_99_skips() -> None:
    with _dag():
        op = BashOperator(task_id="b", bash_command="exit 99")
        custom = BashOperator(task_id="c", bash_command="exit 4", skip_on_exit_code=[3, 4])
        never = BashOperator(task_id="d", bash_command="exit 99", skip_on_exit_code=None)
    with pytest.raises(TaskSkipped, match="99"):
        run_task(op)
    with pytest.raises(TaskSkipped):
        run_task(custom)
    with pytest.raises(BashCommandFailed, match="99"):
        run_task(never)


def test_bash_failure_has_exit_code() -> None:
    with _dag():
        op = BashOperator(task_id="b", bash_command="echo x; exit 3")
    with pytest.raises(BashCommandFailed, match="exit code 3") as info:
        run_task(op)
    assert info.value.exit_code == 3


def test_bash_on_kill_kills_process_group() -> None:
    with _dag():
        op = BashOperator(task_id="b", bash_command="sleep 30 & sleep 30; echo done")
    context = make_context(op)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            op.execute(context)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    started = time.monotonic()
    thread.start()
    while op._process is None and time.monotonic() - started < 5:
        time.sleep(0.01)
    time.sleep(0.1)
    op.on_kill()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 10
    assert errors and isinstance(errors[0], BashCommandFailed)


def test_bash_command_must_be_string() -> None:
    with _dag(), pytest.raises(DagDefinitionError, match="bash_command"):
        BashOperator(task_id="b", bash_command=["ls"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Python


def test_python_op_args_and_op_kwargs() -> None:
    def f(a: int, b: int, c: int = 0) -> tuple[int, int, int]:
        return a, b, c

    with _dag():
        op = PythonOperator(task_id="p", python_callable=f, op_args=[1, 2], op_kwargs={"c": 3})
    assert run_task(op) == (1, 2, 3)


def test_python_context_by_name() -> None:
    seen: dict[str, Any] = {}

    def f(ds: str, ti: Any, params: dict[str, Any], x: int) -> str:
        seen.update(ds=ds, ti=ti, params=params, x=x)
        return ds

    with _dag():
        op = PythonOperator(task_id="p", python_callable=f, op_kwargs={"x": 1},
                            params={"p": 1})
    ti = FakeTI(op)
    assert run_task(op, ti) == "2024-03-05"
    assert seen == {"ds": "2024-03-05", "ti": ti, "params": {"p": 1}, "x": 1}


def test_python_star_star_context() -> None:
    def f(a: int, **context: Any) -> dict[str, Any]:
        return context

    with _dag():
        op = PythonOperator(task_id="p", python_callable=f, op_args=[1],
                            op_kwargs={"extra": "{{ ds }}"})
    context = run_task(op)
    assert context["ds"] == "2024-03-05"
    assert context["extra"] == "2024-03-05"
    assert context["templates_dict"] is None
    assert "ti" in context
    assert "a" not in context


def test_python_op_kwargs_override_context_and_positional_wins() -> None:
    def f(ds: str, run_id: str) -> tuple[str, str]:
        return ds, run_id

    with _dag():
        op = PythonOperator(task_id="p", python_callable=f, op_args=["positional"],
                            op_kwargs={"run_id": "mine"})
    assert run_task(op) == ("positional", "mine")


def test_python_templates_dict() -> None:
    def f(templates_dict: dict[str, Any]) -> Any:
        return templates_dict["day"]

    with _dag():
        op = PythonOperator(task_id="p", python_callable=f,
                            templates_dict={"day": "{{ ds_nodash }}"})
    assert run_task(op) == "20240305"


def test_python_templates_exts(tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_text("select '{{ ds }}'")

    def f(templates_dict: dict[str, Any]) -> Any:
        return templates_dict["query"]

    with DAG("ext", start_date=START, template_searchpath=str(tmp_path)):
        op = PythonOperator(task_id="p", python_callable=f, templates_dict={"query": "q.sql"},
                            templates_exts=[".sql"])
    assert run_task(op) == "select '2024-03-05'"


def test_python_callable_must_be_callable() -> None:
    with _dag(), pytest.raises(DagDefinitionError, match="python_callable"):
        PythonOperator(task_id="p", python_callable="nope")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Branch


def _branch_dag(result: Any) -> tuple[DAG, BranchPythonOperator]:
    with _dag("branching") as dag:
        branch = BranchPythonOperator(task_id="branch", python_callable=lambda: result)
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
        c = EmptyOperator(task_id="c")
        with TaskGroup("g") as g:
            x = EmptyOperator(task_id="x")
            y = EmptyOperator(task_id="y")
            x >> y
        join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
        branch >> [a, b, c, g, join]
        a >> join
    return dag, branch


@pytest.mark.parametrize(
    ("result", "skipped"),
    [
        ("a", ["b", "c", "g.x"]),  # join is downstream of a: kept
        (["b", "c"], ["a", "g.x", "join"]),
        (("a", "b"), ["c", "g.x"]),
        ("g", ["a", "b", "c", "join"]),  # a task group id stands for its root tasks
        ("g.x", ["a", "b", "c", "join"]),
        (None, ["a", "b", "c", "g.x", "join"]),
        ([], ["a", "b", "c", "g.x", "join"]),
    ],
)
def test_branch_skips_other_direct_downstream(result: Any, skipped: list[str]) -> None:
    _, branch = _branch_dag(result)
    ti = FakeTI(branch)
    assert run_task(branch, ti) == result
    assert sorted(ti.skipped) == skipped


def test_branch_invalid_id_is_clear_error() -> None:
    _, branch = _branch_dag(["a", "nope"])
    ti = FakeTI(branch)
    with pytest.raises(InvalidBranchError) as info:
        run_task(branch, ti)
    assert "'nope'" in str(info.value)
    assert "task branch" in str(info.value)
    assert "a, b, c, g.x, join" in str(info.value)
    assert ti.skipped == []


def test_branch_wrong_type_is_clear_error() -> None:
    _, branch = _branch_dag(5)
    with pytest.raises(InvalidBranchError, match="int"):
        run_task(branch)


# --------------------------------------------------------------------------- ShortCircuit


def _short_circuit_dag(value: Any, **kwargs: Any) -> ShortCircuitOperator:
    with _dag("sc"):
        sc = ShortCircuitOperator(task_id="sc", python_callable=lambda: value, **kwargs)
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
        c = EmptyOperator(task_id="c")
        sc >> a >> b
        sc >> c
    return sc


def test_short_circuit_true_skips_nothing() -> None:
    sc = _short_circuit_dag("yes")
    ti = FakeTI(sc)
    assert run_task(sc, ti) == "yes"
    assert ti.skipped == []


def test_short_circuit_false_skips_everything_downstream() -> None:
    sc = _short_circuit_dag(0)
    ti = FakeTI(sc)
    assert run_task(sc, ti) == 0
    assert sorted(ti.skipped) == ["a", "b", "c"]


def test_short_circuit_respecting_trigger_rules_skips_direct_only() -> None:
    sc = _short_circuit_dag([], ignore_downstream_trigger_rules=False)
    ti = FakeTI(sc)
    assert run_task(sc, ti) == []
    assert sorted(ti.skipped) == ["a", "c"]
