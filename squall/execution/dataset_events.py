"""A try's dataset events: those its success records (:func:`success_dataset_events`,
written with its outcome through a :data:`DatasetEventWriter`, ADR 27), and those it reads:
its inlets' (``inlet_events``) and its run's triggering events
(``triggering_dataset_events``), read from the database on first use
(:mod:`squall.sdk.datasets.events` has the accessors and the values they hold)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.db import SessionFactory, session_scope
from squall.common.models import (
    DagRun,
    DatasetEvent,
    DatasetModel,
    TaskInstanceKey,
    dagrun_dataset_event,
)
from squall.sdk.datasets.events import (
    DatasetEventSpec,
    DatasetEventView,
    DatasetRef,
    EventReader,
    InletEventsAccessors,
    SourceDagRunView,
    TriggeringDatasetEvents,
    outlet_event_specs,
)
from squall.sdk.operators.base import BaseOperator, Context

log = logging.getLogger(__name__)

__all__ = ["DatasetEventWriter", "inlet_events", "read_events", "success_dataset_events",
           "triggering_dataset_events"]

#: records a successful try's dataset events in the session of its outcome's
#: compare-and-set (:func:`squall.runs.datasets.record_try_events`, given by the process
#: that writes outcomes: the layers above this one own the dataset queue)
DatasetEventWriter = Callable[[Session, TaskInstanceKey, int, Sequence[DatasetEventSpec]],
                              object]


def success_dataset_events(task: BaseOperator,
                           context: Context) -> tuple[DatasetEventSpec, ...]:
    """The dataset events the try's success records (Airflow 2.10's
    ``_register_dataset_changes``); raises ``TypeError`` (the try fails) when an ``extra``
    cannot be stored as JSON."""
    events = outlet_event_specs(task.outlets, context.get("outlet_events"))
    for event in events:
        try:
            json.dumps(event.extra)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the extra of the dataset event for {event.uri} cannot be stored "
                            f"as JSON: {exc}") from exc
    return events


def read_events(session: Session, stmt: Any) -> list[DatasetEventView]:
    """The events ``stmt`` (a select of ``DatasetEvent, DatasetModel``) finds, as values,
    each with its dataset and its source run."""
    rows = session.execute(stmt).all()
    run_keys = {(e.source_dag_id, e.source_run_id) for e, _ in rows
                if e.source_dag_id and e.source_run_id}
    runs: dict[tuple[str, str], SourceDagRunView] = {}
    for dag_id, run_id in sorted(run_keys):
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id,
                                                   DagRun.run_id == run_id)).first()
        if run is not None:
            runs[(dag_id, run_id)] = SourceDagRunView(
                dag_id=run.dag_id, run_id=run.run_id, run_type=run.run_type,
                logical_date=run.logical_date, data_interval_start=run.data_interval_start,
                data_interval_end=run.data_interval_end, state=run.state, conf=run.conf)
    return [
        DatasetEventView(
            id=event.id, dataset_id=event.dataset_id, uri=dataset.uri,
            extra=dict(event.extra or {}), source_dag_id=event.source_dag_id,
            source_task_id=event.source_task_id, source_run_id=event.source_run_id,
            source_map_index=event.source_map_index, timestamp=event.timestamp,
            source_aliases=tuple(event.source_alias_names or ()),
            dataset=DatasetRef(id=dataset.id, uri=dataset.uri, extra=dataset.extra),
            source_dag_run=runs.get((event.source_dag_id or "", event.source_run_id or "")),
        )
        for event, dataset in rows
    ]


def _event_reader(factory: SessionFactory) -> EventReader:
    def read(kind: str, key: str) -> list[DatasetEventView]:
        stmt = (select(DatasetEvent, DatasetModel)
                .join(DatasetModel, DatasetModel.id == DatasetEvent.dataset_id)
                .order_by(DatasetEvent.timestamp, DatasetEvent.id))
        with session_scope(factory) as session:
            if kind == "dataset":
                return read_events(session, stmt.where(DatasetModel.uri == key))
            # an alias's events: those a producer attached through it
            events = read_events(session, stmt.where(DatasetEvent.source_alias_names.is_not(None)))
            return [e for e in events if key in e.source_aliases]
    return read


def inlet_events(inlets: Sequence[Any], factory: SessionFactory) -> InletEventsAccessors:
    """The ``inlet_events`` of a task with ``inlets``."""
    return InletEventsAccessors(inlets, _event_reader(factory))


def triggering_dataset_events(dag_run: DagRun,
                              factory: SessionFactory) -> TriggeringDatasetEvents:
    """The ``triggering_dataset_events`` of ``dag_run``: the events linked to it in
    ``dagrun_dataset_event`` (the scheduler links them when it creates a dataset-triggered
    run), by URI, oldest first."""
    run_pk = getattr(dag_run, "id", None)

    def load() -> list[DatasetEventView]:
        if run_pk is None:
            return []
        with session_scope(factory) as session:
            return read_events(session, (
                select(DatasetEvent, DatasetModel)
                .join(DatasetModel, DatasetModel.id == DatasetEvent.dataset_id)
                .join(dagrun_dataset_event, dagrun_dataset_event.c.event_id == DatasetEvent.id)
                .where(dagrun_dataset_event.c.dag_run_id == run_pk)
                .order_by(DatasetEvent.timestamp, DatasetEvent.id)))

    return TriggeringDatasetEvents(load)
