"""``/api/experimental``: the two state interfaces of Airflow 2.0's experimental API, where
it served them.

* ``GET /api/experimental/dags/{dag_id}/dag_runs/{execution_date}`` -> ``{"state": ...}``
* ``GET /api/experimental/dags/{dag_id}/dag_runs/{execution_date}/tasks/{task_id}`` -> the
  task instance's fields, each value a string as Airflow gave them (``null`` when unset,
  where Airflow wrote ``"None"``).

``execution_date`` is ISO 8601 (the run's logical date; without a UTC offset a wall time in
``[core] default_timezone``). Errors are problem bodies like the rest of the API's (Airflow
2.0 answered ``{"error": ...}`` here), with the same statuses: 400 for a bad date, 404 for
an unknown DAG, run or task. Reading needs the viewer role.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.api.auth import Viewer
from squall.api.problems import not_found
from squall.api.routes.dag_runs import CHECKS, default_tz, parse_date
from squall.api.schemas import ERRORS
from squall.api.schemas_runs import ExperimentalDagRunState, ExperimentalTaskInstance
from squall.api.state import DB
from squall.common.models import DagModel, DagRun, TaskInstance

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/experimental", tags=["Experimental"], responses=ERRORS,
                   dependencies=CHECKS)


def _run(session: Session, request: Request, dag_id: str, execution_date: str) -> DagRun:
    when = parse_date(execution_date, default_tz(request), "execution_date")
    if session.get(DagModel, dag_id) is None:
        raise not_found(f"Dag id {dag_id} not found")
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id,
                                              DagRun.logical_date == when))
    if run is None:
        raise not_found(f"DAG Run for date {when.isoformat()} not found in dag {dag_id}")
    return run


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@router.get("/dags/{dag_id}/dag_runs/{execution_date}",
            summary="The state of the DAG run of that logical date (Airflow 2.0's "
            "experimental API)", response_model=ExperimentalDagRunState)
def dag_run_state(dag_id: str, execution_date: str, request: Request, session: DB,
                  user: Viewer) -> dict[str, Any]:
    return {"state": _run(session, request, dag_id, execution_date).state}


@router.get("/dags/{dag_id}/dag_runs/{execution_date}/tasks/{task_id}",
            summary="A task instance's fields (Airflow 2.0's experimental API)",
            response_model=ExperimentalTaskInstance)
def task_instance_fields(dag_id: str, execution_date: str, task_id: str, request: Request,
                         session: DB, user: Viewer) -> dict[str, Any]:
    run = _run(session, request, dag_id, execution_date)
    ti = session.get(TaskInstance, (dag_id, task_id, run.run_id, -1))
    if ti is None:
        raise not_found(f"Task {task_id} instance for date {run.logical_date.isoformat()} "
                        "not found")
    when: datetime = run.logical_date
    fields = {name: _text(getattr(ti, name)) for name in ExperimentalTaskInstance.model_fields
              if name not in ("execution_date", "unixname")}
    return {**fields, "execution_date": str(when), "unixname": None}
