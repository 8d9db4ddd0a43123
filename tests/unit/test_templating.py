"""Template context, Jinja rendering of task fields, XComArg resolution."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest

from squall.common.errors import TemplateError
from squall.sdk.dag import DAG
from squall.sdk.operators.bash import BashOperator
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.operators.python import PythonOperator
from squall.sdk.templating import (
    build_context,
    ds_add,
    ds_format,
    make_jinja_env,
    render_template,
    render_template_fields,
)
from tests.unit.fake_ti import LOGICAL_DATE, FakeTI, make_context

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _noop() -> None:
    return None


def test_context_has_airflow_keys() -> None:
    with DAG("ctx", start_date=START, schedule="@daily") as dag:
        op = EmptyOperator(task_id="t")
    ti = FakeTI(op, run_id="scheduled__x", try_number=3)
    run = SimpleNamespace(run_id="scheduled__x", conf={"k": "v"})
    ctx = build_context(
        dag=dag, task=op, dag_run=run, ti=ti, logical_date=LOGICAL_DATE,
        data_interval=(LOGICAL_DATE, LOGICAL_DATE.add(days=1)), conf=None,
    )
    assert ctx["ds"] == "2024-03-05"
    assert ctx["ds_nodash"] == "20240305"
    assert ctx["ts"] == "2024-03-05T06:07:08+00:00"
    assert ctx["ts_nodash"] == "20240305T060708"
    assert ctx["ts_nodash_with_tz"] == "20240305T060708+0000"
    assert ctx["logical_date"] == LOGICAL_DATE
    assert isinstance(ctx["logical_date"], pendulum.DateTime)
    assert ctx["execution_date"] is ctx["logical_date"]
    assert ctx["data_interval_start"] == LOGICAL_DATE
    assert ctx["data_interval_end"] == LOGICAL_DATE.add(days=1)
    assert ctx["prev_data_interval_start_success"] is None
    assert ctx["run_id"] == "scheduled__x"
    assert ctx["dag"] is dag
    assert ctx["dag_run"] is run
    assert ctx["task"] is op
    assert ctx["ti"] is ti
    assert ctx["task_instance"] is ti
    assert ctx["task_instance_key_str"] == "ctx__t__20240305"
    # as in Airflow, conf is the configuration; the run's conf is dag_run.conf
    assert ctx["conf"].get("core", "default_timezone", fallback="UTC")
    assert ctx["params"]["k"] == "v"  # the run's conf (taken from dag_run when not given)
    assert type(ctx["var"]).__name__ == "VariableAccessor"  # {{ var.value.key }}
    assert ctx["test_mode"] is False
    assert ctx["try_number"] == 3
    macros = ctx["macros"]
    for name in ("ds_add", "ds_format", "datetime", "timedelta", "json", "time", "uuid",
                 "random"):
        assert hasattr(macros, name), name


def test_context_dates_are_utc_pendulum() -> None:
    op = EmptyOperator(task_id="t")
    from datetime import datetime, timedelta, timezone

    local = datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    ctx = build_context(dag=None, task=op, logical_date=local)
    assert isinstance(ctx["logical_date"], pendulum.DateTime)
    assert ctx["ds"] == "2023-12-31"
    assert ctx["data_interval_start"] == ctx["data_interval_end"] == local


def test_ds_add_and_ds_format() -> None:
    assert ds_add("2015-01-01", 5) == "2015-01-06"
    assert ds_add("2015-01-06", -5) == "2015-01-01"
    assert ds_add("2015-01-06", 0) == "2015-01-06"
    assert ds_format("2015-01-01", "%Y-%m-%d", "%m-%d-%y") == "01-01-15"
    with DAG("m", start_date=START) as dag:
        op = EmptyOperator(task_id="t")
    ctx = make_context(op)
    env = make_jinja_env(dag)
    assert render_template("{{ macros.ds_add(ds, 7) }}", ctx, env) == "2024-03-12"
    assert render_template(
        "{{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m/%Y') }}", ctx, env
    ) == "05/03/2024"
    assert render_template("{{ macros.timedelta(days=1).days }}", ctx, env) == "1"


def test_filters_and_user_macros() -> None:
    with DAG("f", start_date=START, user_defined_macros={"answer": 42},
             user_defined_filters={"shout": lambda s: s.upper() + "!"}) as dag:
        op = EmptyOperator(task_id="t")
    ctx = make_context(op)
    env = make_jinja_env(dag)
    text = "{{ logical_date | ds }} {{ logical_date | ds_nodash }} {{ logical_date | ts_nodash }}"
    assert render_template(text, ctx, env) == "2024-03-05 20240305 20240305T060708"
    assert render_template("{{ logical_date | ts }}", ctx, env) == "2024-03-05T06:07:08+00:00"
    assert render_template("{{ answer }} {{ 'hi' | shout }}", ctx, env) == "42 HI!"


def test_params_precedence() -> None:
    with DAG("p", start_date=START, params={"a": 1, "b": 1, "c": 1}) as dag:
        op = EmptyOperator(task_id="t", params={"b": 2, "c": 2})
    ctx = build_context(dag=dag, task=op, logical_date=LOGICAL_DATE, conf={"c": 3})
    assert ctx["params"] == {"a": 1, "b": 2, "c": 3}
    ctx = build_context(dag=dag, task=op, logical_date=LOGICAL_DATE)
    assert ctx["params"] == {"a": 1, "b": 2, "c": 2}
    # the DAG's params are not changed by a run's conf
    assert dag.params == {"a": 1, "b": 1, "c": 1}


def test_render_fields_in_place() -> None:
    with DAG("r", start_date=START, params={"who": "world"}):
        op = BashOperator(
            task_id="b",
            bash_command="echo {{ params.who }} {{ ds }}",
            env={"DAY": "{{ ds_nodash }}", "N": 5},  # type: ignore[dict-item]
        )
    render_template_fields(op, make_context(op))
    assert op.bash_command == "echo world 2024-03-05"
    assert op.env == {"DAY": "20240305", "N": 5}


def test_nested_and_non_string_values() -> None:
    with DAG("n", start_date=START):
        op = PythonOperator(
            task_id="p",
            python_callable=_noop,
            op_args=("{{ ds }}", 3, None, ["{{ ds_nodash }}", {"k": "{{ run_id }}"}]),
            op_kwargs={"x": {"y": ["{{ params.missing | default('d') }}"]}, "n": 1.5},
        )
    render_template_fields(op, make_context(op))
    assert op.op_args == ("2024-03-05", 3, None, ["20240305", {"k": "manual__2024-01-01"}])
    assert op.op_kwargs == {"x": {"y": ["d"]}, "n": 1.5}


def test_undefined_variable_names_task_and_field() -> None:
    with DAG("u", start_date=START):
        op = BashOperator(task_id="bad", bash_command="echo {{ no_such_thing }}")
    with pytest.raises(TemplateError) as info:
        render_template_fields(op, make_context(op))
    message = str(info.value)
    assert "task bad" in message
    assert "field bash_command" in message
    assert "no_such_thing" in message


def test_syntax_error_is_template_error() -> None:
    with DAG("s", start_date=START):
        op = BashOperator(task_id="bad", bash_command="echo {{ oops ")
    with pytest.raises(TemplateError, match="task bad field bash_command"):
        render_template_fields(op, make_context(op))


def test_template_file_from_searchpath(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo {{ ds }} {{ params.x }}")
    with DAG("tf", start_date=START, template_searchpath=str(tmp_path), params={"x": 1}):
        op = BashOperator(task_id="b", bash_command="run.sh")
        inline = BashOperator(task_id="c", bash_command="run.sh ")  # trailing space: a command
    render_template_fields(op, make_context(op))
    assert op.bash_command == "echo 2024-03-05 1"
    render_template_fields(inline, make_context(inline))
    assert inline.bash_command == "run.sh "


def test_template_file_next_to_dag_file(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "q.bash").write_text("echo {{ ds_nodash }}")
    with DAG("tf2", start_date=START) as dag:
        op = BashOperator(task_id="b", bash_command="sql/q.bash")
    dag.fileloc = str(tmp_path / "my_dag.py")
    render_template_fields(op, make_context(op))
    assert op.bash_command == "echo 20240305"


def test_missing_template_file(tmp_path: Path) -> None:
    with DAG("tf3", start_date=START, template_searchpath=[str(tmp_path)]):
        op = BashOperator(task_id="b", bash_command="nope.sh")
    with pytest.raises(TemplateError, match=r"task b field bash_command: .*nope\.sh"):
        render_template_fields(op, make_context(op))


def test_xcomarg_resolution() -> None:
    with DAG("x", start_date=START):
        up = EmptyOperator(task_id="up")
        op = PythonOperator(
            task_id="p",
            python_callable=_noop,
            op_args=[up.output, "{{ ds }}"],
            op_kwargs={"k": up.output["other"], "nested": {"l": [up.output, (up.output,)]}},
        )
    assert op.upstream_task_ids == {"up"}
    ti = FakeTI(op, xcoms={("up", "return_value"): "{{ not rendered }}", ("up", "other"): 7})
    render_template_fields(op, make_context(op, ti))
    assert op.op_args == ["{{ not rendered }}", "2024-03-05"]
    assert op.op_kwargs == {
        "k": 7, "nested": {"l": ["{{ not rendered }}", ("{{ not rendered }}",)]}
    }


def test_native_rendering() -> None:
    with DAG("nat", start_date=START, render_template_as_native_obj=True):
        op = PythonOperator(
            task_id="p",
            python_callable=_noop,
            templates_dict={"n": "{{ 1 + 2 }}", "l": "{{ [1, params.x] }}", "s": "a{{ 'b' }}"},
            params={"x": 5},
        )
    render_template_fields(op, make_context(op))
    assert op.templates_dict == {"n": 3, "l": [1, 5], "s": "ab"}

    with DAG("str", start_date=START):
        op2 = PythonOperator(task_id="p", python_callable=_noop,
                             templates_dict={"n": "{{ 1 + 2 }}"})
    render_template_fields(op2, make_context(op2))
    assert op2.templates_dict == {"n": "3"}


def test_render_template_without_env() -> None:
    assert render_template("{{ a }}-{{ b }}", {"a": 1, "b": "x"}) == "1-x"
    assert render_template(5, {}) == 5
    with pytest.raises(TemplateError, match="undefined"):
        render_template("{{ missing }}", {})
