"""Datasets, the authoring side: URI normalisation and validation, conditions and their
expressions, data-aware schedules, their serialized form, and the outlet events a task
collects. Every expected value was checked against Airflow 2.10.5
(/work/ref/airflow-venv: ``airflow.datasets.Dataset(uri).uri``, ``as_expression()``)."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pendulum
import pytest

from squall.common.errors import DagDefinitionError, DatasetExpressionError, DatasetURIError
from squall.compat import airflow as compat
from squall.dag_processing.dataset_sync import dag_datasets
from squall.dag_processing.serialization import deserialize_dag, serialize_dag
from squall.runs.dataset_conditions import condition_holds
from squall.sdk.dag import DAG
from squall.sdk.datasets import (
    Dataset,
    DatasetAlias,
    DatasetAll,
    DatasetAny,
    expression_aliases,
    expression_uris,
)
from squall.sdk.datasets.events import (
    DatasetEventSpec,
    InletEventsAccessors,
    OutletEventAccessors,
    TriggeringDatasetEvents,
    outlet_event_specs,
    run_with_metadata,
)
from squall.sdk.datasets.metadata import Metadata
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.timetables import (
    CronDataIntervalTimetable,
    DataInterval,
    DatasetOrTimeSchedule,
    DatasetTriggeredTimetable,
)

START = datetime(2024, 1, 1)


# --------------------------------------------------------------------------- URIs

# (given, Airflow 2.10.5's Dataset(given).uri): airflow/datasets/__init__.py _sanitize_uri;
# Airflow core without providers has only the "file" normaliser (a no-op)
NORMALISED = [
    ("s3://Bucket/Key/", "s3://Bucket/Key"),
    ("S3://bucket/key", "s3://bucket/key"),
    ("file:///tmp/a//", "file:///tmp/a"),
    ("postgres://user:pw@Host:5432/db/schema/table", "postgres://Host:5432/db/schema/table"),
    ("gcs://b/k", "gcs://b/k"),
    ("http://a/b?z=1&a=2#frag", "http://a/b?a=2&z=1"),
    ("x-custom://A/B/", "x-custom://A/B/"),
    ("abc", "abc"),
    ("/tmp/file/", "/tmp/file/"),
    ("bucket/key", "bucket/key"),
    ("Foo://h/", "foo://h/"),
    ("file://host/path", "file://host/path"),
    ("s3://b", "s3://b/"),
    ("s3://", "s3:/"),
    ("postgresql://h/db/s/t", "postgresql://h/db/s/t"),
    ("scheme:path", "scheme:path"),
    ("ftp://h/?", "ftp://h/"),
    ("s3://b/k?b=2&a=1&a=0", "s3://b/k?a=0&a=1&b=2"),
]


@pytest.mark.parametrize(("given", "expected"), NORMALISED)
def test_uri_normalised_as_airflow(given: str, expected: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Dataset(given).uri == expected


def test_auth_info_is_dropped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="should not contain auth info"):
        assert Dataset("postgres://u:p@h/db").uri == "postgres://h/db"


@pytest.mark.parametrize(("given", "message"), [
    ("", "Dataset URI cannot be empty"),
    (" ", "Dataset URI cannot be just whitespace"),
    ("airflow://x", "Dataset scheme 'airflow' is reserved"),
    ("Airflow://x", "Dataset scheme 'airflow' is reserved"),
    ("ä://b", "Dataset URI must only consist of ASCII characters"),
    ("s3://bé", "Dataset URI must only consist of ASCII characters"),
    ("a" * 3001, "Length of 'uri' must be <= 3000: 3001"),
])
def test_uri_refused_as_airflow(given: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Dataset(given)
    assert isinstance(info.value, DatasetURIError)


def test_dataset_equality_is_by_uri() -> None:
    assert Dataset("a", extra={"k": 1}) == Dataset("a")
    assert len({Dataset("s3://b/k"), Dataset("S3://b/k/")}) == 1
    assert Dataset("file:///x").normalized_uri == "file:///x"
    assert Dataset("s3://b/k").normalized_uri is None


# --------------------------------------------------------------------------- conditions


def test_expressions_as_airflow() -> None:
    a, b, c = Dataset("a"), Dataset("b"), Dataset("c")
    assert (a & b | c).as_expression() == {"any": [{"all": ["a", "b"]}, "c"]}
    assert (a | b | c).as_expression() == {"any": ["a", "b", "c"]}
    assert (a & (b & c)).as_expression() == {"all": ["a", {"all": ["b", "c"]}]}
    assert ((a | b) & c).as_expression() == {"all": [{"any": ["a", "b"]}, "c"]}
    assert DatasetAll(a, DatasetAlias("x")).as_expression() == {"all": ["a", {"alias": "x"}]}
    with pytest.raises(TypeError):
        DatasetAny(a, "b")  # type: ignore[arg-type]


def test_an_expression_as_the_scheduler_evaluates_it() -> None:
    """The stored form, evaluated by the scheduler's one evaluator
    (squall/runs/dataset_conditions.py; its own cases in test_dataset_conditions.py)."""
    expr = ((Dataset("a") & Dataset("b")) | DatasetAlias("x")).as_expression()
    assert not condition_holds(expr, {"a"})
    assert condition_holds(expr, {"a", "b"})
    assert not condition_holds(expr, {"c"}, {"x": []})
    assert condition_holds(expr, {"c"}, {"x": ["c"]})
    assert expression_uris(expr) == ["a", "b"]
    assert expression_aliases(expr) == ["x"]
    with pytest.raises(DatasetExpressionError, match="not a dataset expression"):
        condition_holds({"none": []}, set())


# --------------------------------------------------------------------------- schedules


def test_list_schedule_is_all_of_it() -> None:
    dag = DAG("d", schedule=[Dataset("s3://b/1"), Dataset("s3://b/2")], start_date=START)
    assert isinstance(dag.timetable, DatasetTriggeredTimetable)
    assert dag.timetable.dataset_condition.as_expression() == {"all": ["s3://b/1", "s3://b/2"]}
    # airflow/timetables/simple.py DatasetTriggeredTimetable
    assert dag.timetable.summary == "Dataset"
    assert dag.timetable.description == "Triggered by datasets"
    now = pendulum.datetime(2024, 6, 1)
    assert dag.timetable.next_dagrun_info(last_automated_data_interval=None,
                                          start_date=now, end_date=None, catchup=True,
                                          now=now) is None


def test_alias_schedule_is_unresolved_until_a_dataset_is_attached() -> None:
    dag = DAG("d", schedule=DatasetAlias("out"), start_date=START)
    assert dag.timetable.summary == "Unresolved DatasetAlias"
    assert dag.timetable.dataset_condition.as_expression() == {"alias": "out"}


def test_list_schedule_of_other_things_is_refused() -> None:
    with pytest.raises(DagDefinitionError, match="should be datasets or dataset aliases"):
        DAG("d", schedule=[Dataset("a"), "b"], start_date=START)


def test_dataset_or_time_schedule_runs_as_its_timetable() -> None:
    cron = CronDataIntervalTimetable("@daily", "UTC")
    dag = DAG("d", schedule=DatasetOrTimeSchedule(timetable=cron, datasets=[Dataset("a")]),
              start_date=START, catchup=True)
    timetable = dag.timetable
    assert timetable.summary == "Dataset or @daily"
    assert timetable.description == f"Triggered by datasets or {cron.description}"
    now = pendulum.datetime(2024, 6, 1)
    kwargs: dict[str, Any] = {"last_automated_data_interval": None,
                              "start_date": pendulum.datetime(2024, 1, 1), "end_date": None,
                              "catchup": True, "now": now}
    assert timetable.next_dagrun_info(**kwargs) == cron.next_dagrun_info(**kwargs)
    with pytest.raises(DagDefinitionError, match="cannot nest"):
        DatasetOrTimeSchedule(timetable=timetable, datasets=[Dataset("a")])


def test_serialized_dag_keeps_the_condition_and_the_outlets() -> None:
    schedule = (Dataset("s3://b/1", extra={"team": "x"}) | DatasetAlias("al")) & Dataset("c")
    with DAG("consumer", schedule=schedule, start_date=START) as dag:
        EmptyOperator(task_id="t", outlets=[Dataset("s3://out"), DatasetAlias("o"), "lineage"],
                      inlets=[Dataset("s3://b/1")])
        EmptyOperator(task_id="plain")
    data = serialize_dag(dag)
    assert "outlets" not in data["dag"]["tasks"][1]  # unchanged form for the others
    back = deserialize_dag(data)
    assert isinstance(back.timetable, DatasetTriggeredTimetable)
    assert back.timetable.dataset_condition.as_expression() == schedule.as_expression()
    assert back.get_task("t").outlets == [Dataset("s3://out"), DatasetAlias("o")]
    assert back.get_task("t").inlets == [Dataset("s3://b/1")]
    named = dag_datasets(data)
    assert named.expression == {"all": [{"any": ["s3://b/1", {"alias": "al"}]}, "c"]}
    assert named.schedule_uris == {"s3://b/1": {"team": "x"}, "c": None}
    assert named.schedule_aliases == ["al"]
    assert named.outlets == {"t": {"s3://out/": None}}  # s3://out -> s3://out/
    assert named.outlet_aliases == ["o"]


def test_serialized_dataset_or_time_schedule() -> None:
    cron = CronDataIntervalTimetable("0 1 * * *", "UTC")
    with DAG("d", schedule=DatasetOrTimeSchedule(timetable=cron, datasets=Dataset("a")),
             start_date=START) as dag:
        EmptyOperator(task_id="t")
    back = deserialize_dag(serialize_dag(dag))
    assert isinstance(back.timetable, DatasetOrTimeSchedule)
    assert back.timetable.timetable == cron
    assert back.timetable.summary == "Dataset or 0 1 * * *"
    assert dag_datasets(serialize_dag(dag)).expression == "a"


# --------------------------------------------------------------------------- outlet events


def test_outlet_events_give_the_extras_and_the_alias_datasets() -> None:
    """airflow/models/taskinstance.py _register_dataset_changes: one event per outlet
    dataset, its extra from outlet_events; one per (dataset, extra) attached to aliases."""
    events = OutletEventAccessors()
    ds, alias = Dataset("s3://b/k"), DatasetAlias("al")
    events[ds].extra["rows"] = 3
    events[alias].add(Dataset("s3://b/attached"), extra={"a": 1})
    events[DatasetAlias("other")].add(Dataset("s3://b/attached"), extra={"a": 1})
    specs = outlet_event_specs([ds, alias, DatasetAlias("other"), "not a dataset"], events)
    assert specs == (
        DatasetEventSpec(uri="s3://b/k", extra={"rows": 3}),
        DatasetEventSpec(uri="s3://b/attached", extra={"a": 1}, alias_names=("al", "other")),
    )
    assert pickle.loads(pickle.dumps(specs)) == specs  # carried to the supervisor
    assert outlet_event_specs([Dataset("x")], None) == (DatasetEventSpec("x", {}),)


def test_yielded_metadata_sets_the_extra() -> None:
    """airflow/utils/operator_helpers.py ExecutionCallableRunner."""
    events = OutletEventAccessors()

    def produce(n: int) -> Iterator[Any]:
        yield Metadata(Dataset("s3://b/k"), {"n": n})
        yield Metadata(Dataset("s3://b/via"), {"v": 1}, alias=DatasetAlias("al"))
        yield "ignored"
        return n * 2

    assert run_with_metadata(produce, events, 21) == 42
    specs = outlet_event_specs([Dataset("s3://b/k"), DatasetAlias("al")], events)
    assert specs == (DatasetEventSpec("s3://b/k", {"n": 21}),
                     DatasetEventSpec("s3://b/via", {"v": 1}, ("al",)))
    assert run_with_metadata(lambda: 5, events) == 5


def test_inlet_and_triggering_accessors_read_on_first_use() -> None:
    asked: list[tuple[str, str]] = []

    def reader(kind: str, key: str) -> list[Any]:
        asked.append((kind, key))
        return [key]

    inlets = InletEventsAccessors([Dataset("s3://a/k"), DatasetAlias("al"), "x"], reader)
    assert asked == []
    assert inlets[Dataset("s3://a/k")] == ["s3://a/k"]
    assert inlets[1] == ["al"]
    assert inlets[0] == ["s3://a/k"] and asked == [("dataset", "s3://a/k"), ("alias", "al")]
    with pytest.raises(IndexError):
        inlets[2]
    with pytest.raises(KeyError):
        inlets[Dataset("s3://unknown")]
    triggering = TriggeringDatasetEvents(lambda: [])
    assert dict(triggering) == {} and triggering["s3://a"] == []


# --------------------------------------------------------------------------- compat


@pytest.fixture
def installed() -> Iterator[None]:
    compat.install()
    yield
    compat.uninstall()


def test_airflow_import_paths(installed: None) -> None:
    namespace: dict[str, Any] = {}
    exec("from airflow import Dataset as D0\n"
         "from airflow.datasets import Dataset, DatasetAlias, DatasetAll, DatasetAny\n"
         "from airflow.datasets.metadata import Metadata\n"
         "from airflow.timetables.datasets import DatasetOrTimeSchedule\n"
         "from airflow.timetables.simple import DatasetTriggeredTimetable\n"
         "from airflow.models.dataset import DatasetEvent, DatasetModel\n"
         "from airflow.utils.context import OutletEventAccessors\n", namespace)
    assert namespace["D0"] is Dataset and namespace["Metadata"] is Metadata
    assert namespace["DatasetOrTimeSchedule"] is DatasetOrTimeSchedule


def test_dataset_triggered_timetable_manual_interval() -> None:
    timetable = DatasetTriggeredTimetable(Dataset("a"))
    at = pendulum.datetime(2024, 1, 1, 5)
    assert timetable.infer_manual_data_interval(run_after=at) == DataInterval(at, at)
    assert timedelta(0) == at - timetable.infer_manual_data_interval(run_after=at).start


def test_an_extra_that_is_not_json_fails_the_try() -> None:
    from squall.execution.dataset_events import success_dataset_events

    with DAG("d", schedule=None, start_date=START):
        task = EmptyOperator(task_id="t", outlets=[Dataset("s3://b/k")])
    events = OutletEventAccessors()
    events[Dataset("s3://b/k")].extra["when"] = object()
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        success_dataset_events(task, {"outlet_events": events})
