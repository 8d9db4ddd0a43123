"""Pure logic of issue 24 item 4: task group id dedup, chain / chain_linear /
cross_downstream edges, edge labels, display names, the branch operators' choices, custom
timetables (round trip through the serialized DAG, plugin registration), the venv cache.

Expectations checked against Airflow 2.10.5 (its ``chain_linear``, ``EdgeModifier``,
``TaskGroup._check_for_group_id_collisions``, ``BranchDayOfWeekOperator``,
``BranchDateTimeOperator``, ``CronTriggerTimetable``, ``EventsTimetable``).
"""

from __future__ import annotations

import datetime
import multiprocessing
import sys
import textwrap
from pathlib import Path
from typing import Any

import pendulum
import pytest

from squall.common.errors import DagDefinitionError, SerializationError
from squall.dag_processing import plugins
from squall.dag_processing.serialization import deserialize_dag, serialize_dag
from squall.sdk.dag import DAG
from squall.sdk.decorators import task, task_group
from squall.sdk.edges import Label, chain, chain_linear, cross_downstream
from squall.sdk.operators.datetime_branch import BranchDateTimeOperator, target_times_as_dates
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.operators.python_virtualenv import function_source
from squall.sdk.operators.venv_cache import MARKER, VenvSpec, ensure_venv
from squall.sdk.operators.weekday import BranchDayOfWeekOperator, WeekDay
from squall.sdk.taskgroup import TaskGroup, dedup_group_id
from squall.sdk.timetables import CustomTimetable
from squall.sdk.timetables.airflow_builtin import CronTriggerTimetable, EventsTimetable
from squall.sdk.timetables.base import DataInterval
from squall.sdk.timetables.custom import AirflowTimetable, DagRunInfo, TimeRestriction

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _dag(dag_id: str = "d", **kwargs: Any) -> DAG:
    return DAG(dag_id, start_date=START, schedule=None, **kwargs)


def _edges(dag: DAG) -> dict[str, list[str]]:
    return {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks if t.downstream_task_ids}


# --------------------------------------------------------------------------- task groups


def test_dedup_group_id_follows_airflow() -> None:
    assert dedup_group_id("grp", set()) == "grp"
    assert dedup_group_id("grp", {"grp"}) == "grp__1"
    assert dedup_group_id("grp", {"grp", "grp__1"}) == "grp__2"
    assert dedup_group_id("grp", {"grp", "grp__1", "grp__5"}) == "grp__6"
    assert dedup_group_id("grp__1", {"grp", "grp__1"}) == "grp__2"



def test_task_group_function_called_several_times() -> None:
    with _dag() as dag:

        @task_group(default_args={"retries": 3})
        def grp() -> None:
            """Tip."""
            EmptyOperator(task_id="inside")

        groups = [grp(), grp(), grp()]
        with TaskGroup("grp__5"):
            EmptyOperator(task_id="z")
        groups.append(grp())
        with TaskGroup("outer"):

            @task_group
            def inner() -> None:
                EmptyOperator(task_id="t")

            inner()
            # Airflow 2.10 compares the label with full ids: a nested repeat collides
            with pytest.raises(DagDefinitionError, match=r"outer\.inner"):
                inner()
    assert [g.group_id for g in groups] == ["grp", "grp__1", "grp__2", "grp__6"]
    assert groups[0].tooltip == "Tip."
    assert dag.get_task("grp__1.inside").retries == 3
    renamed = grp.override(group_id="other")  # type: ignore[attr-defined]
    with dag:
        assert renamed().group_id == "other"


# --------------------------------------------------------------------------- edges


def test_chain_linear_connects_every_pair_of_neighbours() -> None:
    with _dag() as dag:
        a, b, c, d, e, f = (EmptyOperator(task_id=x) for x in "abcdef")
        chain_linear(a, [b, c], [d, e], f)
    assert _edges(dag) == {"a": ["b", "c"], "b": ["d", "e"], "c": ["d", "e"], "d": ["f"],
                           "e": ["f"]}
    with pytest.raises(DagDefinitionError, match="forget to expand"):
        chain_linear(a)
    with pytest.raises(DagDefinitionError, match="labels"):
        chain_linear(a, Label("x"), b)


def test_chain_pairs_lists_and_takes_groups_and_xcomargs() -> None:
    with _dag() as dag:
        a, b, c, d, e = (EmptyOperator(task_id=x) for x in "abcde")
        with TaskGroup("g") as g:
            EmptyOperator(task_id="first") >> EmptyOperator(task_id="last")

        @task
        def produce() -> int:
            return 1

        out = produce()
        chain(a, [b, c], [d, e], g, out)
    assert _edges(dag) == {"a": ["b", "c"], "b": ["d"], "c": ["e"], "d": ["g.first"],
                           "e": ["g.first"], "g.first": ["g.last"], "g.last": ["produce"]}
    with pytest.raises(DagDefinitionError, match="same length"):
        chain([a, b], [c])


def test_cross_downstream() -> None:
    with _dag() as dag:
        a, b, c, d = (EmptyOperator(task_id=x) for x in "abcd")
        cross_downstream([a, b], [c, d])
    assert _edges(dag) == {"a": ["c", "d"], "b": ["c", "d"]}


def test_labels_make_edges_and_are_serialized() -> None:
    with _dag() as dag:
        h, i, j, k = (EmptyOperator(task_id=x) for x in "hijk")
        h >> Label("yes") >> [i, j]
        k << Label("back") << j
        chain(i, Label("then"), k)
    assert _edges(dag) == {"h": ["i", "j"], "i": ["k"], "j": ["k"]}
    assert dag.edge_info == {"h": {"i": {"label": "yes"}, "j": {"label": "yes"}},
                             "j": {"k": {"label": "back"}}, "i": {"k": {"label": "then"}}}
    rebuilt = deserialize_dag(serialize_dag(dag))
    assert rebuilt.edge_info == dag.edge_info
    assert rebuilt.get_edge_info("h", "i") == {"label": "yes"}


def test_labels_between_task_groups_connect_the_groups_as_airflow() -> None:
    """Airflow 2.10's EdgeModifier._convert_streams_to_task_groups: with nodes of different
    groups on its two sides, the side given first stands for its groups (edges checked
    against Airflow 2.10.5)."""
    with _dag() as dag:
        with TaskGroup("g1"):
            a, b, _a2 = (EmptyOperator(task_id=x) for x in ("a", "b", "a2"))
            a >> b
        with TaskGroup("g2"):
            c, d, c2 = (EmptyOperator(task_id=x) for x in ("c", "d", "c2"))
            c >> d
        with TaskGroup("g3"):
            e, f = EmptyOperator(task_id="e"), EmptyOperator(task_id="f")
        a >> Label("x") >> d  # g1's leaves >> d
        top = EmptyOperator(task_id="top")
        top >> Label("y") >> c2  # top is in no group: itself
        e >> Label("same") >> f  # one group: the tasks themselves
    assert _edges(dag) == {"g1.a": ["g1.b"], "g1.b": ["g2.d"], "g1.a2": ["g2.d"],
                           "g2.c": ["g2.d"], "top": ["g2.c2"], "g3.e": ["g3.f"]}
    assert dag.edge_info["g1.a2"] == {"g2.d": {"label": "x"}}
    with _dag("d2") as dag2:
        with TaskGroup("g1"):
            a = EmptyOperator(task_id="a")
        with TaskGroup("g2"):
            c, d, c2 = (EmptyOperator(task_id=x) for x in ("c", "d", "c2"))
            c >> d
        d << Label("back") << a  # g2's roots << a
    assert _edges(dag2) == {"g1.a": ["g2.c", "g2.c2"], "g2.c": ["g2.d"]}


def test_display_names_default_to_ids_and_are_serialized() -> None:
    with _dag("plain") as plain:
        EmptyOperator(task_id="t")
    with _dag("named", dag_display_name="Named DAG") as named:
        EmptyOperator(task_id="t", task_display_name="A task ✓")
    assert (plain.dag_display_name, plain.get_task("t").task_display_name) == ("plain", "t")
    rebuilt = deserialize_dag(serialize_dag(named))
    assert rebuilt.dag_display_name == "Named DAG"
    assert rebuilt.get_task("t").task_display_name == "A task ✓"


# --------------------------------------------------------------------------- branch operators


class _Ctx(dict[str, Any]):
    pass


def test_branch_day_of_week() -> None:
    with _dag():
        op = BranchDayOfWeekOperator(task_id="w", week_day={"Monday", WeekDay.SATURDAY},
                                     use_task_logical_date=True, follow_task_ids_if_true="t",
                                     follow_task_ids_if_false="f")
    assert op.choose_branch(_Ctx(logical_date=pendulum.datetime(2024, 1, 6))) == "t"  # Sat
    assert op.choose_branch(_Ctx(logical_date=pendulum.datetime(2024, 1, 3))) == "f"  # Wed
    assert WeekDay.validate_week_day("sunday") == {7}
    with pytest.raises(DagDefinitionError, match="Invalid Week Day"), _dag("d2"):
        BranchDayOfWeekOperator(task_id="w", week_day="Caturday", follow_task_ids_if_true="t",
                                follow_task_ids_if_false="f")


def test_branch_date_time() -> None:
    with _dag():
        op = BranchDateTimeOperator(
            task_id="b", target_lower=datetime.time(22), target_upper=datetime.time(2),
            use_task_logical_date=True, follow_task_ids_if_true="t",
            follow_task_ids_if_false="f")
    # an upper time before the lower one is the next day
    assert op.choose_branch(_Ctx(logical_date=pendulum.datetime(2024, 1, 3, 23))) == "t"
    assert op.choose_branch(_Ctx(logical_date=pendulum.datetime(2024, 1, 3, 12))) == "f"
    low, up = target_times_as_dates(pendulum.datetime(2024, 1, 3), datetime.time(22),
                                    datetime.time(2))
    assert (low, up) == (datetime.datetime(2024, 1, 3, 22), datetime.datetime(2024, 1, 4, 2))
    with pytest.raises(DagDefinitionError, match="both target_upper and target_lower"), \
            _dag("d2"):
        BranchDateTimeOperator(task_id="b", target_lower=None, target_upper=None,
                               follow_task_ids_if_true="t", follow_task_ids_if_false="f")


# --------------------------------------------------------------------------- timetables


def _runs(dag: DAG, now: pendulum.DateTime, limit: int = 10) -> list[str]:
    out: list[str] = []
    last = None
    while len(out) < limit:
        info = dag.timetable.next_dagrun_info(
            last_automated_data_interval=last, start_date=dag.start_date,
            end_date=dag.end_date, catchup=dag.catchup, now=now)
        if info is None:
            break
        out.append(info.logical_date.isoformat())
        last = info.data_interval
    return out


NOW = pendulum.datetime(2025, 1, 1, tz="UTC")


def test_cron_trigger_timetable_round_trip_and_runs() -> None:
    dag = DAG("c", start_date=START, end_date=pendulum.datetime(2024, 1, 20, tz="UTC"),
              schedule=CronTriggerTimetable("0 6 * * 1", timezone="UTC",
                                            interval=datetime.timedelta(hours=6)))
    rebuilt = deserialize_dag(serialize_dag(dag))
    assert rebuilt.timetable == dag.timetable
    # as Airflow 2.10.5: the tick is the run's data interval end, the logical date its start
    assert _runs(rebuilt, NOW) == ["2024-01-01T00:00:00+00:00", "2024-01-08T00:00:00+00:00",
                                   "2024-01-15T00:00:00+00:00"]
    manual = rebuilt.timetable.infer_manual_data_interval(
        run_after=pendulum.datetime(2024, 1, 8, 15, tz="UTC"))
    assert (manual.start.hour, manual.end.hour) == (9, 15)
    assert rebuilt.timetable.summary == "0 6 * * 1"


def test_cron_trigger_without_catchup_starts_at_the_latest_tick() -> None:
    dag = DAG("c", start_date=START, catchup=False,
              schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC"))
    assert _runs(dag, pendulum.datetime(2024, 3, 5, 7, tz="UTC"), limit=1) == [
        "2024-03-05T06:00:00+00:00"]


def test_events_timetable_round_trip_and_runs() -> None:
    events = [pendulum.datetime(2024, 1, 5, 12, tz="UTC"), pendulum.datetime(2024, 1, 2),
              pendulum.datetime(2024, 1, 30)]
    dag = DAG("e", start_date=START, end_date=pendulum.datetime(2024, 1, 10, tz="UTC"),
              schedule=EventsTimetable(events, restrict_to_events=True))
    rebuilt = deserialize_dag(serialize_dag(dag))
    assert rebuilt.timetable == dag.timetable
    assert rebuilt.timetable.summary == "3 events"
    assert _runs(rebuilt, NOW) == ["2024-01-02T00:00:00+00:00", "2024-01-05T12:00:00+00:00"]
    manual = rebuilt.timetable.infer_manual_data_interval(
        run_after=pendulum.datetime(2024, 1, 8, 15, tz="UTC"))
    assert manual.start == manual.end == pendulum.datetime(2024, 1, 5, 12, tz="UTC")
    start, end = manual  # a NamedTuple in Airflow: it unpacks
    assert start == end == manual.start


class _Every2Days(AirflowTimetable):
    """A custom timetable defined here: not registered unless a plugin lists it."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def serialize(self) -> dict[str, Any]:
        return {"offset": self.offset}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> _Every2Days:
        return cls(data["offset"])

    def infer_manual_data_interval(self, *, run_after: pendulum.DateTime) -> DataInterval:
        return DataInterval.exact(run_after)

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: TimeRestriction) -> DagRunInfo | None:
        start = (restriction.earliest if last_automated_data_interval is None
                 else last_automated_data_interval.end)
        assert start is not None
        start = start.add(hours=self.offset) if last_automated_data_interval is None else start
        if restriction.latest is not None and start > restriction.latest:
            return None
        return DagRunInfo(run_after=start.add(days=2),
                          data_interval=DataInterval(start, start.add(days=2)))


def test_an_unregistered_custom_timetable_cannot_be_serialized() -> None:
    dag = DAG("u", start_date=START, schedule=_Every2Days())
    assert isinstance(dag.timetable, CustomTimetable)
    assert dag.timetable.summary == "_Every2Days"
    with pytest.raises(SerializationError, match="_Every2Days' is not registered"):
        serialize_dag(dag)


def test_a_plugin_registers_a_custom_timetable(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "squall_test_every2.py").write_text(textwrap.dedent("""
        from squall.sdk.plugins import AirflowPlugin
        from tests.unit.test_authoring_ops import _Every2Days

        class Every2(_Every2Days):
            pass

        class Every2Plugin(AirflowPlugin):
            name = "every2"
            timetables = [Every2]
    """))
    (folder / "squall_test_broken_plugin.py").write_text("raise RuntimeError('bad plugin')\n")
    monkeypatch.setattr(plugins, "_timetables", {})
    monkeypatch.setattr(plugins, "_loaded_folders", set())
    monkeypatch.setattr(plugins, "import_errors", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    found = plugins.load_plugins(folder)
    assert [p.name for p in found] == ["every2"]
    assert "bad plugin" in plugins.import_errors[str(folder / "squall_test_broken_plugin.py")]
    every2 = found[0].timetables[0]
    dag = DAG("p", start_date=START, end_date=pendulum.datetime(2024, 1, 6, tz="UTC"),
              schedule=every2(offset=1))
    data = serialize_dag(dag)
    assert data["dag"]["schedule"]["class"] == "squall_test_every2.Every2"
    rebuilt = deserialize_dag(data)
    assert rebuilt.timetable == dag.timetable
    assert _runs(rebuilt, NOW) == ["2024-01-01T01:00:00+00:00", "2024-01-03T01:00:00+00:00",
                                   "2024-01-05T01:00:00+00:00"]
    data["dag"]["schedule"]["class"] = "squall_test_every2.Gone"
    monkeypatch.setattr(plugins, "ensure_loaded", lambda *a, **k: None)
    with pytest.raises(SerializationError, match=r"'squall_test_every2\.Gone' is not registered"):
        deserialize_dag(data)


# --------------------------------------------------------------------------- virtualenvs


def test_function_source_leaves_the_decorators_out() -> None:
    @task.virtualenv(
        requirements=["six"],
    )
    def decorated(x: int) -> int:
        return x + 1

    source = function_source(decorated.function)
    assert source.startswith("def decorated(x: int) -> int:")
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    assert namespace["decorated"](1) == 2


def _make_venv(cache: str) -> str:
    return str(ensure_venv(Path(cache), VenvSpec(requirements=(), python=sys.executable,
                                                 system_site_packages=True)))


def test_two_racing_tries_make_one_venv(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pythons = pool.map(_make_venv, [str(tmp_path)] * 2)
    assert pythons[0] == pythons[1]
    venvs = list(tmp_path.glob("venv-*/"))
    assert len(venvs) == 1 and (venvs[0] / MARKER).exists()
    # reused afterwards; an incomplete venv (no marker) is made again
    marker = venvs[0] / MARKER
    made = marker.stat().st_mtime_ns
    assert _make_venv(str(tmp_path)) == pythons[0]
    assert marker.stat().st_mtime_ns == made
    marker.unlink()
    assert _make_venv(str(tmp_path)) == pythons[0]
    assert marker.exists()
