"""``/api/v1/eventLogs``: the audit log (:mod:`squall.runs.audit`), as Airflow 2.10's REST
API answers it: list (filters, order, pages) and get one entry. Reading needs ``viewer``.

The filters are Airflow's: ``dag_id``, ``task_id``, ``run_id``, ``map_index``,
``try_number``, ``owner``, ``event`` (exact), ``included_events`` / ``excluded_events``
(comma-separated names), ``before`` / ``after`` (``when`` strictly before / after; a date
without a UTC offset is in ``[core] default_timezone``). ``order_by`` defaults to
``event_log_id`` (oldest first), as Airflow's; the web UI's audit page shows newest first.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import Select, select

from squall.api.auth import Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import ApiProblem
from squall.api.routes.dag_runs import CHECKS, DateQuery, aware, default_tz
from squall.api.schemas import ERRORS
from squall.api.schemas_audit import EventLog, EventLogCollection
from squall.api.serializers import iso
from squall.api.state import DB
from squall.common.models import AuditLog

router = APIRouter(prefix="/api/v1", tags=["EventLog"], responses=ERRORS,
                   dependencies=CHECKS)

_ORDER = {"event_log_id": AuditLog.id, "when": AuditLog.dttm, "dag_id": AuditLog.dag_id,
          "task_id": AuditLog.task_id, "run_id": AuditLog.run_id, "event": AuditLog.event,
          "execution_date": AuditLog.execution_date, "owner": AuditLog.owner,
          "extra": AuditLog.extra}

EventNames = Annotated[str | None, Query(description="event names, comma-separated")]


def event_log_json(row: AuditLog) -> dict[str, Any]:
    return {"event_log_id": row.id, "when": iso(row.dttm), "dag_id": row.dag_id,
            "task_id": row.task_id, "run_id": row.run_id, "map_index": row.map_index,
            "try_number": row.try_number, "event": row.event,
            "execution_date": iso(row.execution_date), "owner": row.owner,
            "extra": row.extra}


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


def filtered(stmt: Select[Any], *, dag_id: str | None = None, task_id: str | None = None,
             run_id: str | None = None, map_index: int | None = None,
             try_number: int | None = None, owner: str | None = None,
             event: str | None = None, included: list[str] | None = None,
             excluded: list[str] | None = None, before: Any = None,
             after: Any = None) -> Select[Any]:
    """``stmt`` on :class:`AuditLog` narrowed by Airflow's filters (the web UI's page uses
    it too); ``before`` / ``after`` are aware datetimes."""
    for column, value in ((AuditLog.dag_id, dag_id), (AuditLog.task_id, task_id),
                          (AuditLog.run_id, run_id), (AuditLog.owner, owner),
                          (AuditLog.event, event)):
        if value:
            stmt = stmt.where(column == value)
    if map_index is not None:
        stmt = stmt.where(AuditLog.map_index == map_index)
    if try_number is not None:
        stmt = stmt.where(AuditLog.try_number == try_number)
    if included:
        stmt = stmt.where(AuditLog.event.in_(included))
    if excluded:
        stmt = stmt.where(AuditLog.event.not_in(excluded))
    if before is not None:
        stmt = stmt.where(AuditLog.dttm < before)
    if after is not None:
        stmt = stmt.where(AuditLog.dttm > after)
    return stmt


@router.get("/eventLogs", summary="List log entries", response_model=EventLogCollection)
def get_event_logs(
    request: Request, pages: Paged, session: DB, user: Viewer, order: OrderBy = None,
    dag_id: str | None = None, task_id: str | None = None, run_id: str | None = None,
    map_index: int | None = None, try_number: int | None = None, event: str | None = None,
    owner: str | None = None, before: DateQuery = None, after: DateQuery = None,
    included_events: EventNames = None, excluded_events: EventNames = None,
) -> dict[str, Any]:
    tz = default_tz(request)
    stmt = filtered(select(AuditLog), dag_id=dag_id, task_id=task_id, run_id=run_id,
                    map_index=map_index, try_number=try_number, owner=owner, event=event,
                    included=_names(included_events), excluded=_names(excluded_events),
                    before=aware(before, tz), after=aware(after, tz))
    ordered = order_by(stmt, order, _ORDER, "event_log_id").order_by(AuditLog.id)
    return {"event_logs": [event_log_json(r) for r in session.scalars(pages.apply(ordered))],
            "total_entries": total(session, stmt)}


@router.get("/eventLogs/{event_log_id}", summary="Get a log entry", response_model=EventLog)
def get_event_log(event_log_id: int, session: DB, user: Viewer) -> dict[str, Any]:
    row = session.get(AuditLog, event_log_id)
    if row is None:
        raise ApiProblem(404, f"Event Log with id: {event_log_id} not found",
                         title="Event Log not found")
    return event_log_json(row)
