"""Params (squall/sdk/params.py) as Airflow 2.10's ``airflow/models/param.py``: Param's
JSON-schema validation, ParamsDict, DAG and task params, validation at DAG import and at
run creation, the try's params, and serialization with the schemas."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from squall.common.errors import (
    BackfillError,
    DagDefinitionError,
    ParamValidationError,
    SquallError,
)
from squall.dag_processing.serialization import deserialize_dag, serialize_dag
from squall.sdk.dag import DAG, dag
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.params import (
    NOTSET,
    DagParam,
    InvalidParams,
    Param,
    ParamsDict,
    params_for_run,
    process_params,
    try_params,
)
from squall.sdk.templating import build_context, render_template_fields

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("param", "value", "error"), [
    (Param(1, type="integer"), "x", "'x' is not of type 'integer'"),
    (Param(1, type="integer", minimum=1, maximum=3), 0, "0 is less than the minimum of 1"),
    (Param(1, type="integer", minimum=1, maximum=3), 4, "4 is greater than the maximum of 3"),
    (Param("a", enum=["a", "b"]), "c", "'c' is not one of ['a', 'b']"),
    (Param("a", type="string", minLength=2), "a", "'a' is too short"),
    (Param(None, type=["null", "integer"]), "x", "'x' is not of type 'null', 'integer'"),
    (Param("x", const="x"), "y", "'x' was expected"),
    (Param("2024-01-01", type="string", format="date"), "2024-13-01",
     "'2024-13-01' is not a 'date'"),
    (Param("2024-01-01T00:00:00Z", type="string", format="date-time"), "tomorrow",
     "'tomorrow' is not a 'date-time'"),
    (Param("a@b.c", type="string", format="email"), "nope", "'nope' is not a 'email'"),
    (Param(type="string"), NOTSET, "No value passed and Param has no default value"),
])
def test_a_param_refuses_what_its_schema_refuses(param: Param, value: Any, error: str) -> None:
    with pytest.raises(ParamValidationError) as raised:
        param.resolve(value)
    assert str(raised.value) == error
    assert param.resolve(value, suppress_exception=True) is None


def test_a_param_takes_what_its_schema_allows() -> None:
    assert Param(None, type=["null", "integer"]).resolve() is None
    assert Param(None, type=["null", "integer"]).resolve(3) == 3
    assert Param(5).resolve() == 5  # no schema: anything
    assert Param(schema={"type": "object"}, default={}).resolve({"a": 1}) == {"a": 1}
    checked = Param("2024-01-01T10:00:00+02:00", type="string", format="date-time")
    assert checked.resolve() == "2024-01-01T10:00:00+02:00"
    # Airflow accepts an ISO 8601 date-time that is not RFC 3339, with a deprecation warning
    with pytest.warns(DeprecationWarning, match="non-RFC3339"):
        assert checked.resolve("2024-01-01 10:00") == "2024-01-01 10:00"
    assert Param(1, "the number", type="integer").dump() == {
        "__class": "squall.sdk.params.Param", "value": 1, "description": "the number",
        "schema": {"type": "integer"}}
    assert Param(type="string").dump()["value"] is None


def test_params_dict_validates_on_set_and_on_get() -> None:
    params = ParamsDict({"n": Param(1, type="integer"), "plain": "x"})
    assert params["n"] == 1 and params["plain"] == "x"
    assert isinstance(params.get_param("plain"), Param)
    params["n"] = 3
    assert params["n"] == 3
    with pytest.raises(ParamValidationError, match="Invalid input for param n: 'x' is not"):
        params["n"] = "x"
    params["new"] = [1]
    assert params.validate() == {"n": 3, "plain": "x", "new": [1]}
    assert params == {"n": 3, "plain": "x", "new": [1]}
    params["n"] = Param("y", type="integer")  # a Param replaces, unchecked
    with pytest.raises(ParamValidationError, match=r"^Invalid input for param n: 'y' is not"):
        params.validate()
    assert params.dump() == {"n": None, "plain": "x", "new": [1]}
    quiet = ParamsDict({"n": Param("y", type="integer")}, suppress_exception=True)
    assert quiet.validate() == {"n": None}
    deep = copy.deepcopy(params)
    deep["plain"] = "changed"
    assert params["plain"] == "x"


def test_a_dag_that_can_be_scheduled_must_have_valid_params() -> None:
    """Airflow's ``DAG.validate_schedule_and_params``: only when the timetable can be
    scheduled; a DAG with ``schedule=None`` may have required params."""
    with pytest.raises(DagDefinitionError, match=(
            r"DAG d: DAG is not allowed to define a Schedule.*Invalid input for param "
            r"n: 'x' is not of type 'integer'")):
        DAG("d", schedule="@daily", start_date=START, params={"n": Param("x", type="integer")})
    with pytest.raises(DagDefinitionError, match="No value passed"):
        DAG("d", schedule="@daily", start_date=START, params={"n": Param(type="integer")})
    manual = DAG("d", schedule=None, start_date=START, params={"n": Param(type="integer")})
    assert isinstance(manual.params, ParamsDict) and "n" in manual.params


def test_task_params_are_the_dags_updated_with_the_tasks() -> None:
    """Airflow's ``get_merged_defaults``: the DAG's params (default_args' included), then
    the task's, then the task's own default_args' params; each validated as it is set."""
    with DAG("d", schedule=None, start_date=START,
             params={"n": Param(1, type="integer"), "a": "dag"},
             default_args={"params": {"b": "default_args"}}) as d:
        t = EmptyOperator(task_id="t", params={"a": "task", "n": 2},
                          default_args={"params": {"c": 3}})
        with pytest.raises(ParamValidationError, match="param n"):
            EmptyOperator(task_id="bad", params={"n": "x"})
    assert d.params.validate() == {"n": 1, "a": "dag", "b": "default_args"}
    assert "params" not in d.default_args
    assert t.params.validate() == {"n": 2, "a": "task", "b": "default_args", "c": 3}
    assert t.params.get_param("n").schema == {"type": "integer"}
    assert d.params["n"] == 1  # the task's copy is its own


def test_the_dag_decorators_arguments_are_validated_against_params() -> None:
    @dag(schedule=None, start_date=START, params={"n": Param(1, type="integer")})
    def pipeline(n: Any = 4, other: str = "o") -> None:
        EmptyOperator(task_id="t")

    built = pipeline()
    assert built.params.validate() == {"n": 4, "other": "o"}
    assert built.params.get_param("n").schema == {"type": "integer"}
    with pytest.raises(DagDefinitionError, match="param n: 'x' is not of type"):
        pipeline(n="x")


def test_a_runs_params_are_validated_with_its_conf() -> None:
    params = ParamsDict({"n": Param(1, type="integer"), "must": Param(type="string")})
    assert params_for_run(params, {"must": "ok", "extra": 1}) == {
        "n": 1, "must": "ok", "extra": 1}
    with pytest.raises(ParamValidationError, match="param must: No value passed"):
        params_for_run(params, None)
    with pytest.raises(ParamValidationError, match="param n: 'x' is not"):
        params_for_run(params, {"must": "ok", "n": "x"})
    assert params.get_param("n").value == 1  # the DAG's own params are not changed


def test_the_trys_params_and_conf_overrides() -> None:
    dag_params = ParamsDict({"n": Param(1, type="integer"), "a": "dag"})
    task_params = ParamsDict({"a": "task"})
    assert process_params(dag_params, task_params, {"n": 5, "x": 1}, conf_overrides=True) == {
        "n": 5, "a": "task", "x": 1}
    assert process_params(dag_params, task_params, {"n": 5}, conf_overrides=False) == {
        "n": 1, "a": "task"}
    bad = try_params(dag_params, task_params, {"n": "x"}, conf_overrides=True)
    # the values that did validate (the refused conf value leaves the default)
    assert isinstance(bad, InvalidParams) and bad == {"n": 1, "a": "task"}
    assert "param n" in str(bad.error)


def test_params_in_the_context_and_templates_and_a_bad_one_fails_the_try() -> None:
    with DAG("d", schedule=None, start_date=START,
             params={"n": Param(1, type="integer")}) as d:
        t = EmptyOperator(task_id="t", params={"who": "task"})
    t.template_fields = ("doc_md",)
    t.doc_md = "{{ params.n }} {{ params.who }}"
    ctx = build_context(dag=d, task=t, logical_date=START, conf={"n": 3})
    assert ctx["params"] == {"n": 3, "who": "task"} and type(ctx["params"]) is dict
    render_template_fields(t, ctx)
    assert t.doc_md == "3 task"
    d.conf_overrides_params = False
    assert build_context(dag=d, task=t, logical_date=START, conf={"n": 3})["params"]["n"] == 1
    d.conf_overrides_params = True
    ctx = build_context(dag=d, task=t, logical_date=START, conf={"n": "x"})
    with pytest.raises(ParamValidationError, match="param n"):
        render_template_fields(t, ctx)


def test_params_survive_serialization_with_their_schemas() -> None:
    with DAG("d", schedule=None, start_date=START, params={
            "n": Param(1, "how many", type="integer", minimum=1, title="N"),
            "must": Param(type="string"), "plain": {"a": [1]}}) as d:
        EmptyOperator(task_id="t", params={"who": "task"})
    data = serialize_dag(d)
    assert data["dag"]["params"]["must"] == {
        "__class": "squall.sdk.params.Param", "description": None,
        "schema": {"type": "string"}}  # no default: none serialized
    back = deserialize_dag(data)
    n = back.params.get_param("n")
    assert (n.value, n.description, n.schema) == (1, "how many",
                                                  {"type": "integer", "minimum": 1, "title": "N"})
    assert back.params.get_param("must").value is NOTSET
    assert back.params["plain"] == {"a": [1]}
    task_params = back.get_task("t").params
    assert task_params.get_param("n").schema["minimum"] == 1 and task_params["who"] == "task"
    with pytest.raises(ParamValidationError, match="param n"):
        params_for_run(back.params, {"n": 0, "must": "x"})
    # a DAG serialized before params had schemas: plain values
    data["dag"]["params"] = {"old": 3}
    assert deserialize_dag(data).params.validate() == {"old": 3}


def test_dag_params_resolve_from_the_conf_then_the_default_then_params() -> None:
    """Airflow's ``DagParam.resolve``: ``dag_run.conf[name]``, else its default, else
    ``params[name]``; what ``@dag`` passes its function for each argument."""
    seen: dict[str, Any] = {}

    @dag(schedule=None, start_date=START)
    def pipeline(rows: Any = 3) -> None:
        seen["rows"] = rows
        EmptyOperator(task_id="t", doc_md=rows)

    built = pipeline()
    assert isinstance(seen["rows"], DagParam) and built.params["rows"] == 3
    run = SimpleNamespace(conf={"rows": 8})
    assert seen["rows"].resolve({"dag_run": run, "params": {}}) == 8
    assert seen["rows"].resolve({"dag_run": SimpleNamespace(conf={}), "params": {}}) == 3
    bare = built.param("other")
    assert bare.resolve({"dag_run": None, "params": {"other": "p"}}) == "p"
    with pytest.raises(SquallError, match="No value could be resolved for parameter other"):
        bare.resolve({"dag_run": None, "params": {}})
    task = built.get_task("t")
    task.template_fields = ("doc_md",)
    dag_run = SimpleNamespace(conf={"rows": 5}, logical_date=START, run_id="r",
                              data_interval_start=START, data_interval_end=START,
                              external_trigger=True)
    render_template_fields(task, build_context(dag=built, task=task, dag_run=dag_run))
    assert task.doc_md == 5  # resolved, not rendered


def test_a_backfills_conf_is_validated_against_the_params() -> None:
    """Airflow's backfill creates its runs with ``DAG.create_dagrun``, which validates the
    params updated with the conf; Squall refuses the backfill when it is asked for."""
    from squall.runs.backfill import BackfillOptions

    d = DAG("b", schedule="@daily", start_date=START, params={"n": Param(1, type="integer")})
    session: Any = None  # no pool to look up
    BackfillOptions(from_date=START, to_date=START, conf={"n": 2}).check(session, d)
    with pytest.raises(BackfillError, match="Invalid input for param n: 'x' is not of type"):
        BackfillOptions(from_date=START, to_date=START, conf={"n": "x"}).check(session, d)
