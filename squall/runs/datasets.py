"""Recording dataset changes: one :class:`DatasetEvent` and the consumer DAGs' queue rows.

Called in the transaction that records a producing task's success (so an event exists exactly
when the success does) and by the API's ``POST /datasets/events`` (an external change). The
scheduler turns the queue rows (``dataset_dag_run_queue``) into dataset-triggered runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from squall.common.db import is_postgres
from squall.common.models import (
    DagModel,
    DagScheduleDatasetAliasReference,
    DagScheduleDatasetReference,
    DatasetAliasModel,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    TaskInstanceKey,
    dataset_alias_dataset,
    utcnow,
)
from squall.common.wakeup import notify_scheduler
from squall.sdk.datasets.events import DatasetEventSpec

log = logging.getLogger(__name__)

#: how the payload of the scheduler wake-up an event that queued a run sends begins
DATASET_NOTICE = "dataset "


def record_dataset_event(
    session: Session,
    *,
    uri: str,
    extra: dict[str, Any] | None = None,
    source: TaskInstanceKey | None = None,
    try_number: int | None = None,
    alias_names: Iterable[str] = (),
    timestamp: datetime | None = None,
) -> DatasetEvent | None:
    """Record that the dataset ``uri`` changed, and queue it for each active, unpaused DAG
    whose schedule names the dataset (or one of ``alias_names``, which are linked to it).

    When a DAG was queued, wakes the schedulers as the transaction commits
    (:func:`~squall.common.wakeup.notify_scheduler`), so the consumer's run does not wait
    out their idle sleep.

    Returns ``None`` (and logs a warning) when no DAG file names the dataset, as Airflow does,
    or when this try already recorded an event for it (a repeated outcome write).
    """
    dataset = session.scalars(select(DatasetModel).where(DatasetModel.uri == uri)).first()
    if dataset is None:
        log.warning("dataset %s is not known (no DAG file names it): no event recorded", uri)
        return None
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    now = timestamp or utcnow()
    aliases = sorted(set(alias_names))
    values: dict[str, Any] = {"dataset_id": dataset.id, "extra": extra or {}, "timestamp": now,
                              "source_alias_names": aliases or None}
    if source is not None:
        values.update(source_dag_id=source.dag_id, source_task_id=source.task_id,
                      source_run_id=source.run_id, source_map_index=source.map_index,
                      source_try_number=try_number)
    event_id = session.execute(
        insert(DatasetEvent).values(**values).on_conflict_do_nothing()
        .returning(DatasetEvent.id)).scalar()
    if event_id is None:
        return None
    alias_ids: list[int] = []
    for name in aliases:
        alias_id = session.scalar(select(DatasetAliasModel.id)
                                  .where(DatasetAliasModel.name == name))
        if alias_id is None:
            session.execute(insert(DatasetAliasModel).values(name=name).on_conflict_do_nothing())
            alias_id = session.scalar(select(DatasetAliasModel.id)
                                      .where(DatasetAliasModel.name == name))
        assert alias_id is not None
        alias_ids.append(alias_id)
        session.execute(insert(dataset_alias_dataset)
                        .values(alias_id=alias_id, dataset_id=dataset.id)
                        .on_conflict_do_nothing())
    if alias_ids:
        # the alias's consumers now consume this dataset: Airflow reparses their files at
        # once (register_dataset_change's priority parsing request) and DAG.bulk_write_to_db
        # references the datasets an alias resolved to (_DatasetAliasCondition.iter_datasets)
        for dag_id in sorted(set(session.scalars(
                select(DagScheduleDatasetAliasReference.dag_id)
                .where(DagScheduleDatasetAliasReference.alias_id.in_(alias_ids))))):
            session.execute(insert(DagScheduleDatasetReference)
                            .values(dataset_id=dataset.id, dag_id=dag_id, created_at=now)
                            .on_conflict_do_nothing())
    consumers = set(session.scalars(
        select(DagScheduleDatasetReference.dag_id)
        .join(DagModel, DagModel.dag_id == DagScheduleDatasetReference.dag_id)
        .where(DagScheduleDatasetReference.dataset_id == dataset.id,
               DagModel.is_active.is_(True), DagModel.is_paused.is_(False))))
    if alias_ids:
        consumers |= set(session.scalars(
            select(DagScheduleDatasetAliasReference.dag_id)
            .join(DagModel, DagModel.dag_id == DagScheduleDatasetAliasReference.dag_id)
            .where(DagScheduleDatasetAliasReference.alias_id.in_(alias_ids),
                   DagModel.is_active.is_(True), DagModel.is_paused.is_(False))))
    for dag_id in sorted(consumers):
        session.execute(insert(DatasetDagRunQueue)
                        .values(dataset_id=dataset.id, target_dag_id=dag_id, created_at=now)
                        .on_conflict_do_nothing())
    if consumers:
        # the schedulers look at the queue as soon as this transaction commits
        notify_scheduler(session, f"{DATASET_NOTICE}{uri}")
    return session.get(DatasetEvent, event_id)


def record_try_events(session: Session, key: TaskInstanceKey, try_number: int,
                      events: Sequence[DatasetEventSpec]) -> int:
    """Record the dataset events of a successful try (called in the transaction of its
    outcome, :func:`squall.execution.runner.write_outcome`); how many were recorded.

    An outlet dataset no DAG file names gets no event (a warning, as Airflow's dataset
    manager); a dataset attached to an outlet alias is created if it is missing, as Airflow's
    ``_register_dataset_changes`` does.
    """
    recorded = 0
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    for event in events:
        if event.alias_names:
            created = session.execute(
                insert(DatasetModel).values(uri=event.uri, extra={}, is_orphaned=False)
                .on_conflict_do_nothing().returning(DatasetModel.id)).scalar()
            if created is not None:
                log.warning("dataset %s attached to alias(es) %s did not exist: created it",
                            event.uri, ", ".join(event.alias_names))
        row = record_dataset_event(session, uri=event.uri, extra=event.extra, source=key,
                                   try_number=try_number, alias_names=event.alias_names)
        if row is not None:
            recorded += 1
            log.info("TaskInstance %s: try %d recorded a dataset event for %s%s", key,
                     try_number, event.uri,
                     f" through alias(es) {', '.join(event.alias_names)}"
                     if event.alias_names else "")
    return recorded
