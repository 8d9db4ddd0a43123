"""The web UI's read endpoints, ``GET /ui/api/...``: what its pages show, read straight
from the database in as few queries as a page needs (the grid polls every 2 seconds).

They are the UI's own (not in the OpenAPI document) and need the ``viewer`` role, by the
session cookie (or basic auth)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from squall.api.auth import Role, Viewer
from squall.api.problems import bad_request, not_found
from squall.api.serializers import dag_display_names
from squall.api.state import DB, api_state
from squall.common.models import (
    Backfill,
    DagModel,
    DagRun,
    DatasetModel,
    ImportError_,
    SerializedDagModel,
    TaskInstance,
    TaskInstanceKey,
)
from squall.dag_processing.serialization import deserialize_dag
from squall.execution.runner import task_log_path
from squall.runs import dataset_catalog
from squall.runs.backfill_progress import backfill_progress, ended_backfill_notes
from squall.runs.dag_shape import downstream_map, topological_order
from squall.runs.pools import list_pools

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui/api", include_in_schema=False)

#: runs shown per DAG on the list page, and at most on the grid
RECENT_RUNS = 5
GRID_RUNS = 25
MAX_GRID_RUNS = 100

#: the task order of each serialized DAG version seen, by (dag_id, dag_hash)
_task_orders: dict[tuple[str, str], tuple[list[str], dict[str, str]]] = {}

#: the state a mapped task's cell takes: the first of these its instances are in (Airflow
#: 2.10's grid, ``airflow.www.utils.priority``; ``none`` stands for Airflow's None)
MAPPED_PRIORITY = ("failed", "upstream_failed", "up_for_retry", "up_for_reschedule", "queued",
                   "scheduled", "deferred", "running", "restarting", "none", "success",
                   "skipped", "removed")


def mapped_state(counts: dict[str, int]) -> str:
    """The overall state of a mapped task's instances, counted by state."""
    return next((s for s in MAPPED_PRIORITY if counts.get(s)), next(iter(counts), "none"))


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def dag_row(session: Session, dag_id: str) -> DagModel:
    row = session.get(DagModel, dag_id)
    if row is None:
        raise not_found(f"DAG with dag_id: '{dag_id}' not found")
    return row


def _user(user: Viewer) -> dict[str, Any]:
    return {"username": user.username, "role": user.role.value,
            "may_act": user.may(Role.OP)}


@router.get("/dags")
def dags(session: DB, user: Viewer) -> dict[str, Any]:
    """Every active DAG with its recent runs, and the import errors."""
    rank = func.row_number().over(partition_by=DagRun.dag_id,
                                  order_by=DagRun.logical_date.desc()).label("rank")
    ranked = select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.logical_date,
                    rank).subquery()
    recent: dict[str, list[dict[str, Any]]] = {}
    for row in session.execute(select(ranked).where(ranked.c.rank <= RECENT_RUNS)
                               .order_by(ranked.c.dag_id, ranked.c.logical_date)):
        recent.setdefault(row.dag_id, []).append(
            {"run_id": row.run_id, "state": row.state, "logical_date": iso(row.logical_date)})
    rows = list(session.scalars(select(DagModel).where(DagModel.is_active.is_(True))
                                .order_by(DagModel.dag_id)))
    names = dag_display_names(session, [d.dag_id for d in rows])
    errors = session.scalars(select(ImportError_).order_by(ImportError_.filename))
    return {
        "user": _user(user),
        "dags": [{"dag_id": d.dag_id, "dag_display_name": names.get(d.dag_id, d.dag_id),
                  "is_paused": d.is_paused, "schedule": d.schedule,
                  "timetable_description": d.timetable_description,
                  "description": d.description, "tags": d.tags or [],
                  "owners": d.owners, "next_dagrun": iso(d.next_dagrun),
                  "has_import_errors": d.has_import_errors,
                  "recent_runs": recent.get(d.dag_id, [])} for d in rows],
        "import_errors": [{"filename": e.filename, "stacktrace": e.stacktrace,
                           "timestamp": iso(e.timestamp)} for e in errors],
    }


def task_order(session: Session, dag_id: str) -> list[str]:
    """The DAG's task ids upstream first (as parsed last), remembered per DAG version."""
    return _shape(session, dag_id)[0]


def _shape(session: Session, dag_id: str) -> tuple[list[str], dict[str, str]]:
    """The task order and which tasks are setups / teardowns (``"setup"``,
    ``"teardown"``), from the DAG as parsed last, remembered per DAG version."""
    row = session.execute(select(SerializedDagModel.dag_hash)
                          .where(SerializedDagModel.dag_id == dag_id)).first()
    if row is None:
        return [], {}
    key = (dag_id, row.dag_hash)
    shape = _task_orders.get(key)
    if shape is None:
        data = session.scalar(select(SerializedDagModel.data)
                              .where(SerializedDagModel.dag_id == dag_id))
        try:
            tasks = deserialize_dag(data or {}).task_dict
        except Exception as exc:  # a row this version cannot read: order by name instead
            log.warning("ui: cannot rebuild DAG %s for its task order: %s", dag_id, exc)
            return [], {}
        kinds = {tid: "setup" if t.is_setup else "teardown" for tid, t in tasks.items()
                 if t.is_setup or t.is_teardown}
        shape = (topological_order(tasks, downstream_map(tasks)), kinds)
        if len(_task_orders) > 256:
            _task_orders.clear()
        _task_orders[key] = shape
    return shape


@router.get("/dags/{dag_id}/grid")
def grid(dag_id: str, session: DB, user: Viewer,
         runs: int = Query(GRID_RUNS, ge=1, le=MAX_GRID_RUNS)) -> dict[str, Any]:
    """The last ``runs`` runs (oldest first) and the state of each of their task instances:
    ``states[task_id][i]`` is the task's state in ``runs[i]`` (``null``: no task instance);
    for a mapped task, the overall state of its instances (:func:`mapped_state`), and
    ``mapped[task_id][i]`` is ``{"count": n, "states": {state: n, ...}}`` (``null`` where
    it has no mapped instances)."""
    dag = dag_row(session, dag_id)
    newest = session.execute(
        select(DagRun.run_id, DagRun.state, DagRun.logical_date, DagRun.run_type,
               DagRun.start_date, DagRun.end_date)
        .where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date.desc()).limit(runs)
    ).all()
    ordered = list(reversed(newest))
    column = {r.run_id: i for i, r in enumerate(ordered)}
    states: dict[str, list[str | None]] = {}
    counts: dict[str, list[dict[str, int] | None]] = {}
    if ordered:
        for task_id, run_id, map_index, state in session.execute(
                select(TaskInstance.task_id, TaskInstance.run_id, TaskInstance.map_index,
                       TaskInstance.state)
                .where(TaskInstance.dag_id == dag_id,
                       TaskInstance.run_id.in_(list(column)))):
            row = states.setdefault(task_id, [None] * len(ordered))
            if map_index < 0:
                row[column[run_id]] = state
                continue
            cells = counts.setdefault(task_id, [None] * len(ordered))
            cell = cells[column[run_id]] = cells[column[run_id]] or {}
            cell[state] = cell.get(state, 0) + 1
    mapped: dict[str, list[dict[str, Any] | None]] = {}
    for task_id, cells in counts.items():
        mapped[task_id] = [None if c is None else {"count": sum(c.values()), "states": c}
                           for c in cells]
        for i, c in enumerate(cells):
            if c is not None:
                states[task_id][i] = mapped_state(c)
    order, kinds = _shape(session, dag_id)
    known = set(order)
    tasks = order + sorted(t for t in states if t not in known)
    notes = ended_backfill_notes(session, dag_id, [r.run_id for r in ordered
                                                   if r.state in ("queued", "running")])
    return {
        "user": _user(user), "dag_id": dag_id, "is_paused": dag.is_paused,
        "schedule": dag.schedule, "next_dagrun": iso(dag.next_dagrun),
        "runs": [{"run_id": r.run_id, "state": r.state, "run_type": r.run_type,
                  "logical_date": iso(r.logical_date), "start_date": iso(r.start_date),
                  "end_date": iso(r.end_date), "note": notes.get(r.run_id)}
                 for r in ordered],
        "tasks": tasks,
        # Airflow's grid marks these (an arrow up for a setup, down for a teardown)
        "setup_teardown": {t: kinds[t] for t in tasks if t in kinds},
        "states": {t: states.get(t, [None] * len(ordered)) for t in tasks},
        "mapped": mapped,
        # a consumer DAG: its schedule's datasets, each queued (an event no run took) or not
        "waiting_for": dataset_catalog.waiting_for(session, dag_id, dag.dataset_expression),
    }


def _instances(session: Session, dag_id: str, run_id: str,
               task_id: str) -> list[TaskInstance]:
    """The task's instances in the run: the one of an unmapped task, or the mapped ones
    (by map index); a 404 when there are none."""
    tis = list(session.scalars(select(TaskInstance).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
        TaskInstance.task_id == task_id).order_by(TaskInstance.map_index)))
    if not tis:
        raise not_found(f"Task instance {dag_id}.{task_id} of run {run_id!r} not found")
    return tis


@router.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}")
def task_instance(dag_id: str, run_id: str, task_id: str, session: DB, user: Viewer,
                  map_index: int | None = None) -> dict[str, Any]:
    """A task instance as its panel shows it (of a mapped task: the one at ``map_index``);
    a mapped task without ``map_index``: the summary of its instances and the list of
    them (``mapped``, ``count``, ``mapped_states``, ``instances``)."""
    tis = _instances(session, dag_id, run_id, task_id)
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id,
                                              DagRun.run_id == run_id))
    run_facts = {
        "run_state": run.state if run is not None else None,
        "run_type": run.run_type if run is not None else None,
        "logical_date": iso(run.logical_date) if run is not None else None,
        "run_note": ended_backfill_notes(session, dag_id, [run_id]).get(run_id),
    }
    is_mapped = tis[0].map_index >= 0
    if map_index is None and is_mapped:
        counts: dict[str, int] = {}
        for t in tis:
            counts[t.state] = counts.get(t.state, 0) + 1
        return {
            "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "mapped": True,
            "map_index": None, "state": mapped_state(counts), "count": len(tis),
            "mapped_states": counts, "operator": tis[0].operator,
            "instances": [{"map_index": t.map_index, "state": t.state,
                           "try_number": t.try_number, "duration": t.duration,
                           "start_date": iso(t.start_date), "end_date": iso(t.end_date)}
                          for t in tis],
            **run_facts,
        }
    wanted = -1 if map_index is None else map_index
    ti = next((t for t in tis if t.map_index == wanted), None)
    if ti is None:
        raise not_found(f"Task instance {dag_id}.{task_id} of run {run_id!r} has no map "
                        f"index {wanted}")
    return {
        "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "mapped": is_mapped,
        "map_index": ti.map_index, "count": len(tis) if is_mapped else None,
        "state": ti.state,
        "try_number": ti.try_number, "max_tries": ti.max_tries,
        "state_reason": ti.state_reason, "hostname": ti.hostname, "pid": ti.pid,
        "operator": ti.operator, "pool": ti.pool, "queue": ti.queue,
        "queued_dttm": iso(ti.queued_dttm), "start_date": iso(ti.start_date),
        "end_date": iso(ti.end_date), "duration": ti.duration,
        **run_facts,
    }


def _safe(name: str, value: str) -> str:
    if not value or "/" in value or "\x00" in value or value in (".", ".."):
        raise bad_request(f"{name} {value!r} is not a valid identifier")
    return value


@router.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/log/{try_number}",
            response_class=PlainTextResponse)
def local_log(dag_id: str, run_id: str, task_id: str, try_number: int, request: Request,
              user: Viewer, map_index: int = Query(-1, ge=-1)) -> PlainTextResponse:
    """Try ``try_number``'s log from this host's log folder (as ``squall tasks logs`` reads
    it): the panel's fallback when the API cannot serve the log."""
    key = TaskInstanceKey(_safe("dag_id", dag_id), _safe("task_id", task_id),
                          _safe("run_id", run_id), map_index)
    folder = api_state(request).settings.log_folder
    path = task_log_path(folder, key, try_number)
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except OSError:
        inside = False
    if try_number < 1 or not inside or not path.is_file():
        raise not_found(f"no log of try {try_number} of {key} in this host's log folder")
    return PlainTextResponse(path.read_text(encoding="utf-8", errors="replace"))


@router.get("/backfills")
def backfills(session: DB, user: Viewer,
              limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    """The newest backfills with their progress."""
    ids = session.scalars(select(Backfill.id).order_by(Backfill.id.desc()).limit(limit)).all()
    out = []
    for backfill_id in ids:
        p = backfill_progress(session, backfill_id)
        if p is None:
            continue
        row = session.get(Backfill, backfill_id)
        done = sum(n for s, n in p.runs_by_state.items() if s in ("success", "failed"))
        out.append({
            "id": p.backfill_id, "dag_id": p.dag_id, "state": p.state.value,
            "from_date": iso(row.from_date) if row else None,
            "to_date": iso(row.to_date) if row else None,
            "total_runs": p.total_runs, "finished_runs": done,
            "runs_by_state": p.runs_by_state, "tis_by_state": p.tis_by_state,
            "failed_runs": p.failed_runs, "created_at": iso(p.created_at),
            "completed_at": iso(p.completed_at), "reason": p.reason,
            "unfinished_runs": p.unfinished_runs, "resume_command": p.resume})
    return {"user": _user(user), "backfills": out}


@router.get("/pools")
def pools(session: DB, user: Viewer) -> dict[str, Any]:
    return {"user": _user(user), "pools": [p.as_row() for p in list_pools(session)]}


#: events shown per dataset on the datasets page
DATASET_EVENTS = 5


@router.get("/datasets")
def datasets(session: DB, user: Viewer,
             events: int = Query(DATASET_EVENTS, ge=1, le=50)) -> dict[str, Any]:
    """Every dataset with its producers (tasks), consumers (DAGs, through an alias too),
    the DAGs it is queued for, and its newest ``events`` events (with the run each came
    from, its extra, and the runs it created)."""
    rows = list(session.scalars(dataset_catalog.select_datasets()
                                .order_by(DatasetModel.uri)))
    ids = [r.id for r in rows]
    # no DAG file names it any more (the page hides these unless asked, as Airflow's UI)
    orphaned = {r.id: r.is_orphaned for r in rows}
    shaped = dataset_catalog.datasets_json(session, rows)
    consumers = dataset_catalog.consumers_of(session, ids)
    recent = dataset_catalog.recent_events(session, ids, events)
    flat = [e for i in ids for e in recent.get(i, [])]
    shaped_events: dict[int, list[dict[str, Any]]] = {}
    for item in dataset_catalog.events_json(session, flat):  # one pair of queries for all
        shaped_events.setdefault(item["dataset_id"], []).append(item)
    queued: dict[str, list[str]] = {}
    for item in dataset_catalog.queued_events(session):
        queued.setdefault(item["uri"], []).append(item["dag_id"])
    out = []
    for dataset in shaped:
        out.append({
            "id": dataset["id"], "uri": dataset["uri"], "extra": dataset["extra"],
            "orphaned": orphaned[dataset["id"]],
            "producers": [{"dag_id": p["dag_id"], "task_id": p["task_id"]}
                          for p in dataset["producing_tasks"]],
            "consumers": consumers.get(dataset["id"], []),
            "aliases": [a["name"] for a in dataset["aliases"]],
            "queued_for": queued.get(dataset["uri"], []),
            "events": shaped_events.get(dataset["id"], []),
        })
    return {"user": _user(user), "datasets": out}
