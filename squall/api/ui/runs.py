"""The web UI's runs (Airflow 2.10's Browse → DAG Runs and the grid's run panel):

* ``GET /ui/api/runs``: runs of every DAG, newest first, a page at a time, filtered by DAG
  id, state, run type and logical-date range (a bad filter value is a 400 naming it);
* ``GET /ui/api/dags/{dag_id}/runs/{run_id}``: one run as its panel shows it;
* ``POST /ui/api/runs/clear`` (``only_failed``) and ``POST /ui/api/runs/mark`` (``state``:
  success or failed) on a list of runs, ``op`` role and CSRF header as every UI action.
  With ``dry_run: true`` they only answer what would change (the task instances, old and
  new state, and the runs): the preview the UI confirms before it asks again without it.

Clearing a run is the clear command's selection and :func:`~squall.runs.clear.clear_task_instances`
(with the ExternalTaskMarkers followed, as Airflow's ``dagrun_clear`` does: recursive);
marking it is :func:`~squall.runs.mark_run.mark_run`, as the REST API's ``PATCH`` of a run.
Each run changed gets an audit entry (:func:`squall.runs.audit.record_event`) in the same
transaction."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from squall.api.auth import Op, Role, Viewer
from squall.api.problems import bad_request
from squall.api.routes.dag_runs import default_tz, get_run, parse_date, serialized_dag
from squall.api.state import DB
from squall.api.ui.data import iso
from squall.common.models import DagModel, DagRun, TaskInstance, lock_runs, utcnow
from squall.common.state import ONLY_FAILED_STATES, DagRunState, DagRunType, TaskInstanceState
from squall.runs import audit
from squall.runs.backfill_progress import ended_backfill_notes
from squall.runs.clear import (
    clear_task_instances,
    cleared_state,
    follow_markers,
    select_task_instances,
)
from squall.runs.external_clear import ClearError
from squall.runs.mark_run import mark_run, new_ti_state
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui/api", include_in_schema=False)

JsonBody = Annotated[dict[str, Any], Body()]

#: runs per page of the runs list, by default and at most
RUNS_PAGE = 25
MAX_RUNS_PAGE = 100
#: runs one action takes at most, and task instances a preview lists at most
MAX_ACTION_RUNS = 100
MAX_PREVIEW = 500
MARKS = {"success": DagRunState.SUCCESS, "failed": DagRunState.FAILED}


def run_json(run: DagRun) -> dict[str, Any]:
    duration = None
    if run.start_date is not None and run.end_date is not None:
        duration = (run.end_date - run.start_date).total_seconds()
    return {"dag_id": run.dag_id, "run_id": run.run_id, "state": run.state,
            "run_type": run.run_type, "logical_date": iso(run.logical_date),
            "data_interval_start": iso(run.data_interval_start),
            "data_interval_end": iso(run.data_interval_end),
            "queued_at": iso(run.queued_at), "start_date": iso(run.start_date),
            "end_date": iso(run.end_date), "duration": duration,
            "external_trigger": run.external_trigger, "conf": run.conf or {},
            "backfill_id": run.backfill_id}


def _one_of(name: str, value: str | None, known: type[DagRunState] | type[DagRunType],
            ) -> str | None:
    if not value:
        return None
    names = [k.value for k in known]
    if value not in names:
        raise bad_request(f"{name} {value!r} is not one of: {', '.join(names)}")
    return value


def _user(user: Viewer) -> dict[str, Any]:
    return {"username": user.username, "role": user.role.value, "may_act": user.may(Role.OP)}


@router.get("/runs")
def runs(request: Request, session: DB, user: Viewer, dag_id: str | None = None,
         state: str | None = None, run_type: str | None = None,
         logical_date_gte: str | None = None, logical_date_lte: str | None = None,
         page: int = Query(1, ge=1),
         limit: int = Query(RUNS_PAGE, ge=1, le=MAX_RUNS_PAGE)) -> dict[str, Any]:
    """A page of runs, newest logical date first; an empty filter is no filter. Dates are
    ISO 8601, a wall time without an offset in ``[core] default_timezone``."""
    stmt = select(DagRun)
    if dag_id:
        stmt = stmt.where(DagRun.dag_id == dag_id)
    if wanted := _one_of("state", state, DagRunState):
        stmt = stmt.where(DagRun.state == wanted)
    if kind := _one_of("run_type", run_type, DagRunType):
        stmt = stmt.where(DagRun.run_type == kind)
    tz = default_tz(request)
    low = parse_date(logical_date_gte, tz, "logical_date_gte") if logical_date_gte else None
    high = parse_date(logical_date_lte, tz, "logical_date_lte") if logical_date_lte else None
    if low is not None and high is not None and low > high:
        raise bad_request("logical_date_gte is after logical_date_lte: no run can match")
    if low is not None:
        stmt = stmt.where(DagRun.logical_date >= low)
    if high is not None:
        stmt = stmt.where(DagRun.logical_date <= high)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(DagRun.logical_date.desc(), DagRun.id.desc())
                           .limit(limit).offset((page - 1) * limit))
    return {"user": _user(user), "runs": [run_json(r) for r in rows], "total": total,
            "page": page, "limit": limit,
            "dag_ids": list(session.scalars(select(DagModel.dag_id)
                                            .order_by(DagModel.dag_id)))}


@router.get("/dags/{dag_id}/runs/{run_id}")
def run_detail(dag_id: str, run_id: str, session: DB, user: Viewer) -> dict[str, Any]:
    """A run as its panel shows it, with its task instances counted by state."""
    run = get_run(session, dag_id, run_id)
    counts = {state: n for state, n in session.execute(
        select(TaskInstance.state, func.count()).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        .group_by(TaskInstance.state))}
    return {**run_json(run), "user": _user(user), "task_states": counts,
            "note": ended_backfill_notes(session, dag_id, [run_id]).get(run_id)}


# --------------------------------------------------------------------------- actions


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false")
    return value


def _targets(session: Session, body: dict[str, Any]) -> list[DagRun]:
    """The body's ``runs`` (``[{"dag_id": ..., "run_id": ...}, ...]``), each found (a 404
    otherwise), once each, locked in id order (as the scheduler locks them)."""
    items = body.get("runs")
    if not isinstance(items, list) or not items:
        raise bad_request('runs must be a non-empty list of {"dag_id": ..., "run_id": ...}')
    if len(items) > MAX_ACTION_RUNS:
        raise bad_request(f"at most {MAX_ACTION_RUNS} runs at a time ({len(items)} given)")
    keys: list[tuple[str, str]] = []
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("dag_id"), str)
                and isinstance(item.get("run_id"), str)):
            raise bad_request('each of runs must be {"dag_id": "...", "run_id": "..."}')
        if (item["dag_id"], item["run_id"]) not in keys:
            keys.append((item["dag_id"], item["run_id"]))
    found = [get_run(session, dag_id, run_id) for dag_id, run_id in keys]
    lock_runs(session, keys)
    return found


def _ti_row(ti: TaskInstance, new: TaskInstanceState) -> dict[str, Any]:
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id,
            "map_index": ti.map_index, "state": ti.state, "new_state": new.value}


def _preview(changes: list[dict[str, Any]], run_rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dry_run": True, "total_task_instances": len(changes),
            "task_instances": changes[:MAX_PREVIEW], "runs": run_rows}


@router.post("/runs/clear")
def clear_runs(body: JsonBody, session: DB, user: Op) -> dict[str, Any]:
    """Clear the runs' task instances (``only_failed``: the failed and upstream_failed
    ones), with those of other DAGs their ExternalTaskMarkers reach."""
    only_failed, dry_run = _flag(body, "only_failed"), _flag(body, "dry_run")
    targets = _targets(session, body)
    states = list(ONLY_FAILED_STATES) if only_failed else None
    dags: dict[str, DAG] = {}
    plan: list[tuple[DagRun, DAG, list[TaskInstance]]] = []
    seen: set[Any] = set()
    for run in targets:
        dag = dags.get(run.dag_id) or dags.setdefault(run.dag_id,
                                                      serialized_dag(session, run.dag_id))
        try:
            tis = follow_markers(session, dag, select_task_instances(
                session, dag, run_id=run.run_id, states=states), states=states)
        except ClearError as exc:
            raise bad_request(str(exc)) from None
        fresh = [ti for ti in tis if ti.key not in seen]
        seen.update(ti.key for ti in fresh)
        plan.append((run, dag, fresh))
    if dry_run:
        changes = [_ti_row(ti, new) for _, _, tis in plan for ti in tis
                   if (new := cleared_state(TaskInstanceState(ti.state))) is not None]
        touched = {(c["dag_id"], c["run_id"]) for c in changes}
        return _preview(changes, [
            {"dag_id": r.dag_id, "run_id": r.run_id, "state": r.state,
             "new_state": DagRunState.QUEUED.value if (r.dag_id, r.run_id) in touched
             and r.state in (DagRunState.SUCCESS, DagRunState.FAILED) else r.state}
            for r in targets])
    cleared: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    requeued: list[dict[str, str]] = []
    for run, dag, tis in plan:
        result = clear_task_instances(
            session, tis, dag, utcnow(),
            reason=f"run cleared by {user.username} in the web UI")
        cleared += [{"dag_id": c.key.dag_id, "run_id": c.key.run_id,
                     "task_id": c.key.task_id, "map_index": c.key.map_index,
                     "state": c.old_state.value, "new_state": c.new_state.value}
                    for c in result.cleared]
        changed += [{"dag_id": k.dag_id, "run_id": k.run_id, "task_id": k.task_id,
                     "map_index": k.map_index} for k in result.changed]
        requeued += [{"dag_id": d, "run_id": r} for d, r in result.reactivated_runs]
        audit.record_event(session, audit.RUN_CLEAR, owner=user.username, dag_id=run.dag_id,
                           run_id=run.run_id, logical_date=run.logical_date, source="ui",
                           extra={"only_failed": only_failed,
                                  "cleared": len(result.cleared)})
        log.info("ui: %s cleared run %s %s%s: %d task instance(s)", user.username,
                 run.dag_id, run.run_id, " (only failed)" if only_failed else "",
                 len(result.cleared))
    return {"dry_run": False, "cleared": cleared, "changed_meanwhile": changed,
            "runs_queued_again": requeued}


@router.post("/runs/mark")
def mark_runs(body: JsonBody, session: DB, user: Op) -> dict[str, Any]:
    """Mark the runs success or failed (``state``), their task instances with them as the
    REST API's ``PATCH`` of a run does (:mod:`squall.runs.mark_run`)."""
    state = MARKS.get(str(body.get("state")))
    if state is None:
        raise bad_request("state must be success or failed")
    dry_run = _flag(body, "dry_run")
    targets = _targets(session, body)
    if dry_run:
        keys = {(r.dag_id, r.run_id) for r in targets}
        tis = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id.in_({d for d, _ in keys}),
            TaskInstance.run_id.in_({r for _, r in keys}))
            .order_by(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id,
                      TaskInstance.map_index))
        changes = [_ti_row(ti, new) for ti in tis if (ti.dag_id, ti.run_id) in keys
                   and (new := new_ti_state(TaskInstanceState(ti.state), state)) is not None]
        return _preview(changes, [{"dag_id": r.dag_id, "run_id": r.run_id, "state": r.state,
                                   "new_state": state.value} for r in targets])
    marked: list[dict[str, Any]] = []
    left: list[dict[str, str]] = []
    for run in targets:
        count = mark_run(session, run.dag_id, run.run_id, state, now=utcnow(),
                         reason=f"run marked {state.value} by {user.username} in the web UI")
        if count is None:
            left.append({"dag_id": run.dag_id, "run_id": run.run_id})
            continue
        marked.append({"dag_id": run.dag_id, "run_id": run.run_id, "changed": count})
        audit.record_event(session, audit.run_mark_event(state), owner=user.username,
                           dag_id=run.dag_id,
                           run_id=run.run_id, logical_date=run.logical_date, source="ui",
                           extra={"changed": count})
        log.info("ui: %s marked run %s %s %s: %d task instance(s) changed", user.username,
                 run.dag_id, run.run_id, state.value, count)
    return {"dry_run": False, "state": state.value, "marked": marked,
            "changed_meanwhile": left}
