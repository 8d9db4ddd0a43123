"""``/api/v1/datasets``: the datasets, their events and the consumers' queued events, as
Airflow 2.10's stable API serves them (``airflow/api_connexion/endpoints/
dataset_endpoint.py``; the run's ``upstreamDatasetEvents`` is ``dag_run_endpoint.py``'s).

* ``GET /datasets`` (``uri_pattern``, ``dag_ids``), ``GET /datasets/{uri}``,
  ``GET /datasets/events`` (``dataset_id``, ``source_*`` filters) and
  ``GET /dags/{dag_id}/dagRuns/{dag_run_id}/upstreamDatasetEvents``: ``viewer``.
* ``POST /datasets/events``: an event from outside (``op``, Airflow's ``User`` role may
  create dataset events). It is :func:`squall.runs.datasets.record_dataset_event` (which
  queues it for each consumer) with ``"from_rest_api": true`` in its extra, as Airflow
  marks it, and wakes the scheduler.
* ``GET`` / ``DELETE`` the queued events of a DAG (all, or of one dataset) and of a dataset
  (every DAG's), ``before`` a date: reading is ``viewer``, deleting ``op`` (Airflow's
  ``Op``). Each answers 404 when it finds none, as Airflow's.

A dataset URI in a path is URL-encoded (``s3%3A%2F%2Fbucket%2Fkey``, as Airflow's client
sends it); one left with its slashes works too.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import delete
from sqlalchemy.orm import Session

from squall.api.auth import Op, Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import ApiProblem
from squall.api.routes.dag_runs import DateQuery, aware, default_tz, get_run
from squall.api.schemas import ERRORS
from squall.api.schemas_datasets import (
    CreateDatasetEvent,
    Dataset,
    DatasetCollection,
    DatasetEventCollection,
    QueuedEvent,
    QueuedEventCollection,
)
from squall.api.schemas_datasets import DatasetEvent as DatasetEventOut
from squall.api.state import DB
from squall.common.models import DatasetDagRunQueue, DatasetEvent, DatasetModel
from squall.common.wakeup import notify_scheduler
from squall.runs import dataset_catalog as catalog
from squall.runs.datasets import record_dataset_event

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["Dataset"], responses=ERRORS)

_DATASET_ORDER = {"id": DatasetModel.id, "uri": DatasetModel.uri,
                  "created_at": DatasetModel.created_at, "updated_at": DatasetModel.updated_at}
_DELETED: dict[int | str, dict[str, Any]] = {204: {"description": "deleted"}}

def _dataset(session: Session, uri: str) -> DatasetModel:
    row = catalog.find_dataset(session, uri)
    if row is None:
        raise ApiProblem(404, f"The Dataset with uri: `{uri}` was not found",
                         title="Dataset not found")
    return row


def _before(request: Request, before: datetime | None) -> datetime | None:
    return aware(before, default_tz(request))


def _delete_queued(session: Session, where: list[Any]) -> int:
    """Delete the queued events matching ``where``: how many there were."""
    result = session.execute(delete(DatasetDagRunQueue).where(*where))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _queue_not_found(detail: str) -> ApiProblem:
    return ApiProblem(404, detail, title="Queue event not found")


# --------------------------------------------------------------------------- datasets


@router.get("/datasets", summary="List datasets", response_model=DatasetCollection)
def get_datasets(
    pages: Paged, session: DB, user: Viewer, order: OrderBy = None,
    uri_pattern: Annotated[str | None, Query(
        description="only datasets whose URI holds this text")] = None,
    dag_ids: Annotated[str | None, Query(
        description="DAG ids separated by commas: only the datasets they consume or "
        "produce")] = None,
) -> dict[str, Any]:
    wanted = [d.strip() for d in (dag_ids or "").split(",") if d.strip()]
    stmt = catalog.select_datasets(uri_pattern=uri_pattern, dag_ids=wanted)
    rows = list(session.scalars(pages.apply(
        order_by(stmt, order, _DATASET_ORDER, "id").order_by(DatasetModel.id))))
    # Airflow 2.10 counts every dataset here whatever the filters; Squall counts the
    # filtered ones, as its every other list does
    return {"datasets": catalog.datasets_json(session, rows),
            "total_entries": total(session, stmt)}


# the literal /datasets/events and /datasets/queuedEvent/... routes come before
# /datasets/{uri:path}, which would take them


@router.get("/datasets/events", summary="Get dataset events",
            response_model=DatasetEventCollection)
def get_dataset_events(
    pages: Paged, session: DB, user: Viewer, order: OrderBy = None,
    dataset_id: Annotated[int | None, Query(description="the dataset's id")] = None,
    source_dag_id: Annotated[str | None, Query(
        description="the DAG that updated the dataset")] = None,
    source_task_id: Annotated[str | None, Query(
        description="the task that updated the dataset")] = None,
    source_run_id: Annotated[str | None, Query(
        description="the DAG run that updated the dataset")] = None,
    source_map_index: Annotated[int | None, Query(
        description="the map index of the task instance that updated it")] = None,
) -> dict[str, Any]:
    stmt = catalog.select_events(dataset_id=dataset_id, source_dag_id=source_dag_id,
                                 source_task_id=source_task_id, source_run_id=source_run_id,
                                 source_map_index=source_map_index)
    ordered = order_by(stmt, order, catalog.EVENT_ORDER, "timestamp")
    events = list(session.scalars(pages.apply(ordered.order_by(DatasetEvent.id))))
    return {"dataset_events": catalog.events_json(session, events),
            "total_entries": total(session, stmt)}


@router.post("/datasets/events", summary="Create dataset event",
             response_model=DatasetEventOut)
def create_dataset_event(body: CreateDatasetEvent, session: DB,
                         user: Op) -> dict[str, Any]:
    if catalog.find_dataset(session, body.dataset_uri) is None:
        raise ApiProblem(404, f"Dataset with uri: '{body.dataset_uri}' not found",
                         title="Dataset not found")
    extra = {**(body.extra or {}), "from_rest_api": True}
    event = record_dataset_event(session, uri=body.dataset_uri, extra=extra)
    if event is None:  # the dataset was deleted meanwhile
        raise ApiProblem(404, f"Dataset with uri: '{body.dataset_uri}' not found",
                         title="Dataset not found")
    notify_scheduler(session, f"dataset {body.dataset_uri} changed (API)")
    log.info("api: %s recorded an event of dataset %s", user.username, body.dataset_uri)
    return catalog.events_json(session, [event])[0]


@router.get("/datasets/queuedEvent/{uri:path}",
            summary="Get queued Dataset events for a Dataset",
            response_model=QueuedEventCollection)
def get_dataset_queued_events(uri: str, request: Request, session: DB, user: Viewer,
                              before: DateQuery = None) -> dict[str, Any]:
    events = catalog.queued_events(session, uri=uri, before=_before(request, before))
    if not events:
        raise _queue_not_found(f"Queue event with dataset uri: `{uri}` was not found")
    return {"queued_events": events, "total_entries": len(events)}


@router.delete("/datasets/queuedEvent/{uri:path}",
               summary="Delete queued Dataset events for a Dataset", status_code=204,
               response_class=Response, responses=_DELETED)
def delete_dataset_queued_events(uri: str, request: Request, session: DB, user: Op,
                                 before: DateQuery = None) -> Response:
    where = catalog.queued_filter(uri=uri, before=_before(request, before))
    if not _delete_queued(session, where):
        raise _queue_not_found(f"Queue event with dataset uri: `{uri}` was not found")
    log.info("api: %s deleted the queued events of dataset %s", user.username, uri)
    return Response(status_code=204)


@router.get("/datasets/{uri:path}", summary="Get a dataset", response_model=Dataset)
def get_dataset(uri: str, session: DB, user: Viewer) -> dict[str, Any]:
    return catalog.datasets_json(session, [_dataset(session, uri)])[0]


# --------------------------------------------------------------------------- a DAG's queue


@router.get("/dags/{dag_id}/datasets/queuedEvent",
            summary="Get queued Dataset events for a DAG",
            response_model=QueuedEventCollection)
def get_dag_dataset_queued_events(dag_id: str, request: Request, session: DB, user: Viewer,
                                  before: DateQuery = None) -> dict[str, Any]:
    events = catalog.queued_events(session, dag_id=dag_id, before=_before(request, before))
    if not events:
        raise _queue_not_found(f"Queue event with dag_id: `{dag_id}` was not found")
    return {"queued_events": events, "total_entries": len(events)}


@router.delete("/dags/{dag_id}/datasets/queuedEvent",
               summary="Delete queued Dataset events for a DAG", status_code=204,
               response_class=Response, responses=_DELETED)
def delete_dag_dataset_queued_events(dag_id: str, request: Request, session: DB, user: Op,
                                     before: DateQuery = None) -> Response:
    where = catalog.queued_filter(dag_id=dag_id, before=_before(request, before))
    if not _delete_queued(session, where):
        raise _queue_not_found(f"Queue event with dag_id: `{dag_id}` was not found")
    log.info("api: %s deleted the queued dataset events of DAG %s", user.username, dag_id)
    return Response(status_code=204)


@router.get("/dags/{dag_id}/datasets/queuedEvent/{uri:path}",
            summary="Get a queued Dataset event for a DAG", response_model=QueuedEvent)
def get_dag_dataset_queued_event(dag_id: str, uri: str, request: Request, session: DB,
                                 user: Viewer, before: DateQuery = None) -> dict[str, Any]:
    events = catalog.queued_events(session, dag_id=dag_id, uri=uri,
                                   before=_before(request, before))
    if not events:
        raise _queue_not_found(f"Queue event with dag_id: `{dag_id}` and dataset uri: "
                               f"`{uri}` was not found")
    return events[0]


@router.delete("/dags/{dag_id}/datasets/queuedEvent/{uri:path}",
               summary="Delete a queued Dataset event for a DAG", status_code=204,
               response_class=Response, responses=_DELETED)
def delete_dag_dataset_queued_event(dag_id: str, uri: str, request: Request, session: DB,
                                    user: Op, before: DateQuery = None) -> Response:
    where = catalog.queued_filter(dag_id=dag_id, uri=uri, before=_before(request, before))
    if not _delete_queued(session, where):
        raise _queue_not_found(f"Queue event with dag_id: `{dag_id}` and dataset uri: "
                               f"`{uri}` was not found")
    log.info("api: %s deleted the queued event of dataset %s for DAG %s", user.username,
             uri, dag_id)
    return Response(status_code=204)


# --------------------------------------------------------------------------- a run's events


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/upstreamDatasetEvents",
            summary="Get dataset events for a DAG run (the events a dataset-triggered run "
            "was created from)", tags=["DAGRun", "Dataset"],
            response_model=DatasetEventCollection)
def get_upstream_dataset_events(dag_id: str, dag_run_id: str, session: DB,
                                user: Viewer) -> dict[str, Any]:
    get_run(session, dag_id, dag_run_id)
    events = catalog.run_events(session, dag_id, dag_run_id)
    return {"dataset_events": catalog.events_json(session, events),
            "total_entries": len(events)}

