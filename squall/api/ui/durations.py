"""The grid page's timing views, ``GET /ui/api/...`` (viewer): a run's Gantt chart (when
each task instance was queued, started and ended) and a task's durations over the last
runs, as Airflow 2.10's grid shows them in its Gantt and task duration tabs."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from squall.api.auth import Viewer
from squall.api.problems import not_found
from squall.api.state import DB
from squall.api.ui.data import GRID_RUNS, MAX_GRID_RUNS, dag_row, iso, mapped_state, task_order
from squall.common.models import DagRun, TaskInstance

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui/api", include_in_schema=False)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


@router.get("/dags/{dag_id}/runs/{run_id}/gantt")
def gantt(dag_id: str, run_id: str, session: DB, user: Viewer) -> dict[str, Any]:
    """The run and each of its task instances (upstream first, mapped ones by map index):
    state, try, and when it was queued, started and ended; a 404 for an unknown DAG or run."""
    dag_row(session, dag_id)
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id,
                                              DagRun.run_id == run_id))
    if run is None:
        raise not_found(f"DAGRun with DAG ID: '{dag_id}' and DagRun ID: '{run_id}' not found")
    tis = list(session.scalars(select(TaskInstance).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)))
    rank = {t: i for i, t in enumerate(task_order(session, dag_id))}
    tis.sort(key=lambda t: (rank.get(t.task_id, len(rank)), t.task_id, t.map_index))
    return {
        "dag_id": dag_id, "run_id": run_id, "run_type": run.run_type, "state": run.state,
        "logical_date": iso(run.logical_date), "queued_at": iso(run.queued_at),
        "start_date": iso(run.start_date), "end_date": iso(run.end_date),
        "task_instances": [{
            "task_id": t.task_id, "map_index": t.map_index, "state": t.state,
            "try_number": t.try_number, "queued_dttm": iso(t.queued_dttm),
            "start_date": iso(t.start_date), "end_date": iso(t.end_date),
            "duration": t.duration if t.duration is not None
            else _seconds(t.start_date, t.end_date),
        } for t in tis],
    }


@router.get("/dags/{dag_id}/tasks/{task_id}/durations")
def task_durations(dag_id: str, task_id: str, session: DB, user: Viewer,
                   runs: int = Query(GRID_RUNS, ge=1, le=MAX_GRID_RUNS)) -> dict[str, Any]:
    """The task's duration in each of the DAG's last ``runs`` runs (oldest first): seconds
    from start to end (a mapped task: from its first instance's start to its last one's
    end), seconds queued before it started, its state and try; ``null`` where the run has
    no instance of it or it has not ended. A 404 for an unknown DAG or task."""
    dag_row(session, dag_id)
    newest = session.execute(
        select(DagRun.run_id, DagRun.logical_date, DagRun.run_type)
        .where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date.desc()).limit(runs)
    ).all()
    ordered = list(reversed(newest))
    rows = session.execute(select(
        TaskInstance.run_id, TaskInstance.map_index, TaskInstance.state,
        TaskInstance.try_number, TaskInstance.queued_dttm, TaskInstance.start_date,
        TaskInstance.end_date, TaskInstance.duration,
    ).where(TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id,
            TaskInstance.run_id.in_([r.run_id for r in ordered]))).all()
    if not rows and task_id not in task_order(session, dag_id):
        raise not_found(f"Task {task_id!r} not found in DAG {dag_id!r}")
    by_run: dict[str, list[Any]] = {}
    for row in rows:
        by_run.setdefault(row.run_id, []).append(row)
    out = []
    for run in ordered:
        tis = by_run.get(run.run_id, [])
        entry: dict[str, Any] = {"run_id": run.run_id, "logical_date": iso(run.logical_date),
                                 "run_type": run.run_type, "state": None, "try_number": None,
                                 "count": None, "start_date": None, "end_date": None,
                                 "duration": None, "queued_duration": None}
        if tis:
            starts = [t.start_date for t in tis if t.start_date is not None]
            queued = [t.queued_dttm for t in tis if t.queued_dttm is not None]
            ends = [t.end_date for t in tis if t.end_date is not None]
            mapped = tis[0].map_index >= 0
            counts: dict[str, int] = {}
            for t in tis:
                counts[t.state] = counts.get(t.state, 0) + 1
            start = min(starts) if starts else None
            # an unfinished instance leaves the whole task unfinished
            end = max(ends) if ends and len(ends) == len(tis) else None
            duration = (tis[0].duration if not mapped and tis[0].duration is not None
                        else _seconds(start, end))
            entry.update(
                state=mapped_state(counts) if mapped else tis[0].state,
                try_number=max(t.try_number for t in tis), count=len(tis) if mapped else None,
                start_date=iso(start), end_date=iso(end), duration=duration,
                queued_duration=_seconds(min(queued), start) if queued and start else None)
        out.append(entry)
    return {"dag_id": dag_id, "task_id": task_id, "runs": out}
