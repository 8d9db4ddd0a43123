"""Dataset rows for tests of what reads them (the API, the CLI, the UI): producer and
consumer DAGs with their references, written straight to the tables as the DAG processor's
sync writes them, events recorded by :func:`squall.runs.datasets.record_dataset_event`, and
dataset-triggered runs linked to the events they were created from.

A stand-in until the DAG processor's dataset sync (issue 25, ds-authoring) and the
scheduler's dataset-triggered runs (ds-scheduling) land: tests that need real parsing and
scheduling use a cluster instead."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from squall.common.db import SessionFactory, session_scope
from squall.common.models import (
    DagModel,
    DagRun,
    DagScheduleDatasetAliasReference,
    DagScheduleDatasetReference,
    DatasetAliasModel,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    TaskInstanceKey,
    TaskOutletDatasetReference,
    dagrun_dataset_event,
)
from squall.common.state import DagRunState, DagRunType
from squall.runs.datasets import record_dataset_event


def dag(session: Session, dag_id: str, *, expression: Any = None,
        paused: bool = False, fileloc: str | None = None) -> DagModel:
    """The DAG's row (made when missing), with the dataset expression of its schedule."""
    row = session.get(DagModel, dag_id)
    if row is None:
        row = DagModel(dag_id=dag_id, fileloc=fileloc or f"/dags/{dag_id}.py", is_paused=paused,
                       schedule="Dataset" if expression is not None else None)
        session.add(row)
    if expression is not None:
        row.dataset_expression = expression
    session.flush()
    return row


def dataset(session: Session, uri: str, extra: dict[str, Any] | None = None) -> DatasetModel:
    row = session.scalars(select(DatasetModel).where(DatasetModel.uri == uri)).first()
    if row is None:
        row = DatasetModel(uri=uri, extra=extra or {})
        session.add(row)
        session.flush()
    return row


def producer(session: Session, dag_id: str, task_id: str, uris: Iterable[str], *,
             fileloc: str | None = None) -> None:
    """Task ``dag_id.task_id`` lists ``uris`` in its outlets."""
    dag(session, dag_id, fileloc=fileloc)
    for uri in uris:
        session.add(TaskOutletDatasetReference(dataset_id=dataset(session, uri).id,
                                               dag_id=dag_id, task_id=task_id))
    session.flush()


def _uris(expression: Any) -> list[str]:
    if isinstance(expression, str):
        return [expression]
    if isinstance(expression, dict):
        return [u for key in ("all", "any") for e in expression.get(key, []) for u in _uris(e)]
    return []


def _aliases(expression: Any) -> list[str]:
    if isinstance(expression, dict):
        if "alias" in expression:
            return [expression["alias"]]
        return [a for key in ("all", "any") for e in expression.get(key, [])
                for a in _aliases(e)]
    return []


def consumer(session: Session, dag_id: str, expression: Any, *,
             paused: bool = False, fileloc: str | None = None) -> None:
    """DAG ``dag_id`` is scheduled on ``expression`` (Airflow's serialized form: a URI,
    ``{"all": [...]}``, ``{"any": [...]}``, ``{"alias": name}``), with a reference to each
    dataset and alias it names."""
    dag(session, dag_id, expression=expression, paused=paused, fileloc=fileloc)
    for uri in dict.fromkeys(_uris(expression)):
        session.add(DagScheduleDatasetReference(dataset_id=dataset(session, uri).id,
                                                dag_id=dag_id))
    for name in dict.fromkeys(_aliases(expression)):
        alias_id = session.scalar(select(DatasetAliasModel.id)
                                  .where(DatasetAliasModel.name == name))
        if alias_id is None:
            alias = DatasetAliasModel(name=name)
            session.add(alias)
            session.flush()
            alias_id = alias.id
        session.add(DagScheduleDatasetAliasReference(alias_id=alias_id, dag_id=dag_id))
    session.flush()


def event(session: Session, uri: str, *, source: TaskInstanceKey | None = None,
          extra: dict[str, Any] | None = None, alias_names: Sequence[str] = (),
          timestamp: datetime | None = None, try_number: int = 1) -> DatasetEvent:
    """An event of ``uri`` (by ``source``'s successful try, or from outside), queued for
    its consumers as a producer's success queues it."""
    recorded = record_dataset_event(session, uri=uri, extra=extra, source=source,
                                    try_number=try_number if source else None,
                                    alias_names=alias_names, timestamp=timestamp)
    assert recorded is not None, f"no event recorded for {uri}"
    return recorded


def triggered_run(session: Session, dag_id: str, run_id: str, events: Sequence[DatasetEvent],
                  *, when: datetime, state: str = DagRunState.QUEUED) -> DagRun:
    """A dataset-triggered run of ``dag_id`` created from ``events``."""
    run = DagRun(dag_id=dag_id, run_id=run_id, logical_date=when, state=state,
                 run_type=DagRunType.DATASET_TRIGGERED, data_interval_start=when,
                 data_interval_end=when)
    session.add(run)
    session.flush()
    if events:
        session.execute(insert(dagrun_dataset_event), [
            {"dag_run_id": run.id, "event_id": e.id} for e in events])
    return run


RAW = "s3://lake/raw/orders.csv"
CLEAN = "s3://lake/clean/orders.parquet"
REPORT = "file:///srv/reports/daily.html"
UNUSED = "postgres://warehouse/public/unused"
START = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class World:
    """The ids :func:`build_world` made: ``RAW``'s and ``CLEAN``'s events and the run of
    ``report_all`` created from ``RAW``'s."""

    raw_event: int
    clean_event: int
    run_id: str


def build_world(factory: SessionFactory, fileloc: str | None = None) -> World:
    """Two producers and three consumers:

    * ``ingest``: ``extract`` writes ``RAW``; ``transform`` writes ``CLEAN``;
    * ``publish``: ``render`` writes ``REPORT``;
    * ``report_all``: scheduled on ``RAW & CLEAN``; a run of it (``dataset_triggered__1``)
      was created from ``RAW``'s first event; ``CLEAN``'s event is queued for it since;
    * ``report_any``: ``RAW | REPORT``, paused (queues nothing);
    * ``by_alias``: ``DatasetAlias("lake-clean")``, which ``CLEAN``'s event resolved;
    * ``UNUSED``: named by no DAG any more (no producer, no consumer): orphaned.

    ``fileloc``: the DAGs' file (default ``/dags/<dag_id>.py``); in a cluster, a file of
    its DAG folder that fails to import keeps them active (the DAG processor deactivates
    the DAGs of a file that is gone, and keeps those of a broken one).
    """
    at = {"fileloc": fileloc}
    with session_scope(factory) as session:
        producer(session, "ingest", "extract", [RAW], **at)
        producer(session, "ingest", "transform", [CLEAN], **at)
        producer(session, "publish", "render", [REPORT], **at)
        consumer(session, "report_all", {"all": [RAW, CLEAN]}, **at)
        consumer(session, "report_any", {"any": [RAW, REPORT]}, paused=True, **at)
        consumer(session, "by_alias", {"alias": "lake-clean"}, **at)
        dataset(session, UNUSED, extra={"owner": "nobody"}).is_orphaned = True
        session.add(DagRun(dag_id="ingest", run_id="manual__1", logical_date=START,
                           state=DagRunState.SUCCESS, run_type=DagRunType.MANUAL))
        raw = event(session, RAW, source=TaskInstanceKey("ingest", "extract", "manual__1", -1),
                    extra={"rows": 10}, timestamp=START.replace(hour=1))
        # the scheduler took RAW's event for a run of report_all
        session.execute(delete(DatasetDagRunQueue)
                        .where(DatasetDagRunQueue.target_dag_id == "report_all"))
        run = triggered_run(session, "report_all", "dataset_triggered__1", [raw],
                            when=START.replace(hour=2))
        clean = event(session, CLEAN,
                      source=TaskInstanceKey("ingest", "transform", "manual__1", -1),
                      extra={"format": "parquet"}, alias_names=["lake-clean"],
                      timestamp=START.replace(hour=3))
        return World(raw_event=raw.id, clean_event=clean.id, run_id=run.run_id)
