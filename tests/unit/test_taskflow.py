"""TaskFlow: @task and its variants."""

from __future__ import annotations

from typing import Any

import pendulum
import pytest

from squall import DAG, XComArg, dag, task, task_group
from squall.common.errors import DagDefinitionError, TaskSkipped
from squall.sdk.operators.base import BaseOperator
from squall.sdk.operators.python import PythonOperator
from squall.sdk.sensors.base import PokeReturnValue
from squall.sdk.taskgroup import TaskGroup
from tests.unit.fake_ti import FakeTI, run_task

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _dag(dag_id: str = "tf", **kwargs: Any) -> DAG:
    return DAG(dag_id, start_date=START, schedule=None, **kwargs)


def _op(arg: XComArg) -> BaseOperator:
    return arg.operator


def test_decorator_forms() -> None:
    @task
    def bare() -> int:
        return 1

    @task()
    def called() -> int:
        return 2

    @task.python(task_id="named", retries=3)
    def named() -> int:
        return 3

    with _dag() as d:
        a, b, c = bare(), called(), named()
    assert d.task_ids == ["bare", "called", "named"]
    assert isinstance(_op(a), PythonOperator)
    assert _op(c).retries == 3
    assert bare.function() == 1  # the undecorated function stays reachable
    assert bare.__name__ == "bare"
    assert isinstance(a, XComArg) and isinstance(b, XComArg)


def test_dependencies_from_xcomargs() -> None:
    @task
    def extract() -> dict[str, int]:
        return {"a": 1, "b": 2}

    @task
    def transform(value: int, other: Any = None) -> int:
        return value * 2

    @task
    def load(values: list[int], mapping: dict[str, Any]) -> None:
        return None

    with _dag() as d:
        data = extract()
        t1 = transform(data["a"])
        t2 = transform(1, other=data)
        load([t1, 3], {"x": t2})
    assert d.task_dict["transform"].upstream_task_ids == {"extract"}
    assert d.task_dict["transform__1"].upstream_task_ids == {"extract"}
    assert d.task_dict["load"].upstream_task_ids == {"transform", "transform__1"}
    assert data["a"].key == "a"
    assert d.task_dict["extract"].downstream_task_ids == {"transform", "transform__1"}


def test_xcomarg_with_shift_operators() -> None:
    @task
    def one() -> int:
        return 1

    @task
    def two() -> int:
        return 2

    with _dag() as d:
        one() >> two()
    assert d.task_dict["two"].upstream_task_ids == {"one"}


def test_task_id_dedup() -> None:
    @task
    def step() -> None:
        return None

    with _dag() as d:
        step()
        step()
        step()
        with TaskGroup("g"):
            step()
            step()
        step.override(task_id="step__1")()
    assert sorted(d.task_ids) == [
        "g.step", "g.step__1", "step", "step__1", "step__2", "step__3"
    ]


def test_execution_passes_values_and_context() -> None:
    @task
    def add(a: int, b: int, ds: str | None = None, **context: Any) -> str:
        assert "ti" in context
        return f"{a + b} {ds}"

    with _dag() as d:
        add(XComArg(_placeholder(d)), b=2)
    op = d.task_dict["add"]
    ti = FakeTI(op, xcoms={("src", "return_value"): 40})
    assert run_task(op, ti) == "42 2024-03-05"


def _placeholder(d: DAG) -> BaseOperator:
    from squall.sdk.operators.empty import EmptyOperator

    return EmptyOperator(task_id="src", dag=d)


def test_multiple_outputs_pushes_each_key() -> None:
    @task(multiple_outputs=True)
    def explicit() -> Any:
        return {"a": 1, "b": [2]}

    @task
    def inferred() -> dict[str, int]:
        return {"c": 3}

    @task
    def plain() -> int:
        return 4

    with _dag() as d:
        explicit()
        inferred()
        plain()
    assert d.task_dict["explicit"].multiple_outputs
    assert d.task_dict["inferred"].multiple_outputs
    assert not d.task_dict["plain"].multiple_outputs

    ti = FakeTI(d.task_dict["explicit"])
    assert run_task(d.task_dict["explicit"], ti) == {"a": 1, "b": [2]}
    assert ti.xcoms == {("explicit", "a"): 1, ("explicit", "b"): [2]}
    ti = FakeTI(d.task_dict["plain"])
    assert run_task(d.task_dict["plain"], ti) == 4
    assert ti.xcoms == {}


def test_multiple_outputs_needs_a_dict() -> None:
    @task(multiple_outputs=True)
    def bad() -> Any:
        return [1]

    with _dag() as d:
        bad()
    with pytest.raises(TypeError, match="dict"):
        run_task(d.task_dict["bad"])


def test_override() -> None:
    @task(retries=1)
    def work() -> None:
        return None

    with _dag() as d:
        work()
        work.override(task_id="other", retries=5, queue="q")()
    assert d.task_dict["work"].retries == 1
    assert d.task_dict["other"].retries == 5
    assert d.task_dict["other"].queue == "q"
    assert d.task_dict["work"].queue is None  # the deployment default queue


def test_default_args_apply_to_decorated_tasks() -> None:
    @task
    def work() -> None:
        return None

    with _dag(default_args={"retries": 4, "owner": "me"}) as d:
        work()
        work.override(retries=0)()
    assert d.task_dict["work"].retries == 4
    assert d.task_dict["work"].owner == "me"
    assert d.task_dict["work__1"].retries == 0


def test_bad_arguments_fail_at_definition() -> None:
    @task
    def takes_one(x: int) -> int:
        return x

    with _dag(), pytest.raises(DagDefinitionError, match="takes_one"):
        takes_one(1, 2)


def test_task_branch() -> None:
    @task.branch
    def choose(which: str) -> str:
        return which

    @task
    def left() -> None:
        return None

    @task
    def right() -> None:
        return None

    with _dag() as d:
        choose("right") >> [left(), right()]
    op = d.task_dict["choose"]
    ti = FakeTI(op)
    assert run_task(op, ti) == "right"
    assert ti.skipped == ["left"]


def test_task_short_circuit() -> None:
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def gate() -> bool:
        return False

    @task
    def after() -> None:
        return None

    @task
    def later() -> None:
        return None

    with _dag() as d:
        gate() >> after() >> later()
    ti = FakeTI(d.task_dict["gate"])
    assert run_task(d.task_dict["gate"], ti) is False
    assert ti.skipped == ["after"]


def test_task_sensor() -> None:
    @task.sensor(poke_interval=1, timeout=5, mode="reschedule")
    def ready(n: int) -> PokeReturnValue:
        return PokeReturnValue(True, xcom_value=n)

    with _dag() as d:
        ready(7)
    op = d.task_dict["ready"]
    assert op.mode == "reschedule"  # type: ignore[attr-defined]
    assert run_task(op) == 7


def test_task_bash() -> None:
    @task.bash
    def hello(name: str) -> str:
        return f"echo hello {name} {{{{ ds }}}}"

    @task.bash(skip_on_exit_code=5)
    def skipper() -> str:
        return "exit 5"

    with _dag() as d:
        hello("you")
        skipper()
    assert run_task(d.task_dict["hello"]) == "hello you 2024-03-05"
    with pytest.raises(TaskSkipped):
        run_task(d.task_dict["skipper"])


def test_dag_decorator_with_taskflow_and_groups() -> None:
    @task
    def emit(value: int) -> int:
        return value

    @task_group
    def section(value: Any) -> Any:
        return emit(value)

    @dag(start_date=START, schedule=None, params={"x": 0})
    def pipeline(limit: int = 3) -> None:
        first = emit(1)
        section(first)

    d = pipeline()
    assert d.dag_id == "pipeline"
    assert d.params == {"x": 0, "limit": 3}
    assert sorted(d.task_ids) == ["emit", "section.emit"]
    assert d.task_dict["section.emit"].upstream_task_ids == {"emit"}
    assert pipeline(limit=9).params["limit"] == 9
