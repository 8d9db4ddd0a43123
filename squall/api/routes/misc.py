"""``/api/v1/importErrors`` (Airflow 2's) and ``/api/v1/backfills`` (Squall's own: Airflow 2
has no backfill resource).

* ``importErrors``: the DAG files that failed to load; list (order, pages) and get.
* ``backfills``: list (``dag_id`` filter, order, pages), get with its progress (runs and
  task instances by state, as ``squall backfills show``), create (the options of ``squall
  dags backfill``; the scheduler creates the runs) and cancel (``end_running`` also ends the
  runs it created). Reading needs ``viewer``, creating and cancelling ``op``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import pendulum
from fastapi import APIRouter, Body, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.api.auth import Op, Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import ApiProblem, bad_request, not_found
from squall.api.schemas import ERRORS
from squall.api.schemas_misc import (
    CONFLICT,
    BackfillBody,
    BackfillCancelled,
    BackfillCollection,
    BackfillCreated,
    BackfillDetail,
    CancelBody,
    ImportErrorCollection,
)
from squall.api.schemas_misc import ImportError as ImportErrorOut
from squall.api.serializers import iso
from squall.api.state import DB, api_state
from squall.common.errors import BackfillError
from squall.common.models import Backfill, DagModel, ImportError_, utcnow
from squall.dag_processing.sync import load_serialized_dags
from squall.runs import audit
from squall.runs.backfill import (
    BackfillOptions,
    cancel_backfill,
    create_requested,
    plan_requested,
)
from squall.runs.backfill_progress import backfill_progress
from squall.runs.backfill_scope import FIRST_DATE_KEY

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", responses=ERRORS)

# --------------------------------------------------------------------------- importErrors

_IMPORT_ORDER = {"import_error_id": ImportError_.id, "timestamp": ImportError_.timestamp,
                 "filename": ImportError_.filename}


def _import_error_json(row: ImportError_) -> dict[str, Any]:
    return {"import_error_id": row.id, "timestamp": iso(row.timestamp),
            "filename": row.filename, "stack_trace": row.stacktrace}


@router.get("/importErrors", summary="List import errors", tags=["ImportError"],
            response_model=ImportErrorCollection)
def list_import_errors(pages: Paged, session: DB, user: Viewer,
                       order: OrderBy = None) -> dict[str, Any]:
    stmt = select(ImportError_)
    ordered = order_by(stmt, order, _IMPORT_ORDER, "import_error_id")
    return {"import_errors": [_import_error_json(r) for r in
                              session.scalars(pages.apply(ordered))],
            "total_entries": total(session, stmt)}


@router.get("/importErrors/{import_error_id}", summary="Get an import error",
            tags=["ImportError"], response_model=ImportErrorOut)
def get_import_error(import_error_id: int, session: DB, user: Viewer) -> dict[str, Any]:
    row = session.get(ImportError_, import_error_id)
    if row is None:
        raise not_found(f"ImportError with import_error_id: {import_error_id} not found")
    return _import_error_json(row)


# --------------------------------------------------------------------------- backfills

_BACKFILL_ORDER = {"id": Backfill.id, "dag_id": Backfill.dag_id, "state": Backfill.state,
                   "created_at": Backfill.created_at, "from_date": Backfill.from_date}


def _backfill_json(row: Backfill) -> dict[str, Any]:
    options = {k: v for k, v in (row.options or {}).items() if k != FIRST_DATE_KEY}
    return {
        "id": row.id, "dag_id": row.dag_id, "from_date": iso(row.from_date) or "",
        "to_date": iso(row.to_date) or "", "run_backwards": row.run_backwards,
        "max_active_runs": row.max_active_runs, "dag_run_conf": row.conf,
        "options": options, "state": row.state, "total_runs": row.total_runs,
        "created_at": iso(row.created_at) or "", "completed_at": iso(row.completed_at),
        "reason": row.reason,
    }


def _detail(session: Session, row: Backfill) -> dict[str, Any]:
    progress = backfill_progress(session, row.id)
    if progress is None:  # deleted meanwhile
        raise not_found(f"Backfill with id: {row.id} not found")
    return {**_backfill_json(row), "runs_finished": progress.runs_finished,
            "runs_by_state": progress.runs_by_state,
            "task_instances_by_state": progress.tis_by_state,
            "failed_runs": progress.failed_runs, "deadlocked": progress.deadlocked,
            "unfinished_runs": progress.unfinished_runs, "resume_command": progress.resume,
            "range_runs_by_state": progress.range_runs_by_state}


def _get_backfill(session: Session, backfill_id: int) -> Backfill:
    row = session.get(Backfill, backfill_id)
    if row is None:
        raise not_found(f"Backfill with id: {backfill_id} not found")
    return row


@router.get("/backfills", summary="List backfills", tags=["Backfill"],
            response_model=BackfillCollection)
def list_backfills(pages: Paged, session: DB, user: Viewer, order: OrderBy = None,
                   dag_id: Annotated[str | None, Query(description="only this DAG's")] = None,
                   ) -> dict[str, Any]:
    stmt = select(Backfill)
    if dag_id:
        stmt = stmt.where(Backfill.dag_id == dag_id)
    ordered = order_by(stmt, order, _BACKFILL_ORDER, "id")
    return {"backfills": [_backfill_json(r) for r in session.scalars(pages.apply(ordered))],
            "total_entries": total(session, stmt)}


@router.get("/backfills/{backfill_id}", summary="Get a backfill and its progress",
            tags=["Backfill"], response_model=BackfillDetail)
def get_backfill(backfill_id: int, session: DB, user: Viewer) -> dict[str, Any]:
    return _detail(session, _get_backfill(session, backfill_id))


@router.post("/backfills/{backfill_id}/cancel", summary="Cancel a backfill",
             tags=["Backfill"], response_model=BackfillCancelled, responses=CONFLICT)
def cancel(backfill_id: int, session: DB, user: Op,
           body: Annotated[CancelBody | None, Body()] = None) -> dict[str, Any]:
    """The scheduler creates no more of its runs; those created go on to finish, or with
    ``end_running`` end now. 409 when it already ended and there is nothing to end."""
    end_running = body.end_running if body is not None else False
    row = _get_backfill(session, backfill_id)
    state = row.state
    ended = cancel_backfill(session, backfill_id, now=utcnow(), end_running=end_running)
    if ended is None:
        raise ApiProblem(409, f"backfill {backfill_id} is {state}: nothing to cancel"
                         + ("" if end_running else
                            " (end_running ends the runs it left unfinished)"))
    session.flush()
    session.refresh(row)
    audit.record_event(session, audit.BACKFILL_CANCEL, owner=user.username, dag_id=row.dag_id,
                       source="api", extra={"backfill_id": backfill_id,
                                            "end_running": end_running, "ended_runs": len(ended)})
    log.info("api: %s cancelled backfill %s (%d runs ended)", user.username, backfill_id,
             len(ended))
    return {**_detail(session, row), "ended_runs": ended}


def _date(value: str, timezone: str, field: str) -> datetime:
    try:
        parsed = pendulum.parse(value, tz=timezone)
    except (ValueError, pendulum.parsing.exceptions.ParserError):
        raise bad_request(f"{field}: {value!r} is not an ISO 8601 date or datetime") from None
    if not isinstance(parsed, datetime):
        raise bad_request(f"{field}: {value!r} is not a date or datetime")
    return parsed


@router.post("/backfills", summary="Create a backfill", tags=["Backfill"],
             response_model=BackfillCreated, responses=CONFLICT)
def post_backfill(body: BackfillBody, request: Request, session: DB,
                  user: Op) -> dict[str, Any]:
    """As ``squall dags backfill --detach``: plans the runs of ``[from_date, to_date]`` and
    records the backfill; the scheduler creates its runs. 409 when the DAG already has a
    run for every date of the range (nothing to backfill)."""
    if session.get(DagModel, body.dag_id) is None:
        raise not_found(f"DAG with dag_id: '{body.dag_id}' not found")
    dag = load_serialized_dags(session, [body.dag_id]).get(body.dag_id)
    if dag is None:
        raise not_found(f"DAG with dag_id: '{body.dag_id}' has no serialized form yet "
                        "(not parsed)")
    timezone = api_state(request).settings.core.default_timezone
    options = BackfillOptions(
        from_date=_date(body.from_date, timezone, "from_date"),
        to_date=_date(body.to_date, timezone, "to_date"), run_backwards=body.run_backwards,
        max_active_runs=body.max_active_runs, conf=body.dag_run_conf,
        task_regex=body.task_regex, ignore_dependencies=body.ignore_dependencies,
        ignore_first_depends_on_past=body.ignore_first_depends_on_past,
        mark_success=body.mark_success, pool=body.pool, delay_on_limit=body.delay_on_limit,
        rerun_failed_tasks=body.rerun_failed_tasks, reset_dagruns=body.reset_dagruns)
    try:
        plan = plan_requested(session, dag, options)
        if not plan.runs and not plan.joining:
            raise ApiProblem(409, f"nothing to backfill: DAG {dag.dag_id} has a run for "
                             "every date of the range")
        row = create_requested(session, dag, options, plan, now=utcnow())
    except BackfillError as exc:
        raise bad_request(str(exc)) from None
    audit.record_event(session, audit.BACKFILL, owner=user.username, dag_id=dag.dag_id,
                       source="api",
                       extra=audit.backfill_extra(row.id, options, len(plan.runs)))
    log.info("api: %s created backfill %s of %s", user.username, row.id, dag.dag_id)
    return {**_detail(session, row), "planned_runs": [r.run_id for r in plan.runs],
            "rerun": [r.run_id for r in plan.rerun],
            "taken_in": [r.run_id for r in plan.taken_in],
            "existing": [r.run_id for r in plan.existing if not r.joins]}
