"""Setup and teardown tasks (Airflow 2.7-2.10): the authoring API, serialization, the
trigger rule and setup constraint, the leaves that decide a run, and what a clear takes.

Each rule is Airflow 2.10.5's, cited where it is checked:
``airflow/models/abstractoperator.py`` (``as_setup``, ``as_teardown``,
``get_upstreams_only_setups_and_teardowns``), ``airflow/ti_deps/deps/trigger_rule_dep.py``
(``ALL_DONE_SETUP_SUCCESS``, ``_evaluate_setup_constraint``), ``airflow/models/dagrun.py``
(``_tis_for_dagrun_state``), ``airflow/models/dag.py`` (``validate_setup_teardown``,
``partial_subset``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pendulum
import pytest

from squall.common.errors import DagDefinitionError
from squall.common.state import TaskInstanceState
from squall.dag_processing.serialization import deserialize_dag, serialize_dag
from squall.runs.clear import matching_task_ids
from squall.runs.dag_shape import downstream_map, indirect_setups, leaf_ids
from squall.scheduler.readiness import (
    TriggerDecision,
    UpstreamCounts,
    evaluate_setup_constraint,
    evaluate_trigger_rule,
)
from squall.sdk import setup_teardown
from squall.sdk.dag import DAG
from squall.sdk.decorators import task
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.setup_teardown import setup, teardown
from squall.sdk.trigger_rule import TriggerRule

TI = TaskInstanceState
S, F, SK, UF, RUN, NONE = (TI.SUCCESS, TI.FAILED, TI.SKIPPED, TI.UPSTREAM_FAILED,
                           TI.RUNNING, TI.NONE)
START = pendulum.datetime(2024, 1, 1, tz="UTC")
TEARDOWN = TriggerRule.ALL_DONE_SETUP_SUCCESS


@pytest.fixture(autouse=True)
def _no_open_context() -> Iterator[None]:
    yield
    assert setup_teardown._frames == []


def _dag(dag_id: str = "d") -> DAG:
    return DAG(dag_id, start_date=START, schedule=None)


# --------------------------------------------------------------------------- authoring


def test_as_teardown_makes_setups_upstream_and_sets_the_rule() -> None:
    with _dag() as dag:
        s, w, t = (EmptyOperator(task_id=i) for i in ("s", "w", "t"))
        s >> w >> t.as_teardown(setups=s)
    assert (s.is_setup, s.is_teardown, t.is_teardown, t.trigger_rule) == (
        True, False, True, TEARDOWN)
    assert t.upstream_task_ids == {"s", "w"} and not t.on_failure_fail_dagrun
    dag.validate()


def test_a_task_is_not_both_and_only_a_teardown_fails_the_run() -> None:
    with _dag():
        s = EmptyOperator(task_id="s").as_setup()
        t = EmptyOperator(task_id="t").as_teardown()
        with pytest.raises(DagDefinitionError, match="already a setup"):
            s.as_teardown()
        with pytest.raises(DagDefinitionError, match="already a teardown"):
            t.as_setup()
        with pytest.raises(DagDefinitionError, match="not a teardown"):
            s.on_failure_fail_dagrun = True
        with pytest.raises(DagDefinitionError, match="only setup/teardown tasks"), \
                EmptyOperator(task_id="w"):
            pass


def test_setup_followed_by_another_rule_is_refused_at_load() -> None:
    """DAG.validate_setup_teardown: setup tasks must be followed with trigger rule
    ALL_SUCCESS (teardowns excepted)."""
    with _dag() as dag:
        s = EmptyOperator(task_id="s").as_setup()
        s >> EmptyOperator(task_id="w", trigger_rule="all_done")
    with pytest.raises(DagDefinitionError, match="must be followed with trigger rule"):
        dag.validate()


def test_context_manager_wires_the_body() -> None:
    with _dag() as dag, EmptyOperator(task_id="t").as_teardown(
            setups=EmptyOperator(task_id="s")):
        a = EmptyOperator(task_id="a")
        a >> EmptyOperator(task_id="b")
        EmptyOperator(task_id="c")
    ups = {tid: t.upstream_task_ids for tid, t in dag.task_dict.items()}
    assert ups == {"t": {"s", "b", "c"}, "s": set(), "a": {"s"}, "b": {"a"}, "c": {"s"}}


def test_nested_contexts_chain_setups_and_teardowns() -> None:
    with _dag() as dag:
        outer_t = EmptyOperator(task_id="outer_t").as_teardown(
            setups=EmptyOperator(task_id="outer_s"))
        with outer_t:
            inner_t = EmptyOperator(task_id="inner_t").as_teardown(
                setups=EmptyOperator(task_id="inner_s"))
            with inner_t:
                EmptyOperator(task_id="w")
    ups = {tid: t.upstream_task_ids for tid, t in dag.task_dict.items()}
    assert ups["inner_s"] == {"outer_s"} and ups["outer_t"] == {"outer_s", "inner_t"}
    assert ups["w"] == {"inner_s"} and ups["inner_t"] == {"inner_s", "w"}


def test_decorators_and_a_setup_context() -> None:
    @setup
    def make() -> str:
        return "x"

    @teardown(on_failure_fail_dagrun=True)
    def drop(name: str) -> None:
        return None

    @task
    def use(name: str) -> None:
        return None

    with _dag() as dag:
        made = make()
        dropped = drop(made)
        with made:  # a setup: its teardowns are the ones downstream of it
            use(made)
    tasks = dag.task_dict
    assert tasks["make"].is_setup and tasks["drop"].is_teardown
    assert tasks["drop"].on_failure_fail_dagrun and tasks["drop"].trigger_rule == TEARDOWN
    assert tasks["drop"].upstream_task_ids == {"make", "use"}
    assert dropped.is_teardown

    with pytest.raises(DagDefinitionError, match="not configurable for teardown"), _dag("e"):
        teardown(task(lambda: None, task_id="t", trigger_rule="all_done"))()


def test_serialization_keeps_the_flags() -> None:
    with _dag() as dag:
        s = EmptyOperator(task_id="s")
        s >> EmptyOperator(task_id="t").as_teardown(setups=s, on_failure_fail_dagrun=True)
    back = deserialize_dag(serialize_dag(dag)).task_dict
    assert (back["s"].is_setup, back["t"].is_teardown, back["t"].on_failure_fail_dagrun,
            back["t"].trigger_rule) == (True, True, True, TEARDOWN)


# --------------------------------------------------------------------------- scheduling


def _counts(states: list[str | None], setups: list[str | None]) -> UpstreamCounts:
    return UpstreamCounts.from_states(states + setups, setups)


@pytest.mark.parametrize(("work", "setups", "expected"), [
    ([F], [S], TriggerDecision.READY),          # the work failed: the teardown still runs
    ([S], [S], TriggerDecision.READY),
    ([RUN], [S], TriggerDecision.WAIT),         # waits for every upstream
    ([UF], [F], TriggerDecision.UPSTREAM_FAILED),  # no setup succeeded
    ([UF], [F, S], TriggerDecision.READY),      # one setup succeeded is enough
    ([SK], [SK], TriggerDecision.SKIP),         # every setup skipped
    ([SK], [SK, F], TriggerDecision.UPSTREAM_FAILED),
    ([F, S], [], TriggerDecision.READY),        # no setup upstream: all_done
])
def test_teardown_rule(work: list[str | None], setups: list[str | None],
                       expected: TriggerDecision) -> None:
    """trigger_rule_dep.py, ALL_DONE_SETUP_SUCCESS: done, and a setup succeeded."""
    assert evaluate_trigger_rule(TEARDOWN, _counts(work, setups)) is expected


@pytest.mark.parametrize(("setups", "expected"), [
    ([S, S], TriggerDecision.READY),
    ([S, RUN], TriggerDecision.WAIT),
    ([S, F], TriggerDecision.UPSTREAM_FAILED),
    ([UF], TriggerDecision.UPSTREAM_FAILED),
    ([SK, RUN], TriggerDecision.SKIP),
    ([NONE], TriggerDecision.WAIT),
])
def test_setup_constraint(setups: list[str | None], expected: TriggerDecision) -> None:
    """_evaluate_setup_constraint: a failed indirect setup fails the work, a skipped one
    skips it, and the work waits for all of them to succeed."""
    assert evaluate_setup_constraint(setups) is expected


def _chain_dag() -> DAG:
    with _dag() as dag:
        s = EmptyOperator(task_id="s")
        w1 = EmptyOperator(task_id="w1")
        w2 = EmptyOperator(task_id="w2")
        t = EmptyOperator(task_id="t")
        s >> w1 >> w2 >> t.as_teardown(setups=s)
        w2 >> EmptyOperator(task_id="outside")  # no teardown of s below it: s still counts
        other = EmptyOperator(task_id="other_setup").as_setup()
        other >> w1
        other >> EmptyOperator(task_id="other_td").as_teardown(setups=other)
    return dag


def test_indirect_setups() -> None:
    dag = _chain_dag()
    tasks, down = dag.task_dict, downstream_map(dag.task_dict)
    assert indirect_setups(tasks, down, "w1") == set()  # both setups are direct upstreams
    # other_setup's teardown is not below w2: it is not relevant to w2 (nor to outside)
    assert indirect_setups(tasks, down, "w2") == {"s"}
    assert indirect_setups(tasks, down, "outside") == set()
    assert indirect_setups(tasks, down, "t") == set()  # a teardown has no indirect setups


def test_teardowns_are_not_leaves_unless_they_fail_the_run() -> None:
    """dagrun.py _tis_for_dagrun_state: the run's state comes from the effective leaves."""
    dag = _chain_dag()
    assert leaf_ids(dag.task_dict) == {"outside"}
    dag.task_dict["t"].on_failure_fail_dagrun = True
    assert leaf_ids(dag.task_dict) == {"t", "outside"}
    with _dag("plain") as plain:
        s = EmptyOperator(task_id="s")
        s >> EmptyOperator(task_id="w") >> EmptyOperator(task_id="t").as_teardown(setups=s)
    assert leaf_ids(plain.task_dict) == {"w"}  # the work before the teardown
    with _dag("only") as only:
        EmptyOperator(task_id="t").as_teardown()
    assert leaf_ids(only.task_dict) == {"t"}  # nothing but teardowns: the plain leaves


# --------------------------------------------------------------------------- clearing


def test_clear_selection_takes_setups_and_teardowns() -> None:
    """dag.py partial_subset, as `airflow tasks clear -t` selects (every expectation
    checked with Airflow 2.10.5's partial_subset on the same DAG)."""
    dag = _chain_dag()
    assert matching_task_ids(dag, "^w2$") == ["s", "t", "w2"]
    assert matching_task_ids(dag, "^s$") == ["s", "t"]
    assert matching_task_ids(dag, "^t$") == ["t"]
    assert matching_task_ids(dag, "^w2$", downstream=True) == ["outside", "s", "t", "w2"]
    assert matching_task_ids(dag, "^w2$", upstream=True) == [
        "other_setup", "other_td", "s", "t", "w1", "w2"]
    assert matching_task_ids(dag, "^s$", downstream=True) == [
        "outside", "s", "t", "w1", "w2"]
    assert matching_task_ids(dag, "^s$", upstream=True) == ["s", "t"]
    assert matching_task_ids(dag, "^t$", downstream=True) == ["t"]
    assert matching_task_ids(dag, "^t$", upstream=True) == [
        "other_setup", "other_td", "s", "t", "w1", "w2"]


def test_a_task_group_leaves_its_teardown_out_of_its_leaves() -> None:
    """task_group.py TaskGroup.get_leaves: `group >> next` attaches to the work before the
    teardown (checked with Airflow 2.10.5: next's upstreams are g.w and g.w2; a group of
    only a setup and its teardown has no leaves)."""
    from squall.sdk.taskgroup import TaskGroup

    with _dag() as dag:
        with TaskGroup("g") as g:
            s, w, w2, t = (EmptyOperator(task_id=i) for i in ("s", "w", "w2", "t"))
            s >> [w, w2]
            w >> t.as_teardown(setups=s)
        with TaskGroup("h") as h:
            hs, ht = EmptyOperator(task_id="s"), EmptyOperator(task_id="t")
            hs >> ht.as_teardown(setups=hs)
        g >> EmptyOperator(task_id="after")
        h >> EmptyOperator(task_id="after_h")
    assert dag.task_dict["after"].upstream_task_ids == {"g.w", "g.w2"}
    assert dag.task_dict["after_h"].upstream_task_ids == set()
