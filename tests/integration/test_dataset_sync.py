"""The DAG processor's dataset rows (squall.dag_processing.dataset_sync), on SQLite and
PostgreSQL: ``dataset`` / ``dataset_alias`` rows for what schedules and outlets name, the
references (those that went away removed), ``dag.dataset_expression``, orphaning (Airflow
2.10's ``DAG.bulk_write_to_db`` and ``SchedulerJobRunner._orphan_unreferenced_datasets``),
and a successful try's events recorded with its outcome, never a failed one's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import (
    DagModel,
    DagScheduleDatasetAliasReference,
    DagScheduleDatasetReference,
    DatasetAliasModel,
    DatasetEvent,
    DatasetModel,
    TaskInstance,
    TaskOutletDatasetReference,
    dataset_alias_dataset,
)
from squall.common.state import DagRunType, TaskInstanceState
from squall.dag_processing.isolated import ParseResult
from squall.dag_processing.serialization import serialize_dag
from squall.dag_processing.sync import load_serialized_dags, sync_to_db
from squall.execution.runner import OutcomeRecord, write_outcome
from squall.runs.datasets import record_dataset_event, record_try_events
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from squall.sdk.datasets import Dataset, DatasetAlias
from squall.sdk.datasets.events import DatasetEventSpec
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.timetables import DataInterval

pytestmark = pytest.mark.integration

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
START = datetime(2024, 1, 1, tzinfo=UTC)


def _pairs(rows: Any) -> dict[Any, Any]:
    return {k: v for k, v in rows}


def _parse(*dags: DAG, fileloc: str = "/dags/f.py") -> ParseResult:
    serialized: dict[str, dict[str, Any]] = {}
    for dag in dags:
        dag.fileloc = fileloc
        serialized[dag.dag_id] = serialize_dag(dag)
    return ParseResult(serialized=serialized, files_parsed=[fileloc])


def _sync(factory: SessionFactory, *dags: DAG, now: datetime = NOW) -> None:
    with session_scope(factory) as session:
        sync_to_db(session, _parse(*dags), paused_at_creation=False, now=now)


def _state(factory: SessionFactory) -> dict[str, Any]:
    with session_scope(factory) as session:
        uri = _pairs(session.execute(select(DatasetModel.id, DatasetModel.uri)))
        alias = _pairs(session.execute(select(DatasetAliasModel.id, DatasetAliasModel.name)))
        return {
            "datasets": {u: o for u, o in session.execute(
                select(DatasetModel.uri, DatasetModel.is_orphaned))},
            "aliases": sorted(alias.values()),
            "schedule": sorted((r.dag_id, uri[r.dataset_id]) for r in
                               session.scalars(select(DagScheduleDatasetReference))),
            "schedule_aliases": sorted((r.dag_id, alias[r.alias_id]) for r in session.scalars(
                select(DagScheduleDatasetAliasReference))),
            "outlets": sorted((r.dag_id, r.task_id, uri[r.dataset_id]) for r in
                              session.scalars(select(TaskOutletDatasetReference))),
            "expressions": {d.dag_id: d.dataset_expression
                            for d in session.scalars(select(DagModel))},
        }


def _dags(consumer_schedule: Any, outlets: list[Any]) -> tuple[DAG, DAG]:
    with DAG("producer", schedule=None, start_date=START) as producer:
        EmptyOperator(task_id="make", outlets=outlets,
                      inlets=[Dataset("s3://b/only-an-inlet")])
    with DAG("consumer", schedule=consumer_schedule, start_date=START) as consumer:
        EmptyOperator(task_id="use")
    return producer, consumer


def test_sync_records_references_and_orphans(session_factory: SessionFactory) -> None:
    a, b, c = Dataset("s3://b/a"), Dataset("s3://b/b", extra={"k": 1}), Dataset("s3://b/c")
    _sync(session_factory, *_dags((a & b) | DatasetAlias("al"), [a, c, DatasetAlias("out")]))
    state = _state(session_factory)
    # inlets name no dataset row (as Airflow's bulk_write_to_db)
    assert state["datasets"] == {"s3://b/a": False, "s3://b/b": False, "s3://b/c": False}
    assert state["aliases"] == ["al", "out"]
    assert state["schedule"] == [("consumer", "s3://b/a"), ("consumer", "s3://b/b")]
    assert state["schedule_aliases"] == [("consumer", "al")]
    assert state["outlets"] == [("producer", "make", "s3://b/a"), ("producer", "make", "s3://b/c")]
    assert state["expressions"] == {
        "producer": None,
        "consumer": {"any": [{"all": ["s3://b/a", "s3://b/b"]}, {"alias": "al"}]}}
    with session_scope(session_factory) as session:
        row = session.scalars(select(DatasetModel).where(DatasetModel.uri == "s3://b/b")).one()
        assert row.extra == {"k": 1}
        consumer = session.get_one(DagModel, "consumer")
        # a pure dataset schedule: no time-based run (Airflow's DatasetTriggeredTimetable)
        assert consumer.next_dagrun is None and consumer.schedule == "Dataset"
        assert consumer.timetable_description == "Triggered by datasets"

    # the consumer now waits for c only; the producer's outlet is b: a is named by nobody
    _sync(session_factory, *_dags([c], [b]), now=NOW + timedelta(minutes=1))
    state = _state(session_factory)
    assert state["datasets"] == {"s3://b/a": True, "s3://b/b": False, "s3://b/c": False}
    assert state["schedule"] == [("consumer", "s3://b/c")]
    assert state["schedule_aliases"] == []
    assert state["outlets"] == [("producer", "make", "s3://b/b")]
    assert state["expressions"]["consumer"] == {"all": ["s3://b/c"]}

    # named again: no longer orphaned; a schedule of time: its references go
    _sync(session_factory, *_dags("@daily", [a]), now=NOW + timedelta(minutes=2))
    state = _state(session_factory)
    assert state["datasets"] == {"s3://b/a": False, "s3://b/b": True, "s3://b/c": True}
    assert state["schedule"] == []
    assert state["expressions"]["consumer"] is None
    with session_scope(session_factory) as session:  # SQL NULL, as for a DAG never synced
        assert session.scalars(select(DagModel.dag_id).where(
            DagModel.dataset_expression.is_(None)).order_by(DagModel.dag_id)).all() == [
            "consumer", "producer"]


def _producer_try(factory: SessionFactory) -> TaskInstance:
    ds = Dataset("s3://b/out")
    with DAG("producer", schedule=None, start_date=START) as producer:
        EmptyOperator(task_id="make", outlets=[ds])
    with DAG("consumer", schedule=[ds], start_date=START) as consumer:
        EmptyOperator(task_id="use")
    _sync(factory, producer, consumer)
    with session_scope(factory) as session:
        dag = load_serialized_dags(session, ["producer"])["producer"]
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=NOW,
                             data_interval=DataInterval(NOW, NOW))
        ti = session.scalars(select(TaskInstance).where(
            TaskInstance.run_id == run.run_id)).one()
        ti.state, ti.try_number = TaskInstanceState.RUNNING, 1
        return ti


def _record(state: TaskInstanceState, events: tuple[DatasetEventSpec, ...]) -> OutcomeRecord:
    return OutcomeRecord(state=state, values={"end_date": NOW, "duration": 1.0,
                                              "state_reason": None, "next_retry_at": None},
                         start_date=NOW, dataset_events=events)


def test_outcome_write_records_a_success_events_once(session_factory: SessionFactory) -> None:
    """airflow/models/taskinstance.py _run_raw_task: dataset changes are registered only
    when the try's state is SUCCESS, in the transaction that saves it."""
    ti = _producer_try(session_factory)
    spec = (DatasetEventSpec("s3://b/out", {"rows": 1}),
            DatasetEventSpec("s3://b/new", {"via": 1}, ("al",)),
            DatasetEventSpec("s3://b/unknown", {}))
    # a failed try's record carries no events (outcome_record drops them) and writes none
    assert write_outcome(session_factory, ti.key, try_number=1,
                         record=_record(TaskInstanceState.UP_FOR_RETRY, ()),
                         dataset_events=record_try_events)
    with session_scope(session_factory) as session:
        assert session.scalars(select(DatasetEvent)).all() == []
        session.get_one(TaskInstance, ("producer", "make", ti.run_id, -1)).state = \
            TaskInstanceState.RUNNING
        session.get_one(TaskInstance, ("producer", "make", ti.run_id, -1)).try_number = 2
    assert write_outcome(session_factory, ti.key, try_number=2,
                         record=_record(TaskInstanceState.SUCCESS, spec),
                         dataset_events=record_try_events)
    # the same outcome written again (a lost answer, a duplicate): the compare-and-set loses
    assert not write_outcome(session_factory, ti.key, try_number=2,
                             record=_record(TaskInstanceState.SUCCESS, spec),
                             dataset_events=record_try_events)
    with session_scope(session_factory) as session:
        events = session.execute(
            select(DatasetModel.uri, DatasetEvent.extra, DatasetEvent.source_try_number,
                   DatasetEvent.source_alias_names)
            .join(DatasetModel, DatasetModel.id == DatasetEvent.dataset_id)
            .order_by(DatasetEvent.id)).all()
        # an unknown outlet dataset gets no event; an alias's dataset is created
        assert [tuple(e) for e in events] == [("s3://b/out", {"rows": 1}, 2, None),
                                              ("s3://b/new", {"via": 1}, 2, ["al"])]
        assert session.scalar(select(dataset_alias_dataset.c.alias_id)) is not None
        # a second call for the same try adds nothing (the unique source-try index)
        assert record_try_events(session, ti.key, 2, spec) == 0


def test_an_alias_consumer_references_what_its_alias_resolved_to(
        session_factory: SessionFactory) -> None:
    """Once an event is recorded through an alias, the alias's consumers reference the
    dataset it resolved to, and keep that reference while their schedule names the alias.
    Airflow 2.10.5: ``DatasetManager.register_dataset_change`` asks for the consumers' files
    to be parsed at once, and ``DAG.bulk_write_to_db`` references what
    ``_DatasetAliasCondition.iter_datasets`` gives, the alias's datasets (checked with
    ``airflow scheduler`` on tests/integration/airflow210_dataset_dags: after the producer's
    run, ``dag_schedule_dataset_reference`` has af210_ds_alias_consumer ->
    s3://warehouse/aliased, so ``GET /api/v1/datasets`` lists it among the consuming DAGs)."""
    a, c = Dataset("s3://b/a"), Dataset("s3://b/c")
    _sync(session_factory, *_dags(DatasetAlias("al"), [a, c]))
    assert _state(session_factory)["schedule"] == []
    for _ in range(2):  # a second event through the alias adds nothing
        with session_scope(session_factory) as session:
            assert record_dataset_event(session, uri="s3://b/a", alias_names=["al"])
        assert _state(session_factory)["schedule"] == [("consumer", "s3://b/a")]

    # the consumer's file changes, its schedule still names the alias: the reference stays
    _sync(session_factory, *_dags(DatasetAlias("al") | c, [a, c]),
          now=NOW + timedelta(minutes=1))
    assert _state(session_factory)["schedule"] == [("consumer", "s3://b/a"),
                                                   ("consumer", "s3://b/c")]
    # the alias is gone from its schedule: so is what it resolved to
    _sync(session_factory, *_dags([c], [a, c]), now=NOW + timedelta(minutes=2))
    assert _state(session_factory)["schedule"] == [("consumer", "s3://b/c")]
