"""The authoring side of dynamic task mapping (squall.sdk.mapping): what expand / partial /
expand_kwargs build, how one map index is resolved (cross product, dicts, map, zip), and
Airflow's errors for bad use, each a one-line DagDefinitionError."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from squall.common.errors import DagDefinitionError, UnmappableXComError
from squall.execution.mapped import check_mappable_result
from squall.sdk.dag import DAG
from squall.sdk.decorators import task
from squall.sdk.mapping import MappedOperator
from squall.sdk.operators.bash import BashOperator
from squall.sdk.operators.python import PythonOperator
from tests.unit.fake_ti import FakeTI

START = datetime(2024, 1, 1, tzinfo=UTC)


def _dag() -> DAG:
    return DAG("m", schedule=None, start_date=START)


def _unmapped(op: MappedOperator, index: int, xcoms: dict[tuple[str, str], Any] | None = None
              ) -> Any:
    ti = FakeTI(op, xcoms=xcoms)
    ti.map_index = index
    return op.unmap({"ti": ti}, index)


def test_operator_partial_expand_builds_one_operator_per_index() -> None:
    with _dag() as dag:
        op = BashOperator.partial(task_id="b", retries=2, env={"A": "1"}).expand(
            bash_command=["echo 1", "echo 2"])
    assert isinstance(op, MappedOperator) and dag.task_dict["b"] is op
    assert (op.retries, op.operator_name) == (2, "BashOperator")
    one = _unmapped(op, 1)
    assert isinstance(one, BashOperator)
    assert (one.task_id, one.bash_command, one.env, one.retries) == ("b", "echo 2", {"A": "1"},
                                                                      2)
    assert one.dag is dag and "b" in dag.task_dict and dag.task_dict["b"] is op


def test_default_args_reach_the_mapped_task_and_its_instances() -> None:
    with DAG("d", schedule=None, start_date=START, default_args={"retries": 4}):
        op = BashOperator.partial(task_id="b").expand(bash_command=["x"])
    assert op.retries == 4 and _unmapped(op, 0).retries == 4


def test_cross_product_last_argument_fastest_and_dict_items() -> None:
    with _dag():
        @task
        def f(x: int, y: str) -> str:
            return f"{x}{y}"

        cross = f.expand(x=[1, 2], y=["a", "b", "c"]).operator
        pairs = f.expand(x={"k": 1, "l": 2}, y=["z"]).operator
    assert isinstance(cross, MappedOperator) and isinstance(pairs, MappedOperator)
    got = [_unmapped(cross, i).op_kwargs for i in range(6)]
    assert [(k["x"], k["y"]) for k in got] == [(1, "a"), (1, "b"), (1, "c"), (2, "a"),
                                               (2, "b"), (2, "c")]
    assert _unmapped(pairs, 1).op_kwargs == {"x": ("l", 2), "y": "z"}


def test_partial_arguments_and_upstream_values() -> None:
    with _dag():
        @task
        def numbers() -> list[int]:
            return [5, 6, 7]

        @task
        def add(x: int, inc: int) -> int:
            return x + inc

        src = numbers()
        mapped = add.partial(inc=1).expand(x=src).operator
        doubled = add.partial(inc=0).expand(x=src.map(lambda n: n * 2)).operator
        zipped = add.partial(inc=0).expand(x=src.zip(src.map(str), fillvalue=None)).operator
    xcoms = {("numbers", "return_value"): [5, 6, 7]}
    assert mapped.upstream_task_ids == {"numbers"}
    assert _unmapped(mapped, 2, xcoms).op_kwargs == {"inc": 1, "x": 7}
    assert _unmapped(doubled, 1, xcoms).op_kwargs["x"] == 12
    assert _unmapped(zipped, 0, xcoms).op_kwargs["x"] == (5, "5")
    assert mapped.mapped_spec == {"type": "dict", "args": [
        ["x", {"type": "xcom", "task_id": "numbers", "key": "return_value"}]]}
    assert zipped.mapped_spec["args"][0][1]["type"] == "zip"


def test_expand_kwargs_literal_and_upstream() -> None:
    with _dag():
        @task
        def power(base: int, exp: int) -> int:
            return int(base ** exp)

        literal = power.expand_kwargs([{"base": 2, "exp": 3}]).operator
        op = PythonOperator.partial(task_id="p", python_callable=print).expand_kwargs(
            [{"op_args": [1]}, {"op_args": [2]}])
    assert _unmapped(literal, 0).op_kwargs == {"base": 2, "exp": 3}
    assert _unmapped(op, 1).op_args == [2]
    assert literal.mapped_spec == {"type": "list", "value": {"type": "literal", "length": 1}}


@pytest.mark.parametrize(("build", "message"), [
    (lambda: BashOperator.partial(task_id="b").expand(bash_command="echo"),
     "BashOperator.expand() got an unexpected type 'str' for keyword argument bash_command"),
    (lambda: BashOperator.partial(task_id="b").expand(task_id=["x"]),
     "unexpected keyword argument 'task_id' (unmappable or already specified)"),
    (lambda: BashOperator.partial(task_id="b").expand(no_such=["x"]),
     "BashOperator.expand() got an unexpected keyword argument 'no_such'"),
    (lambda: BashOperator.partial(task_id="b", nope=1),
     "BashOperator.partial() got an unexpected keyword argument 'nope'"),
    (lambda: BashOperator.partial(bash_command="x"),
     "partial() missing required argument: 'task_id'"),
    (lambda: BashOperator.partial(task_id="b").expand(),
     "no arguments to expand against"),
    (lambda: BashOperator.partial(task_id="b").expand_kwargs({"bash_command": "x"}),
     "expected XComArg or list[dict], not dict"),
    (lambda: BashOperator.partial(task_id="b").expand(bash_command=("a", "b")),
     "unexpected type 'tuple'"),
])
def test_operator_mapping_errors(build: Any, message: str) -> None:
    with _dag(), pytest.raises(DagDefinitionError) as err:
        build()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_taskflow_mapping_errors() -> None:
    with _dag():
        @task(multiple_outputs=True)
        def pair() -> dict[str, int]:
            return {"a": 1}

        @task
        def f(x: int, ti: Any = None) -> int:
            return x

        with pytest.raises(DagDefinitionError, match="context variable"):
            f.expand(ti=[1])
        with pytest.raises(DagDefinitionError, match="unexpected keyword argument 'y'"):
            f.expand(y=[1])
        with pytest.raises(DagDefinitionError, match="unexpected type 'int'"):
            f.expand(x=1)
        with pytest.raises(DagDefinitionError, match="custom key 'a'"):
            f.expand(x=pair()["a"])
        with pytest.raises(DagDefinitionError, match="must be expanded"):
            f.partial(x=1)()
        # an operator argument the task does not take stops the DAG file, as it does for an
        # unmapped task, instead of failing each instance when a worker builds it
        with pytest.raises(DagDefinitionError,
                           match=r"unexpected argument\(s\) map_index_template"):
            f.override(map_index_template="{{ x }}").expand(x=[1])


def test_an_unmappable_return_value_fails_the_upstream() -> None:
    with _dag():
        @task
        def src() -> list[int]:
            return []

        @task
        def each(x: int) -> int:
            return x

        upstream = src()
        mapped = each.expand(x=upstream)
        each.expand(x=mapped)
        lonely = src()
    op = upstream.operator
    # an instance of a mapped task: its values are counted, whatever each one is
    check_mappable_result(_unmapped(mapped.operator, 0, {("src", "return_value"): [1]}), 5)
    check_mappable_result(op, [1, 2])
    check_mappable_result(op, {"a": 1})
    check_mappable_result(lonely.operator, 5)  # nothing is mapped over it
    with pytest.raises(UnmappableXComError, match="unmappable return type 'int'"):
        check_mappable_result(op, 5)
    with pytest.raises(UnmappableXComError, match="did not push XCom for task mapping"):
        check_mappable_result(op, None)
    with pytest.raises(UnmappableXComError, match="length: 1025 > 1024"):
        check_mappable_result(op, list(range(1025)))


def test_a_mapped_task_group_maps_its_tasks() -> None:
    from squall.sdk.decorators import task_group
    from squall.sdk.mapped_group import MappedArgument

    with _dag() as dag:
        @task
        def numbers() -> list[int]:
            return [1, 2]

        @task
        def double(v: int) -> int:
            return v * 2

        @task_group
        def group(x: int, y: int) -> Any:
            assert isinstance(x, MappedArgument)
            return double(double(x))

        group.partial(y=1).expand(x=numbers())
        with pytest.raises(DagDefinitionError, match="unexpected type 'int'"):
            group.expand(x=1)
        with pytest.raises(DagDefinitionError, match="must be expanded"):
            group.partial(y=1)(x=1)
    first, second = dag.task_dict["group.double"], dag.task_dict["group.double__1"]
    spec = {"type": "dict", "group": "group",
            "args": [["x", {"type": "xcom", "task_id": "numbers", "key": "return_value"}]]}
    assert getattr(first, "mapped_spec", None) == spec == getattr(second, "mapped_spec", None)
    # the group's root waits for the input; the second task for the first only
    assert first.upstream_task_ids == {"numbers"}
    assert second.upstream_task_ids == {"group.double"}
    ti = FakeTI(first, xcoms={("numbers", "return_value"): [5, 6]})
    ti.map_index = 1
    context = {"ti": ti, "task": first}
    assert first.op_args[0].resolve(context) == 6


def test_run_if_on_a_mapped_task_reaches_each_instance() -> None:
    """``@task.run_if`` on a mapped ``@task``: every instance checks the condition before it
    runs (Airflow's ``run_if`` wraps the operator's ``pre_execute``, mapped or not)."""
    from squall.common.errors import TaskSkipped

    with _dag() as dag:
        @task.run_if(lambda context: context["ti"].map_index != 1, skip_message="not 1")
        @task
        def f(x: int) -> int:
            return x

        f.expand(x=[10, 20, 30])
    op = dag.task_dict["f"]
    assert isinstance(op, MappedOperator) and op.conditions
    first, second = _unmapped(op, 0), _unmapped(op, 1)
    ti = FakeTI(op)
    ti.map_index = 0
    first.pre_execute({"ti": ti})  # the condition holds: nothing raised
    ti.map_index = 1
    with pytest.raises(TaskSkipped, match="not 1"):
        second.pre_execute({"ti": ti})
