"""``/api/v1/dags/{dag_id}/dagRuns``: list (``~`` for every DAG, and the batch form
``POST /dags/~/dagRuns/list``), get, trigger, set the state of, clear and delete DAG runs.

Setting a run's state is :func:`squall.runs.mark_run.mark_run` (Airflow 2's
``set_dag_run_state_to_*``: success, failed or queued).

Deleting a run deletes its task instances, XComs and reschedules with it (the database's
cascades), as Airflow does; a try still running is killed by its supervisor at its next
heartbeat, which finds its row gone.

The date helpers here (:func:`aware`, :func:`date_range`, ...) are shared with the task
instance and experimental routes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import pendulum
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BeforeValidator
from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from squall.api.auth import Op, Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import ApiProblem, bad_request, not_found
from squall.api.routes.dags import get_dag_row
from squall.api.schemas import ERRORS, DAGRun, DAGRunCollection, Error, TaskInstanceCollection
from squall.api.schemas_runs import (
    ClearDagRun,
    ListDagRunsForm,
    TriggerDAGRun,
    UpdateDagRunState,
    has_nul,
)
from squall.api.serializers import (
    dag_run_json,
    task_display_names,
    task_instance_json,
    triggers_of,
)
from squall.api.state import DB, api_state
from squall.common.errors import TriggerError
from squall.common.models import (
    DagRun,
    SlaMiss,
    TaskInstance,
    utcnow,
)
from squall.common.state import DagRunState, TaskInstanceState
from squall.common.wakeup import notify_scheduler
from squall.dag_processing.sync import load_serialized_dags
from squall.runs import audit
from squall.runs.clear import clear_task_instances, select_task_instances
from squall.runs.mark_run import mark_run
from squall.runs.trigger import trigger_run
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)



def refuse_nul(request: Request) -> None:
    """A 400 for a NUL character in the path or the query (PostgreSQL cannot compare a
    string holding one), rather than a database error."""
    values = [*request.path_params.values(),
              *(v for _, v in request.query_params.multi_items())]
    if any(has_nul(str(v)) for v in values):
        raise bad_request("NUL characters (\\u0000) are not allowed in the path or the query")


#: what every router of these routes depends on
CHECKS = [Depends(refuse_nul)]
router = APIRouter(prefix="/api/v1", tags=["DAGRun"], responses=ERRORS, dependencies=CHECKS)

#: ``~`` in a path: every DAG (or every run)
ANY = "~"
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Error, "description": "a run with that id or logical date exists"}}

_ORDER = {"id": DagRun.id, "dag_id": DagRun.dag_id, "dag_run_id": DagRun.run_id,
          "state": DagRun.state, "run_type": DagRun.run_type,
          "execution_date": DagRun.logical_date, "logical_date": DagRun.logical_date,
          "start_date": DagRun.start_date, "end_date": DagRun.end_date,
          "updated_at": DagRun.updated_at, "external_trigger": DagRun.external_trigger}



def _plus_back(value: Any) -> Any:
    """A ``+`` of a UTC offset left unescaped in a query string arrives as a space."""
    if isinstance(value, str) and " " in value.strip():
        return value.strip().replace(" ", "+")
    return value


#: a date query parameter (ISO 8601)
DateQuery = Annotated[datetime | None, BeforeValidator(_plus_back),
                      Query(description="ISO 8601 date and time")]


# --------------------------------------------------------------------------- helpers


def default_tz(request: Request) -> str:
    return api_state(request).settings.core.default_timezone


def aware(value: datetime | None, tz: str) -> datetime | None:
    """``value`` in UTC: one given without a UTC offset is a wall time in ``tz``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=pendulum.timezone(tz))
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise bad_request(f"date {value.isoformat()} is out of range in UTC") from None


def parse_date(text: str, tz: str, what: str = "date") -> datetime:
    """An ISO 8601 date or date and time from a path; a 400 problem when it is not one."""
    try:
        parsed = pendulum.parse(text, tz=tz)
    except (ValueError, pendulum.parsing.exceptions.ParserError):
        parsed = None
    if not isinstance(parsed, datetime):
        raise bad_request(f"{what} {text!r} is not an ISO 8601 date or date and time "
                          "(e.g. 2024-01-31T12:00:00+00:00)")
    utc = aware(parsed, tz)
    assert utc is not None
    return utc


def date_range(stmt: Select[Any], tz: str, column: Any, gte: datetime | None,
               lte: datetime | None) -> Select[Any]:
    low, high = aware(gte, tz), aware(lte, tz)
    if low is not None:
        stmt = stmt.where(column >= low)
    if high is not None:
        stmt = stmt.where(column <= high)
    return stmt


def check_states(values: list[str] | None, known: type[DagRunState] | type[TaskInstanceState],
                 what: str = "state") -> list[str] | None:
    """The states asked for, each a known one (else a 400)."""
    if not values:
        return None
    names = [s.value for s in known]
    unknown = [v for v in values if v not in names]
    if unknown:
        raise bad_request(f"{what} {', '.join(map(repr, unknown))} is not one of: "
                          f"{', '.join(names)}")
    return list(values)


def trigger_problem(exc: TriggerError) -> ApiProblem:
    """The HTTP problem of a refused trigger: 404, 400 or 409 (a run exists)."""
    if exc.kind == TriggerError.NOT_FOUND:
        return not_found(str(exc))
    if exc.kind == TriggerError.EXISTS:
        return ApiProblem(409, str(exc))
    return bad_request(str(exc))


def get_run(session: Session, dag_id: str, run_id: str) -> DagRun:
    """The run; a 404 naming what is missing (the DAG, or its run)."""
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id,
                                              DagRun.run_id == run_id))
    if run is None:
        get_dag_row(session, dag_id)
        raise not_found(f"DAGRun with DAG ID: '{dag_id}' and DagRun ID: '{run_id}' not found")
    return run


def serialized_dag(session: Session, dag_id: str, *, only_active: bool = False) -> DAG:
    """``dag_id`` as last parsed into ``serialized_dag``; a 404 when it is not there."""
    get_dag_row(session, dag_id)
    dag = load_serialized_dags(session, [dag_id], only_active=only_active).get(dag_id)
    if dag is None:
        raise not_found(f"DAG with dag_id: '{dag_id}' has no usable serialized form "
                        + ("or is not active" if only_active else "(not parsed yet)"))
    return dag


def checked_page(request: Request, limit: int | None) -> int:
    """A batch form's ``page_limit``: ``[api] page_size`` when not given, at most ``[api]
    maximum_page_limit``."""
    settings = api_state(request).settings.api
    if limit is None:
        return settings.page_size
    maximum = settings.maximum_page_limit
    if limit > maximum:
        raise bad_request(f"page_limit {limit} is over the maximum of {maximum} "
                          "([api] maximum_page_limit)")
    return limit


def _filtered_runs(stmt: Select[Any], tz: str, *, states: list[str] | None,
                   dates: dict[str, tuple[datetime | None, datetime | None]]) -> Select[Any]:
    columns = {"execution_date": DagRun.logical_date, "start_date": DagRun.start_date,
               "end_date": DagRun.end_date, "updated_at": DagRun.updated_at}
    for name, (gte, lte) in dates.items():
        stmt = date_range(stmt, tz, columns[name], gte, lte)
    wanted = check_states(states, DagRunState)
    if wanted:
        stmt = stmt.where(DagRun.state.in_(wanted))
    return stmt


# --------------------------------------------------------------------------- reads


@router.get("/dags/{dag_id}/dagRuns", summary="List DAG runs (`~` as dag_id: of every DAG)",
            response_model=DAGRunCollection)
def list_dag_runs(
    dag_id: str, request: Request, pages: Paged, session: DB, user: Viewer,
    order: OrderBy = None,
    execution_date_gte: DateQuery = None, execution_date_lte: DateQuery = None,
    start_date_gte: DateQuery = None, start_date_lte: DateQuery = None,
    end_date_gte: DateQuery = None, end_date_lte: DateQuery = None,
    updated_at_gte: DateQuery = None, updated_at_lte: DateQuery = None,
    state: Annotated[list[str] | None, Query(description="any of these states")] = None,
) -> dict[str, Any]:
    stmt = select(DagRun)
    if dag_id != ANY:
        get_dag_row(session, dag_id)
        stmt = stmt.where(DagRun.dag_id == dag_id)
    stmt = _filtered_runs(stmt, default_tz(request), states=state, dates={
        "execution_date": (execution_date_gte, execution_date_lte),
        "start_date": (start_date_gte, start_date_lte),
        "end_date": (end_date_gte, end_date_lte),
        "updated_at": (updated_at_gte, updated_at_lte)})
    ordered = order_by(stmt, order, _ORDER, "id").order_by(DagRun.id)
    return {"dag_runs": [dag_run_json(r) for r in session.scalars(pages.apply(ordered))],
            "total_entries": total(session, stmt)}


@router.post("/dags/~/dagRuns/list", summary="List DAG runs of several DAGs (batch form)",
             response_model=DAGRunCollection)
def list_dag_runs_batch(body: ListDagRunsForm, request: Request, session: DB,
                        user: Viewer) -> dict[str, Any]:
    limit = checked_page(request, body.page_limit)
    stmt = select(DagRun)
    if body.dag_ids is not None:
        stmt = stmt.where(DagRun.dag_id.in_(body.dag_ids))
    stmt = _filtered_runs(stmt, default_tz(request), states=body.states, dates={
        "execution_date": (body.execution_date_gte, body.execution_date_lte),
        "start_date": (body.start_date_gte, body.start_date_lte),
        "end_date": (body.end_date_gte, body.end_date_lte)})
    ordered = order_by(stmt, body.order_by, _ORDER, "id").order_by(DagRun.id)
    rows = session.scalars(ordered.limit(limit).offset(body.page_offset))
    return {"dag_runs": [dag_run_json(r) for r in rows], "total_entries": total(session, stmt)}


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}", summary="Get a DAG run",
            response_model=DAGRun)
def get_dag_run(dag_id: str, dag_run_id: str, session: DB, user: Viewer) -> dict[str, Any]:
    return dag_run_json(get_run(session, dag_id, dag_run_id))


# --------------------------------------------------------------------------- writes


@router.post("/dags/{dag_id}/dagRuns", summary="Trigger a DAG run (queued; a paused DAG's "
             "run starts once it is unpaused)", response_model=DAGRun, responses=CONFLICT)
def trigger_dag_run(dag_id: str, body: TriggerDAGRun, request: Request, session: DB,
                    user: Op) -> dict[str, Any]:
    tz = default_tz(request)
    logical, older = aware(body.logical_date, tz), aware(body.execution_date, tz)
    if logical is not None and older is not None and logical != older:
        raise bad_request("logical_date and execution_date differ: give one of them")
    settings = api_state(request).settings
    try:
        run = trigger_run(session, dag_id, run_id=body.dag_run_id,
                          logical_date=logical or older, conf=body.conf,
                          triggered_by=f"{user.username} through the API",
                          default_queue=settings.celery.default_queue).run
    except TriggerError as exc:
        raise trigger_problem(exc) from None
    audit.record_event(session, audit.TRIGGER, owner=user.username, dag_id=dag_id,
                       run_id=run.run_id, logical_date=run.logical_date, source="api",
                       extra={"conf": body.conf} if body.conf else None)
    return dag_run_json(run)


@router.patch("/dags/{dag_id}/dagRuns/{dag_run_id}", summary="Set a DAG run's state "
              "(success, failed or queued)", response_model=DAGRun)
def update_dag_run_state(dag_id: str, dag_run_id: str, body: UpdateDagRunState,
                         session: DB, user: Op) -> dict[str, Any]:
    run = get_run(session, dag_id, dag_run_id)
    mark_run(session, run.dag_id, run.run_id, DagRunState(body.state), now=utcnow(),
             reason=f"run set to {body.state} through the API by {user.username}")
    audit.record_event(session, audit.run_mark_event(body.state), owner=user.username,
                       dag_id=run.dag_id, run_id=run.run_id, logical_date=run.logical_date,
                       source="api")
    session.expire_all()
    return dag_run_json(get_run(session, dag_id, dag_run_id))


@router.delete("/dags/{dag_id}/dagRuns/{dag_run_id}", summary="Delete a DAG run and its "
               "task instances", status_code=204, response_class=Response,
               responses={204: {"description": "deleted"}})
def delete_dag_run(dag_id: str, dag_run_id: str, session: DB, user: Op) -> Response:
    run = get_run(session, dag_id, dag_run_id)
    session.execute(delete(DagRun).where(DagRun.dag_id == run.dag_id,
                                         DagRun.run_id == run.run_id))
    notify_scheduler(session, f"{dag_id} run deleted")
    audit.record_event(session, audit.RUN_DELETE, owner=user.username, dag_id=dag_id,
                       run_id=dag_run_id, logical_date=run.logical_date, source="api",
                       extra={"state": run.state})
    log.info("DagRun %s %s (%s) deleted through the API by %s", dag_id, dag_run_id, run.state,
             user.username)
    return Response(status_code=204)


@router.post("/dags/{dag_id}/dagRuns/{dag_run_id}/clear",
             summary="Clear every task instance of a DAG run (dry_run: only list them)",
             response_model=DAGRun | TaskInstanceCollection)
def clear_dag_run(dag_id: str, dag_run_id: str, body: ClearDagRun, session: DB,
                  user: Op) -> dict[str, Any]:
    run = get_run(session, dag_id, dag_run_id)
    dag = serialized_dag(session, dag_id)
    tis = select_task_instances(session, dag, run_id=run.run_id)
    if body.dry_run:
        return {"task_instances": tis_json(session, [(ti, run) for ti in tis]),
                "total_entries": len(tis)}
    result = clear_task_instances(session, tis, dag, utcnow())
    if tis:  # (nothing selected: nothing done, no entry)
        audit.record_event(session, audit.RUN_CLEAR, owner=user.username, dag_id=dag_id,
                           run_id=run.run_id, logical_date=run.logical_date, source="api",
                           extra={"cleared": len(result.cleared)})
    log.info("DagRun %s %s: %d task instances cleared through the API by %s (%d changed "
             "meanwhile)", dag_id, dag_run_id, len(result.cleared), user.username,
             len(result.changed))
    session.expire_all()
    return dag_run_json(get_run(session, dag_id, dag_run_id))


def sla_misses(session: Session,
               tis: list[TaskInstance]) -> dict[tuple[str, str, str], SlaMiss]:
    """The missed SLAs of ``tis``, by (dag_id, task_id, run_id)."""
    if not tis:
        return {}
    rows = session.scalars(select(SlaMiss).where(
        SlaMiss.dag_id.in_(sorted({ti.dag_id for ti in tis})),
        SlaMiss.task_id.in_(sorted({ti.task_id for ti in tis})),
        SlaMiss.run_id.in_(sorted({ti.run_id for ti in tis}))))
    return {(m.dag_id, m.task_id, m.run_id): m for m in rows}


def tis_json(session: Session, pairs: list[tuple[TaskInstance, DagRun]]) -> list[dict[str, Any]]:
    """Task instances with their runs, as Airflow's API answers them (with their missed
    SLAs)."""
    misses = sla_misses(session, [ti for ti, _ in pairs])
    names = task_display_names(session, sorted({ti.dag_id for ti, _ in pairs}))
    triggers = triggers_of(session, [ti for ti, _ in pairs])
    return [task_instance_json(ti, run, misses.get((ti.dag_id, ti.task_id, ti.run_id)),
                               names.get((ti.dag_id, ti.task_id)),
                               triggers.get(ti.trigger_id) if ti.trigger_id else None)
            for ti, run in pairs]


def logical_dates(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str],
                                                                        datetime]:
    """The logical date of each ``(dag_id, run_id)``."""
    if not keys:
        return {}
    pairs = sorted(set(keys))
    dag_ids = sorted({d for d, _ in pairs})
    rows = session.execute(select(DagRun.dag_id, DagRun.run_id, DagRun.logical_date)
                           .where(DagRun.dag_id.in_(dag_ids),
                                  DagRun.run_id.in_(sorted({r for _, r in pairs}))))
    return {(d, r): when for d, r, when in rows}

