"""``/api/v1/dags``: list (filters, order, pages), get, details, pause / unpause, tasks."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.api.auth import Op, Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import bad_request, not_found
from squall.api.schemas import DAG, ERRORS, DAGCollection, DAGDetail, Task, TaskCollection
from squall.api.serializers import dag_display_names, dag_json, iso
from squall.api.state import DB, api_state
from squall.common.models import DagModel
from squall.dag_processing.sync import load_serialized_dags
from squall.runs import audit
from squall.runs.pausing import set_paused
from squall.sdk import dag as sdk_dag

router = APIRouter(prefix="/api/v1", tags=["DAG"], responses=ERRORS)

_ORDER = {"dag_id": DagModel.dag_id, "last_parsed_time": DagModel.last_parsed_time,
          "next_dagrun": DagModel.next_dagrun, "fileloc": DagModel.fileloc}


def get_dag_row(session: Session, dag_id: str) -> DagModel:
    row = session.get(DagModel, dag_id)
    if row is None:
        raise not_found(f"DAG with dag_id: '{dag_id}' not found")
    return row


def _dags_json(session: Session, rows: list[DagModel], key: str) -> list[dict[str, Any]]:
    names = dag_display_names(session, [r.dag_id for r in rows])
    return [dag_json(r, key, names.get(r.dag_id)) for r in rows]


@router.get("/dags", summary="List DAGs", response_model=DAGCollection)
def list_dags(
    request: Request, pages: Paged, session: DB, user: Viewer, order: OrderBy = None,
    tags: Annotated[list[str] | None, Query()] = None,
    only_active: bool = True,
    paused: bool | None = None,
    dag_id_pattern: str | None = None,
) -> dict[str, Any]:
    key = api_state(request).secret_key
    stmt = select(DagModel)
    if only_active:
        stmt = stmt.where(DagModel.is_active.is_(True))
    if paused is not None:
        stmt = stmt.where(DagModel.is_paused.is_(paused))
    if dag_id_pattern:
        stmt = stmt.where(DagModel.dag_id.contains(dag_id_pattern, autoescape=True))
    ordered = order_by(stmt, order, _ORDER, "dag_id")
    if tags:  # any of the tags; the column is JSON, so this filter runs here
        rows = [r for r in session.scalars(ordered) if set(tags) & set(r.tags or [])]
        return {"dags": _dags_json(session, rows[pages.offset:pages.offset + pages.limit], key),
                "total_entries": len(rows)}
    return {"dags": _dags_json(session, list(session.scalars(pages.apply(ordered))), key),
            "total_entries": total(session, stmt)}


@router.get("/dags/{dag_id}", summary="Get basic information about a DAG",
            response_model=DAG)
def get_dag(dag_id: str, request: Request, session: DB, user: Viewer) -> dict[str, Any]:
    return _dags_json(session, [get_dag_row(session, dag_id)], api_state(request).secret_key)[0]


@router.patch("/dags/{dag_id}", summary="Pause or unpause a DAG", response_model=DAG)
def patch_dag(dag_id: str, body: Annotated[dict[str, Any], Body()], request: Request,
              session: DB, user: Op,
              update_mask: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    row = get_dag_row(session, dag_id)
    fields = update_mask or list(body)
    unknown = sorted(set(fields) - {"is_paused"})
    if unknown:
        raise bad_request(f"only is_paused can be changed, not {', '.join(unknown)}")
    if "is_paused" not in body or not isinstance(body["is_paused"], bool):
        raise bad_request("is_paused must be given as true or false")
    set_paused(session, dag_id, body["is_paused"], by=f"API, by {user.username}")
    audit.record_event(session, audit.paused_event(body["is_paused"]), owner=user.username,
                       dag_id=dag_id, source="api")
    return _dags_json(session, [row], api_state(request).secret_key)[0]


def _serialized(session: Session, dag_id: str) -> sdk_dag.DAG:
    """The DAG as the DAG processor last serialized it; a 404 when it has none."""
    get_dag_row(session, dag_id)
    dag = load_serialized_dags(session, [dag_id], only_active=False).get(dag_id)
    if dag is None:
        raise not_found(f"DAG with dag_id: '{dag_id}' has no serialized form yet (not parsed)")
    return dag


@router.get("/dags/{dag_id}/details", summary="Get a DAG with the details of its definition",
            response_model=DAGDetail)
def get_dag_details(dag_id: str, request: Request, session: DB,
                    user: Viewer) -> dict[str, Any]:
    row = get_dag_row(session, dag_id)
    dag = _serialized(session, dag_id)
    return {
        **dag_json(row, api_state(request).secret_key),
        "dag_display_name": dag.dag_display_name,
        "timezone": dag.timezone.name, "catchup": dag.catchup,
        # the DAG's UI hints as its file gives them (Airflow 2's default_view, orientation)
        "default_view": getattr(dag, "default_view", "grid"),
        "orientation": getattr(dag, "orientation", "LR"),
        "concurrency": dag.max_active_tasks, "start_date": iso(dag.start_date),
        "dag_run_timeout": _duration(dag.dagrun_timeout),
        "dataset_expression": _expression(row.dataset_expression),
        "doc_md": dag.doc_md, "params": {k: p.dump() for k, p in dag.params.items()},
        "end_date": iso(dag.end_date),
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        "last_parsed": iso(row.last_parsed_time),
        "template_search_path": [str(p) for p in dag.template_searchpath] or None,
        "render_template_as_native_obj": dag.render_template_as_native_obj,
    }


def _expression(value: Any) -> dict[str, Any] | None:
    """A dataset schedule's condition as Airflow's ``DagModel.dataset_expression``
    (``{"all": [...]}``, ``{"any": [...]}``, ``{"alias": name}``). One ``Dataset`` alone is
    stored as its bare URI, which is not an object: ``null`` then (Airflow 2.10's server
    fails to answer it: ``DAGDetailSchema.dataset_expression`` is a ``fields.Dict``)."""
    return value if isinstance(value, dict) else None


def _duration(value: timedelta | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"__type": "TimeDelta", "days": value.days, "seconds": value.seconds,
            "microseconds": value.microseconds}


@router.get("/dags/{dag_id}/tasks", summary="Get the tasks of a DAG",
            response_model=TaskCollection)
def get_tasks(dag_id: str, session: DB, user: Viewer,
              order: OrderBy = None) -> dict[str, Any]:
    dag = _serialized(session, dag_id)
    key = (order or "task_id").lstrip("-")
    if key not in ("task_id", "priority_weight", "pool", "queue"):
        raise bad_request(f"order_by {key!r} is not one of: pool, priority_weight, queue, "
                          "task_id")
    tasks = sorted(dag.task_dict.values(), key=lambda t: (getattr(t, key) or "", t.task_id)
                   if key != "priority_weight" else (t.priority_weight_total, t.task_id),
                   reverse=(order or "").startswith("-"))
    return {"tasks": [_task_json(t) for t in tasks], "total_entries": len(tasks)}


@router.get("/dags/{dag_id}/tasks/{task_id}", summary="Get a task of a DAG",
            response_model=Task)
def get_task(dag_id: str, task_id: str, session: DB, user: Viewer) -> dict[str, Any]:
    task = _serialized(session, dag_id).task_dict.get(task_id)
    if task is None:
        raise not_found(f"Task with id '{task_id}' not found in DAG '{dag_id}'")
    return _task_json(task)


def _task_json(task: Any) -> dict[str, Any]:
    cls = type(task)
    return {
        "class_ref": {"module_path": cls.__module__,
                      "class_name": getattr(task, "operator_name", cls.__name__)},
        "task_id": task.task_id, "task_display_name": task.task_display_name,
        "owner": str(getattr(task, "owner", "") or ""),
        "start_date": iso(task.start_date), "end_date": iso(task.end_date),
        "trigger_rule": str(task.trigger_rule), "extra_links": [],
        "depends_on_past": bool(task.depends_on_past),
        "wait_for_downstream": bool(task.wait_for_downstream), "retries": task.retries,
        "queue": task.queue, "executor": getattr(task, "executor", None), "pool": task.pool,
        "pool_slots": task.pool_slots,
        "execution_timeout": _duration(getattr(task, "execution_timeout", None)),
        "retry_delay": _duration(getattr(task, "retry_delay", None)),
        "retry_exponential_backoff": bool(getattr(task, "retry_exponential_backoff", False)),
        "priority_weight": task.priority_weight_total,
        "weight_rule": str(getattr(task, "weight_rule", "downstream")),
        "ui_color": getattr(task, "ui_color", "#fff"),
        "ui_fgcolor": getattr(task, "ui_fgcolor", "#000"),
        "template_fields": list(getattr(task, "template_fields", ())),
        "downstream_task_ids": sorted(task.downstream_task_ids),
        "is_mapped": False, "doc_md": getattr(task, "doc_md", None),
    }
