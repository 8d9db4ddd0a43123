"""Reading the dataset tables for people: each dataset with its producers, consumers and
aliases, its events with the runs they created, a consumer's queued events, and what a
consumer DAG's schedule waits for. The REST API (``/api/v1/datasets...``), the CLI
(``squall datasets``) and the web UI's datasets page all read through here, so they say
the same thing.

The dictionaries are Airflow 2.10's REST API shapes (``DatasetSchema``,
``DatasetEventSchema``, ``QueuedEventSchema`` of ``airflow/api_connexion/schemas/
dataset_schema.py``), dates in ISO 8601 with their UTC offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from squall.common.models import (
    DagRun,
    DagScheduleDatasetAliasReference,
    DagScheduleDatasetReference,
    DatasetAliasModel,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    TaskOutletDatasetReference,
    dagrun_dataset_event,
    dataset_alias_dataset,
)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def find_dataset(session: Session, uri: str) -> DatasetModel | None:
    return session.scalars(select(DatasetModel).where(DatasetModel.uri == uri)).first()


def select_datasets(*, uri_pattern: str | None = None,
                    dag_ids: Sequence[str] | None = None) -> Select[Any]:
    """Datasets whose URI holds ``uri_pattern`` (case-insensitive), and that a DAG of
    ``dag_ids`` consumes or produces (Airflow's ``get_datasets`` filters)."""
    stmt = select(DatasetModel)
    if dag_ids:
        consumed = select(DagScheduleDatasetReference.dataset_id).where(
            DagScheduleDatasetReference.dag_id.in_(list(dag_ids)))
        produced = select(TaskOutletDatasetReference.dataset_id).where(
            TaskOutletDatasetReference.dag_id.in_(list(dag_ids)))
        stmt = stmt.where(or_(DatasetModel.id.in_(consumed), DatasetModel.id.in_(produced)))
    if uri_pattern:
        stmt = stmt.where(DatasetModel.uri.ilike(f"%{_escape_like(uri_pattern)}%",
                                                 escape="\\"))
    return stmt


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def datasets_json(session: Session, rows: Sequence[DatasetModel]) -> list[dict[str, Any]]:
    """Each dataset as Airflow's ``Dataset``: with ``producing_tasks`` (the tasks whose
    outlets name it), ``consuming_dags`` (the DAGs whose schedule names it) and
    ``aliases`` (the aliases resolved to it), in three queries for the lot."""
    ids = [r.id for r in rows]
    producers: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    consumers: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    aliases: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        for ref in session.scalars(select(TaskOutletDatasetReference)
                                   .where(TaskOutletDatasetReference.dataset_id.in_(ids))
                                   .order_by(TaskOutletDatasetReference.dag_id,
                                             TaskOutletDatasetReference.task_id)):
            # the reference rows have no updated_at: they are made, never changed
            producers[ref.dataset_id].append({
                "dag_id": ref.dag_id, "task_id": ref.task_id,
                "created_at": iso(ref.created_at), "updated_at": iso(ref.created_at)})
        for cref in session.scalars(select(DagScheduleDatasetReference)
                                    .where(DagScheduleDatasetReference.dataset_id.in_(ids))
                                    .order_by(DagScheduleDatasetReference.dag_id)):
            consumers[cref.dataset_id].append({
                "dag_id": cref.dag_id, "created_at": iso(cref.created_at),
                "updated_at": iso(cref.created_at)})
        for dataset_id, alias_id, name in session.execute(
                select(dataset_alias_dataset.c.dataset_id, DatasetAliasModel.id,
                       DatasetAliasModel.name)
                .join(DatasetAliasModel, DatasetAliasModel.id == dataset_alias_dataset.c.alias_id)
                .where(dataset_alias_dataset.c.dataset_id.in_(ids))
                .order_by(DatasetAliasModel.name)):
            aliases[dataset_id].append({"id": alias_id, "name": name})
    return [{"id": r.id, "uri": r.uri, "extra": r.extra if r.extra is not None else {},
             "created_at": iso(r.created_at), "updated_at": iso(r.updated_at),
             "producing_tasks": producers[r.id], "consuming_dags": consumers[r.id],
             "aliases": aliases[r.id]} for r in rows]


EVENT_ORDER = {"source_dag_id": DatasetEvent.source_dag_id,
               "source_task_id": DatasetEvent.source_task_id,
               "source_run_id": DatasetEvent.source_run_id,
               "source_map_index": DatasetEvent.source_map_index,
               "timestamp": DatasetEvent.timestamp}


def select_events(*, dataset_id: int | None = None, source_dag_id: str | None = None,
                  source_task_id: str | None = None, source_run_id: str | None = None,
                  source_map_index: int | None = None) -> Select[Any]:
    """Events, filtered as Airflow's ``get_dataset_events`` filters them."""
    stmt = select(DatasetEvent)
    if dataset_id is not None:
        stmt = stmt.where(DatasetEvent.dataset_id == dataset_id)
    if source_dag_id:
        stmt = stmt.where(DatasetEvent.source_dag_id == source_dag_id)
    if source_task_id:
        stmt = stmt.where(DatasetEvent.source_task_id == source_task_id)
    if source_run_id:
        stmt = stmt.where(DatasetEvent.source_run_id == source_run_id)
    if source_map_index is not None:
        stmt = stmt.where(DatasetEvent.source_map_index == source_map_index)
    return stmt


def events_json(session: Session, events: Sequence[DatasetEvent]) -> list[dict[str, Any]]:
    """Each event as Airflow's ``DatasetEvent``, with its dataset's URI and the runs it
    created (``created_dagruns``, Airflow's ``BasicDAGRunSchema``: ``dag_run_id``,
    ``logical_date``...), in two queries for the lot."""
    ids = [e.id for e in events]
    uris: dict[int, str] = {}
    created: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        dataset_ids = sorted({e.dataset_id for e in events})
        uris = {i: u for i, u in session.execute(select(DatasetModel.id, DatasetModel.uri)
                                                 .where(DatasetModel.id.in_(dataset_ids)))}
        for event_id, run in session.execute(
                select(dagrun_dataset_event.c.event_id, DagRun)
                .join(DagRun, DagRun.id == dagrun_dataset_event.c.dag_run_id)
                .where(dagrun_dataset_event.c.event_id.in_(ids))
                .order_by(DagRun.logical_date, DagRun.id)):
            created[event_id].append({
                "dag_run_id": run.run_id, "dag_id": run.dag_id,
                "logical_date": iso(run.logical_date), "start_date": iso(run.start_date),
                "end_date": iso(run.end_date), "state": run.state,
                "data_interval_start": iso(run.data_interval_start),
                "data_interval_end": iso(run.data_interval_end)})
    return [{"id": e.id, "dataset_id": e.dataset_id, "dataset_uri": uris.get(e.dataset_id, ""),
             "extra": e.extra if e.extra is not None else {},
             "source_task_id": e.source_task_id, "source_dag_id": e.source_dag_id,
             "source_run_id": e.source_run_id, "source_map_index": e.source_map_index,
             "created_dagruns": created[e.id], "timestamp": iso(e.timestamp)}
            for e in events]


def run_events(session: Session, dag_id: str, run_id: str) -> list[DatasetEvent]:
    """The events a dataset-triggered run was created from (Airflow's
    ``DagRun.consumed_dataset_events``), oldest first."""
    return list(session.scalars(
        select(DatasetEvent)
        .join(dagrun_dataset_event, dagrun_dataset_event.c.event_id == DatasetEvent.id)
        .join(DagRun, DagRun.id == dagrun_dataset_event.c.dag_run_id)
        .where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        .order_by(DatasetEvent.timestamp, DatasetEvent.id)))


def queued_filter(*, dag_id: str | None = None, uri: str | None = None,
                  before: datetime | None = None) -> list[Any]:
    """The conditions on ``dataset_dag_run_queue`` of Airflow's queued-event endpoints
    (``_generate_queued_event_where_clause``)."""
    where: list[Any] = []
    if dag_id is not None:
        where.append(DatasetDagRunQueue.target_dag_id == dag_id)
    if uri is not None:
        where.append(DatasetDagRunQueue.dataset_id.in_(
            select(DatasetModel.id).where(DatasetModel.uri == uri)))
    if before is not None:
        where.append(DatasetDagRunQueue.created_at < before)
    return where


def queued_events(session: Session, *, dag_id: str | None = None, uri: str | None = None,
                  before: datetime | None = None) -> list[dict[str, Any]]:
    """The queued events (a consumer's events no run has taken yet) as Airflow's
    ``QueuedEvent``: ``{"uri", "dag_id", "created_at"}``."""
    rows = session.execute(
        select(DatasetDagRunQueue.target_dag_id, DatasetModel.uri,
               DatasetDagRunQueue.created_at)
        .join(DatasetModel, DatasetModel.id == DatasetDagRunQueue.dataset_id)
        .where(*queued_filter(dag_id=dag_id, uri=uri, before=before))
        .order_by(DatasetDagRunQueue.target_dag_id, DatasetModel.uri))
    return [{"uri": uri_, "dag_id": dag, "created_at": iso(when)} for dag, uri_, when in rows]


def last_events(session: Session, dataset_ids: Sequence[int]) -> dict[int, DatasetEvent]:
    """The newest event of each of these datasets (that has one)."""
    return {i: events[0] for i, events in recent_events(session, dataset_ids, 1).items()
            if events}


def waiting_for(session: Session, dag_id: str,
                expression: Any) -> dict[str, Any] | None:
    """What the consumer DAG ``dag_id`` waits for: its schedule's dataset expression
    (Airflow's serialized form: a URI, ``{"all": [...]}``, ``{"any": [...]}`` or
    ``{"alias": name}``) as a tree whose leaves say whether an event of that dataset is
    queued for the DAG; ``satisfied`` on each node says whether that part of the
    condition holds now (a run is due when the root's does). ``None`` for a DAG
    without one.

    Leaves: ``{"kind": "dataset", "uri", "queued", "queued_at", "satisfied"}``; an alias:
    ``{"kind": "alias", "name", "datasets": [leaf, ...], "satisfied"}`` (any of its resolved
    datasets queued); ``{"kind": "all" | "any", "children": [...], "satisfied"}``."""
    if expression is None or expression == {}:
        return None
    queued: dict[str, datetime] = {uri: when for uri, when in session.execute(
        select(DatasetModel.uri, DatasetDagRunQueue.created_at)
        .join(DatasetModel, DatasetModel.id == DatasetDagRunQueue.dataset_id)
        .where(DatasetDagRunQueue.target_dag_id == dag_id))}
    alias_names = _alias_names(expression)
    resolved: dict[str, list[str]] = {name: [] for name in alias_names}
    if alias_names:
        for name, uri in session.execute(
                select(DatasetAliasModel.name, DatasetModel.uri)
                .join(dataset_alias_dataset,
                      dataset_alias_dataset.c.alias_id == DatasetAliasModel.id)
                .join(DatasetModel, DatasetModel.id == dataset_alias_dataset.c.dataset_id)
                .where(DatasetAliasModel.name.in_(sorted(alias_names)))
                .order_by(DatasetModel.uri)):
            resolved[name].append(uri)
    return _node(expression, queued, resolved)


def _alias_names(expression: Any) -> set[str]:
    if isinstance(expression, dict):
        if "alias" in expression:
            return {str(expression["alias"])}
        return set().union(*(_alias_names(e) for key in ("all", "any")
                             for e in expression.get(key, [])))
    return set()


def _leaf(uri: str, queued: dict[str, datetime]) -> dict[str, Any]:
    when = queued.get(uri)
    return {"kind": "dataset", "uri": uri, "queued": when is not None,
            "queued_at": iso(when), "satisfied": when is not None}


def _node(expression: Any, queued: dict[str, datetime],
          resolved: dict[str, list[str]]) -> dict[str, Any]:
    if isinstance(expression, str):
        return _leaf(expression, queued)
    if isinstance(expression, dict):
        if "alias" in expression:
            name = str(expression["alias"])
            leaves = [_leaf(uri, queued) for uri in resolved.get(name, [])]
            return {"kind": "alias", "name": name, "datasets": leaves,
                    "satisfied": any(leaf["satisfied"] for leaf in leaves)}
        for kind, combine in (("all", all), ("any", any)):
            if kind in expression:
                children = [_node(e, queued, resolved) for e in expression[kind]]
                return {"kind": kind, "children": children,
                        "satisfied": combine(c["satisfied"] for c in children)}
    return {"kind": "unknown", "text": str(expression), "satisfied": False}


def consumers_of(session: Session, dataset_ids: Sequence[int]) -> dict[int, list[str]]:
    """The DAGs whose schedule names each dataset, directly or through an alias resolved
    to it (an alias's consumers wait for whatever it resolves to)."""
    out: dict[int, set[str]] = {i: set() for i in dataset_ids}
    if not dataset_ids:
        return {}
    for dataset_id, dag_id in session.execute(
            select(DagScheduleDatasetReference.dataset_id, DagScheduleDatasetReference.dag_id)
            .where(DagScheduleDatasetReference.dataset_id.in_(list(dataset_ids)))):
        out[dataset_id].add(dag_id)
    for dataset_id, dag_id in session.execute(
            select(dataset_alias_dataset.c.dataset_id, DagScheduleDatasetAliasReference.dag_id)
            .join(DagScheduleDatasetAliasReference, and_(
                DagScheduleDatasetAliasReference.alias_id == dataset_alias_dataset.c.alias_id))
            .where(dataset_alias_dataset.c.dataset_id.in_(list(dataset_ids)))):
        out[dataset_id].add(dag_id)
    return {i: sorted(dags) for i, dags in out.items()}


def recent_events(session: Session, dataset_ids: Sequence[int],
                  per_dataset: int) -> dict[int, list[DatasetEvent]]:
    """The newest ``per_dataset`` events of each dataset, newest first (one query)."""
    if not dataset_ids:
        return {}
    rank = func.row_number().over(
        partition_by=DatasetEvent.dataset_id,
        order_by=(DatasetEvent.timestamp.desc(), DatasetEvent.id.desc())).label("rank")
    ranked = (select(DatasetEvent.id, rank)
              .where(DatasetEvent.dataset_id.in_(list(dataset_ids))).subquery())
    events = session.scalars(
        select(DatasetEvent).join(ranked, ranked.c.id == DatasetEvent.id)
        .where(ranked.c.rank <= per_dataset)
        .order_by(DatasetEvent.timestamp.desc(), DatasetEvent.id.desc()))
    out: dict[int, list[DatasetEvent]] = {i: [] for i in dataset_ids}
    for event in events:
        out[event.dataset_id].append(event)
    return out
