"""The DAG authoring API: DAGs, default_args, dependencies, task groups, validation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
import pytest

from squall import (
    DAG,
    BaseOperator,
    EmptyOperator,
    TaskGroup,
    TriggerRule,
    chain,
    cross_downstream,
    dag,
    task_group,
)
from squall.common.errors import CycleError, DagDefinitionError, DuplicateTaskIdError

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _dag(dag_id: str = "api", **kwargs: Any) -> DAG:
    kwargs.setdefault("schedule", None)
    return DAG(dag_id, start_date=START, **kwargs)


def _ups(d: DAG) -> dict[str, set[str]]:
    return {tid: t.upstream_task_ids for tid, t in d.task_dict.items() if t.upstream_task_ids}


# --------------------------------------------------------------------------- DAG forms


def test_context_manager_and_dag_argument() -> None:
    with _dag("cm") as d:
        a = EmptyOperator(task_id="a")
    other = _dag("explicit")
    b = EmptyOperator(task_id="b", dag=other)
    loose = EmptyOperator(task_id="loose")
    assert a.dag is d and d.task_ids == ["a"]
    assert b.dag is other and other.task_ids == ["b"]
    assert loose.dag is None
    assert a.start_date == START


def test_task_without_dag_joins_through_dependency() -> None:
    with _dag() as d:
        a = EmptyOperator(task_id="a")
    loose = EmptyOperator(task_id="loose")
    a >> loose
    assert loose.dag is d
    assert "loose" in d.task_dict


def test_dag_decorator_params() -> None:
    @dag(schedule="@daily", start_date=START, params={"fixed": 1}, tags=["x"])
    def my_pipeline(size: int = 10, name: str = "n") -> None:
        """Doc of the pipeline."""
        EmptyOperator(task_id="only")

    d = my_pipeline()
    assert d.dag_id == "my_pipeline"
    assert d.params == {"fixed": 1, "size": 10, "name": "n"}
    assert d.task_ids == ["only"]
    assert d.description == "Doc of the pipeline."
    assert my_pipeline(size=3).params["size"] == 3

    @dag
    def bare() -> None:
        EmptyOperator(task_id="t")

    assert bare().dag_id == "bare"


# --------------------------------------------------------------------------- default_args


def test_default_args_inheritance() -> None:
    args = {"retries": 2, "owner": "team", "retry_delay": timedelta(minutes=1),
            "queue": "fast", "not_an_operator_arg": 1}
    with _dag(default_args=args):
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b", retries=0, owner="me")
        c = EmptyOperator(task_id="c", default_args={"retries": 7})
    assert (a.retries, a.owner, a.retry_delay, a.queue) == (2, "team", timedelta(minutes=1),
                                                             "fast")
    assert (b.retries, b.owner) == (0, "me")
    assert c.retries == 7 and c.owner == "team"


def test_task_group_default_args() -> None:
    with _dag(default_args={"retries": 1, "owner": "dag"}):
        with TaskGroup("outer", default_args={"retries": 2}):
            a = EmptyOperator(task_id="a")
            with TaskGroup("inner", default_args={"owner": "inner"}):
                b = EmptyOperator(task_id="b")
                c = EmptyOperator(task_id="c", retries=9)
        d = EmptyOperator(task_id="d")
    assert (a.retries, a.owner) == (2, "dag")
    assert (b.retries, b.owner) == (2, "inner")
    assert c.retries == 9
    assert d.retries == 1


def test_default_args_params_are_merged() -> None:
    with _dag(default_args={"params": {"a": 1, "b": 1}}):
        t = EmptyOperator(task_id="t", params={"b": 2})
    assert t.params == {"a": 1, "b": 2}


def test_unexpected_kwarg_is_an_error() -> None:
    with _dag(), pytest.raises(DagDefinitionError) as info:
        EmptyOperator(task_id="t", retires=3)
    assert "retires" in str(info.value)
    assert "'t'" in str(info.value)


def test_bad_trigger_rule() -> None:
    with _dag(), pytest.raises(DagDefinitionError, match="trigger_rule"):
        EmptyOperator(task_id="t", trigger_rule="sometimes")
    with _dag():
        ok = EmptyOperator(task_id="t", trigger_rule=TriggerRule.ALL_DONE)
    assert ok.trigger_rule == "all_done"


# --------------------------------------------------------------------------- dependencies


def test_shift_operators_and_lists() -> None:
    with _dag() as d:
        a, b, c, e, f = (EmptyOperator(task_id=x) for x in "abcef")
        a >> [b, c] >> e
        f << e
    assert _ups(d) == {"b": {"a"}, "c": {"a"}, "e": {"b", "c"}, "f": {"e"}}
    with _dag() as d2:
        a, b, c = (EmptyOperator(task_id=x) for x in "abc")
        [a, b] << c
        x = EmptyOperator(task_id="x")
        x << [a, b]
    assert _ups(d2) == {"a": {"c"}, "b": {"c"}, "x": {"a", "b"}}


def test_set_upstream_and_downstream() -> None:
    with _dag() as d:
        a, b, c = (EmptyOperator(task_id=x) for x in "abc")
        a.set_downstream(b)
        c.set_upstream([a, b])
    assert _ups(d) == {"b": {"a"}, "c": {"a", "b"}}
    assert a.downstream_task_ids == {"b", "c"}


def test_chain() -> None:
    with _dag() as d:
        a, b, c, e, f, g = (EmptyOperator(task_id=x) for x in "abcefg")
        chain(a, [b, c], [e, f], g)
    assert _ups(d) == {"b": {"a"}, "c": {"a"}, "e": {"b"}, "f": {"c"}, "g": {"e", "f"}}


def test_chain_mismatched_lists() -> None:
    with _dag():
        a, b, c = (EmptyOperator(task_id=x) for x in "abc")
        with pytest.raises(DagDefinitionError, match="same length"):
            chain([a, b], [c])


def test_cross_downstream() -> None:
    with _dag() as d:
        a, b, c, e = (EmptyOperator(task_id=x) for x in "abce")
        cross_downstream([a, b], [c, e])
    assert _ups(d) == {"c": {"a", "b"}, "e": {"a", "b"}}


def test_self_dependency_is_an_error() -> None:
    with _dag():
        a = EmptyOperator(task_id="a")
        with pytest.raises(DagDefinitionError, match="itself"):
            a >> a


def test_dependency_across_dags_is_an_error() -> None:
    a = EmptyOperator(task_id="a", dag=_dag("one"))
    b = EmptyOperator(task_id="b", dag=_dag("two"))
    with pytest.raises(DagDefinitionError, match="different DAGs"):
        a >> b


# --------------------------------------------------------------------------- task groups


def test_task_group_prefixing_and_nesting() -> None:
    with _dag() as d:
        with TaskGroup("g") as g:
            a = EmptyOperator(task_id="a")
            with TaskGroup("h"):
                b = EmptyOperator(task_id="b")
        with TaskGroup("flat", prefix_group_id=False):
            c = EmptyOperator(task_id="c")
    assert (a.task_id, b.task_id, c.task_id) == ("g.a", "g.h.b", "c")
    assert a.label == "a"
    assert set(d.task_ids) == {"g.a", "g.h.b", "c"}
    assert {t.task_id for t in g.iter_tasks()} == {"g.a", "g.h.b"}


def test_task_group_as_an_end_of_shift() -> None:
    with _dag() as d:
        start = EmptyOperator(task_id="start")
        with TaskGroup("g") as g:
            x = EmptyOperator(task_id="x")
            y = EmptyOperator(task_id="y")
            z = EmptyOperator(task_id="z")
            x >> [y, z]
        end = EmptyOperator(task_id="end")
        start >> g >> end
    assert x.upstream_task_ids == {"start"}
    assert end.upstream_task_ids == {"g.y", "g.z"}
    assert _ups(d)["g.y"] == {"g.x"}


def test_task_group_decorator() -> None:
    @task_group(group_id="grp")
    def make() -> None:
        EmptyOperator(task_id="inside")

    with _dag() as d:
        group = make()
    assert isinstance(group, TaskGroup)
    assert d.task_ids == ["grp.inside"]


def test_duplicate_group_id() -> None:
    with _dag():
        TaskGroup("g")
        with pytest.raises(DagDefinitionError, match="'g'"):
            TaskGroup("g")


# --------------------------------------------------------------------------- validation


def test_duplicate_task_id_names_it() -> None:
    with _dag("dup"):
        EmptyOperator(task_id="same")
        with pytest.raises(DuplicateTaskIdError) as info:
            EmptyOperator(task_id="same")
    assert "'same'" in str(info.value)
    assert "dup" in str(info.value)


def test_cycle_names_the_tasks() -> None:
    with _dag("cyc") as d:
        a, b, c, e = (EmptyOperator(task_id=x) for x in "abce")
        e >> a >> b >> c >> a
    with pytest.raises(CycleError) as info:
        d.check_cycle()
    message = str(info.value)
    for name in ("a", "b", "c"):
        assert f"{name} >>" in message or f">> {name}" in message
    assert "e >>" not in message


def test_no_cycle_passes() -> None:
    with _dag() as d:
        a, b, c = (EmptyOperator(task_id=x) for x in "abc")
        a >> [b, c]
        b >> c
    d.check_cycle()
    d.validate()
    assert [t.task_id for t in d.topological_sort()] == ["a", "b", "c"]


# --------------------------------------------------------------------------- weights, retries


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("downstream", {"a": 6, "b": 5, "c": 3}),
        ("upstream", {"a": 1, "b": 3, "c": 6}),
        ("absolute", {"a": 1, "b": 2, "c": 3}),
    ],
)
def test_priority_weight_total(rule: str, expected: dict[str, int]) -> None:
    with _dag(default_args={"weight_rule": rule}) as d:
        a = EmptyOperator(task_id="a", priority_weight=1)
        b = EmptyOperator(task_id="b", priority_weight=2)
        c = EmptyOperator(task_id="c", priority_weight=3)
        a >> b >> c
    assert {t: d.task_dict[t].priority_weight_total for t in "abc"} == expected


def test_priority_weight_counts_diamond_once() -> None:
    with _dag() as d:
        a, b, c, e = (EmptyOperator(task_id=x) for x in "abce")
        a >> [b, c] >> e
    assert d.task_dict["a"].priority_weight_total == 4


def test_retry_delay_for() -> None:
    with _dag():
        plain = EmptyOperator(task_id="p", retry_delay=10)
        expo = EmptyOperator(task_id="e", retry_delay=timedelta(seconds=10),
                             retry_exponential_backoff=True)
        capped = EmptyOperator(task_id="c", retry_delay=10, retry_exponential_backoff=True,
                               max_retry_delay=timedelta(seconds=25))
    assert [plain.retry_delay_for(n).total_seconds() for n in (1, 2, 3)] == [10, 10, 10]
    assert [expo.retry_delay_for(n).total_seconds() for n in (1, 2, 3)] == [10, 20, 40]
    assert [capped.retry_delay_for(n).total_seconds() for n in (1, 2, 3)] == [10, 20, 25]


def test_base_operator_execute_not_implemented() -> None:
    with _dag():
        op = BaseOperator(task_id="raw")
    with pytest.raises(NotImplementedError):
        op.execute({})
