"""Recording the datasets DAG files name: ``dataset`` and ``dataset_alias`` rows, the
references of consumer DAGs' schedules and producer tasks' outlets, and orphaning (Airflow
2.10's ``DAG.bulk_write_to_db`` dataset part and the scheduler's
``_orphan_unreferenced_datasets``).

Called by :func:`squall.dag_processing.sync.sync_to_db`, in its transaction, for the DAGs
whose serialized form is new or changed (the schedule condition and the outlets are part of
it, so an unchanged DAG has the references it had).

* every URI of a schedule condition or of a task's outlets gets a ``dataset`` row (created
  with the ``extra`` the DAG file gave it; an existing row keeps its own, as Airflow);
  every alias of either a ``dataset_alias`` row. Inlets name no rows, as in Airflow;
* a DAG's ``dag_schedule_dataset_reference`` / ``dag_schedule_dataset_alias_reference``
  rows and its tasks' ``task_outlet_dataset_reference`` rows become exactly what the DAG
  names: new ones added, those that went away deleted. A schedule alias names the datasets
  it has resolved to as well (Airflow's ``_DatasetAliasCondition.iter_datasets``; the
  reference is first written when the alias resolves, by
  :func:`squall.runs.datasets.record_dataset_event`);
* a dataset that no schedule and no outlet references any more is marked ``is_orphaned``
  (its events are kept); one that is named again is un-orphaned.

References of a DAG that became inactive are kept, as Airflow keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from squall.common.db import is_postgres
from squall.common.models import (
    DagScheduleDatasetAliasReference,
    DagScheduleDatasetReference,
    DatasetAliasModel,
    DatasetModel,
    TaskOutletDatasetReference,
    dataset_alias_dataset,
)
from squall.sdk.datasets import Dataset, DatasetAlias, decode_condition

log = logging.getLogger(__name__)

__all__ = ["DagDatasets", "dag_datasets", "resolved_aliases", "sync_datasets"]


@dataclass
class DagDatasets:
    """What one serialized DAG names."""

    #: the schedule condition's ``as_expression()`` (``dag.dataset_expression``), or None
    expression: Any = None
    #: URI -> extra, of the schedule condition
    schedule_uris: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    schedule_aliases: list[str] = field(default_factory=list)
    #: task id -> URI -> extra, of the tasks' outlets
    outlets: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)
    outlet_aliases: list[str] = field(default_factory=list)


def _pairs(rows: Any) -> dict[Any, Any]:
    return {k: v for k, v in rows}


def dag_datasets(data: Mapping[str, Any]) -> DagDatasets:
    """The datasets a serialized DAG (:func:`~squall.dag_processing.serialization.serialize_dag`
    output) names."""
    d = data.get("dag") or {}
    out = DagDatasets()
    schedule = d.get("schedule") or {}
    if "condition" in schedule:
        condition = decode_condition(schedule["condition"])
        out.expression = condition.as_expression()
        out.schedule_uris = {uri: ds.extra for uri, ds in condition.iter_datasets()}
        out.schedule_aliases = _unique(a.name for a in condition.iter_dataset_aliases())
    aliases: list[str] = []
    for task in d.get("tasks") or ():
        uris: dict[str, dict[str, Any] | None] = {}
        for encoded in task.get("outlets") or ():
            obj = decode_condition(encoded)
            if isinstance(obj, Dataset):
                uris.setdefault(obj.uri, obj.extra)
            elif isinstance(obj, DatasetAlias):
                aliases.append(obj.name)
        if uris:
            out.outlets[str(task["task_id"])] = uris
    out.outlet_aliases = _unique(aliases)
    return out


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def sync_datasets(session: Session, dags: Mapping[str, DagDatasets]) -> None:
    """Write the dataset rows and references of ``dags`` (dag_id -> what it names), then
    orphan the datasets nothing references (see the module docstring). Flushes."""
    if dags:
        extras: dict[str, dict[str, Any] | None] = {}
        for named in dags.values():
            for uri, extra in named.schedule_uris.items():
                extras.setdefault(uri, extra)
            for uris in named.outlets.values():
                for uri, extra in uris.items():
                    extras.setdefault(uri, extra)
        dataset_ids = _upsert_datasets(session, extras)
        alias_ids = _upsert_aliases(session, {name for named in dags.values()
                                              for name in (*named.schedule_aliases,
                                                           *named.outlet_aliases)})
        resolved = _resolved_datasets(session, {alias_ids[a] for named in dags.values()
                                                for a in named.schedule_aliases})
        for dag_id, named in sorted(dags.items()):
            schedule_aliases = {alias_ids[a] for a in named.schedule_aliases}
            _reconcile_schedule(session, dag_id,
                                {dataset_ids[u] for u in named.schedule_uris}.union(
                                    *(resolved.get(a, set()) for a in schedule_aliases)),
                                schedule_aliases)
            _reconcile_outlets(session, dag_id, {(dataset_ids[u], task_id)
                                                 for task_id, uris in named.outlets.items()
                                                 for u in uris})
    _orphan_unreferenced(session)
    session.flush()


def _insert(session: Session) -> Any:
    return postgresql.insert if is_postgres(session) else sqlite.insert


def _upsert_datasets(session: Session,
                     extras: Mapping[str, dict[str, Any] | None]) -> dict[str, int]:
    """The id of each URI's ``dataset`` row, created where missing, un-orphaned."""
    if not extras:
        return {}
    uris = sorted(extras)
    ids = _pairs(session.execute(select(DatasetModel.uri, DatasetModel.id)
                                 .where(DatasetModel.uri.in_(uris))))
    missing = [uri for uri in uris if uri not in ids]
    if missing:
        session.execute(_insert(session)(DatasetModel).values(
            [{"uri": uri, "extra": extras[uri] or {}, "is_orphaned": False}
             for uri in missing]).on_conflict_do_nothing())
        ids = _pairs(session.execute(select(DatasetModel.uri, DatasetModel.id)
                                     .where(DatasetModel.uri.in_(uris))))
        log.info("datasets: recorded %d new dataset(s): %s", len(missing), ", ".join(missing))
    session.execute(update(DatasetModel)
                    .where(DatasetModel.uri.in_(uris), DatasetModel.is_orphaned.is_(True))
                    .values(is_orphaned=False))
    return ids


def _upsert_aliases(session: Session, names: set[str]) -> dict[str, int]:
    if not names:
        return {}
    wanted = sorted(names)
    ids = _pairs(session.execute(select(DatasetAliasModel.name, DatasetAliasModel.id)
                                 .where(DatasetAliasModel.name.in_(wanted))))
    missing = [name for name in wanted if name not in ids]
    if missing:
        session.execute(_insert(session)(DatasetAliasModel).values(
            [{"name": name} for name in missing]).on_conflict_do_nothing())
        ids = _pairs(session.execute(select(DatasetAliasModel.name, DatasetAliasModel.id)
                                     .where(DatasetAliasModel.name.in_(wanted))))
    return ids


def _resolved_datasets(session: Session, alias_ids: set[int]) -> dict[int, set[int]]:
    """alias id -> the ids of the datasets it resolved to (``dataset_alias_dataset``)."""
    resolved: dict[int, set[int]] = {}
    if alias_ids:
        for alias_id, dataset_id in session.execute(
                select(dataset_alias_dataset.c.alias_id, dataset_alias_dataset.c.dataset_id)
                .where(dataset_alias_dataset.c.alias_id.in_(sorted(alias_ids)))):
            resolved.setdefault(alias_id, set()).add(dataset_id)
    return resolved


def _reconcile_schedule(session: Session, dag_id: str, dataset_ids: set[int],
                        alias_ids: set[int]) -> None:
    stored = set(session.scalars(select(DagScheduleDatasetReference.dataset_id)
                                 .where(DagScheduleDatasetReference.dag_id == dag_id)))
    if stored - dataset_ids:
        session.execute(delete(DagScheduleDatasetReference).where(
            DagScheduleDatasetReference.dag_id == dag_id,
            DagScheduleDatasetReference.dataset_id.in_(sorted(stored - dataset_ids))))
    if dataset_ids - stored:
        # DO NOTHING: a worker may have added the reference of a dataset the DAG's alias
        # resolved to since the read (squall.runs.datasets.record_dataset_event)
        session.execute(_insert(session)(DagScheduleDatasetReference).values(
            [{"dag_id": dag_id, "dataset_id": dataset_id}
             for dataset_id in sorted(dataset_ids - stored)]).on_conflict_do_nothing())
    stored_aliases = set(session.scalars(
        select(DagScheduleDatasetAliasReference.alias_id)
        .where(DagScheduleDatasetAliasReference.dag_id == dag_id)))
    if stored_aliases - alias_ids:
        session.execute(delete(DagScheduleDatasetAliasReference).where(
            DagScheduleDatasetAliasReference.dag_id == dag_id,
            DagScheduleDatasetAliasReference.alias_id.in_(sorted(stored_aliases - alias_ids))))
    for alias_id in sorted(alias_ids - stored_aliases):
        session.add(DagScheduleDatasetAliasReference(dag_id=dag_id, alias_id=alias_id))


def _reconcile_outlets(session: Session, dag_id: str, wanted: set[tuple[int, str]]) -> None:
    stored = {(a, b) for a, b in session.execute(
        select(TaskOutletDatasetReference.dataset_id, TaskOutletDatasetReference.task_id)
        .where(TaskOutletDatasetReference.dag_id == dag_id))}
    for dataset_id, task_id in sorted(stored - wanted):
        session.execute(delete(TaskOutletDatasetReference).where(
            TaskOutletDatasetReference.dag_id == dag_id,
            TaskOutletDatasetReference.task_id == task_id,
            TaskOutletDatasetReference.dataset_id == dataset_id))
    for dataset_id, task_id in sorted(wanted - stored):
        session.add(TaskOutletDatasetReference(dag_id=dag_id, task_id=task_id,
                                               dataset_id=dataset_id))


def _orphan_unreferenced(session: Session) -> None:
    session.flush()  # the references added above count
    orphaned = session.execute(
        update(DatasetModel)
        .where(DatasetModel.is_orphaned.is_(False),
               DatasetModel.id.not_in(select(DagScheduleDatasetReference.dataset_id)),
               DatasetModel.id.not_in(select(TaskOutletDatasetReference.dataset_id)))
        .values(is_orphaned=True)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if orphaned:
        log.info("datasets: %d dataset(s) no DAG references any more marked orphaned",
                 orphaned)


def resolved_aliases(session: Session, names: Iterable[str]) -> bool:
    """Whether any of the aliases ``names`` has resolved to a dataset."""
    wanted = sorted(set(names))
    if not wanted:
        return False
    return session.scalar(
        select(dataset_alias_dataset.c.dataset_id)
        .join(DatasetAliasModel, DatasetAliasModel.id == dataset_alias_dataset.c.alias_id)
        .where(DatasetAliasModel.name.in_(wanted)).limit(1)) is not None
