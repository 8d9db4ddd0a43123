"""``/api/v1/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances``: list (``~`` for every DAG
and / or run, and the batch form ``POST /dags/~/dagRuns/~/taskInstances/list``), get, mark
(PATCH ``new_state``; with relatives, ``POST /dags/{dag_id}/updateTaskInstancesState``), and
``POST /dags/{dag_id}/clearTaskInstances``; the instances of a mapped task:
``.../taskInstances/{task_id}/listMapped``, and get and mark one at
``.../taskInstances/{task_id}/{map_index}`` (``.../taskInstances/{task_id}`` is a 404 for a
mapped task, as in Airflow).

Marking is :mod:`squall.runs.mark`'s (what ``squall tasks set-state`` does): the task
instance is changed by compare-and-set, a finished run is handed back to the scheduler, and
when marked success or skipped its failed task instances downstream are cleared to run
again. Clearing is :mod:`squall.runs.clear`'s (what ``squall tasks clear`` does). As in
Airflow, both default to ``dry_run: true``, and clearing to ``only_failed: true``.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from squall.api.auth import Op, Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import ApiProblem, bad_request, not_found
from squall.api.routes.dag_runs import (
    ANY,
    CHECKS,
    DateQuery,
    aware,
    check_states,
    checked_page,
    date_range,
    default_tz,
    get_run,
    logical_dates,
    serialized_dag,
    tis_json,
)
from squall.api.routes.dags import get_dag_row
from squall.api.schemas import ERRORS, Error, TaskInstanceCollection
from squall.api.schemas import TaskInstance as TaskInstanceOut
from squall.api.schemas_runs import (
    ClearTaskInstances,
    ListTaskInstanceForm,
    TaskInstanceReference,
    TaskInstanceReferenceCollection,
    UpdateTaskInstance,
    UpdateTaskInstancesState,
)
from squall.api.state import DB
from squall.common.errors import TaskNotFound
from squall.common.models import DagRun, TaskInstance, TaskInstanceKey, utcnow
from squall.common.state import ONLY_FAILED_STATES, ONLY_RUNNING_STATES, TaskInstanceState
from squall.runs import audit
from squall.runs.clear import clear_task_instances, follow_markers, select_task_instances
from squall.runs.external_clear import ClearError
from squall.runs.mark import apply_marks, select_marks

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["TaskInstance"], responses=ERRORS,
                   dependencies=CHECKS)

TI = TaskInstance

_ORDER = {"task_id": TI.task_id, "dag_id": TI.dag_id, "dag_run_id": TI.run_id,
          "execution_date": DagRun.logical_date, "logical_date": DagRun.logical_date,
          "state": TI.state, "start_date": TI.start_date, "end_date": TI.end_date,
          "duration": TI.duration, "try_number": TI.try_number, "pool": TI.pool,
          "queue": TI.queue, "priority_weight": TI.priority_weight,
          "updated_at": TI.updated_at, "map_index": TI.map_index}
_JOIN = (DagRun.dag_id == TI.dag_id) & (DagRun.run_id == TI.run_id)
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Error, "description": "the task instance changed meanwhile"}}

ListQuery = Annotated[list[str] | None, Query(description="any of these")]


def _filtered(stmt: Select[Any], tz: str, *, states: list[str] | None = None,
              pools: list[str] | None = None, queues: list[str] | None = None,
              duration: tuple[float | None, float | None] = (None, None),
              map_indexes: list[int] | None = None,
              dates: dict[str, tuple[datetime | None, datetime | None]]) -> Select[Any]:
    columns = {"execution_date": DagRun.logical_date, "start_date": TI.start_date,
               "end_date": TI.end_date, "updated_at": TI.updated_at}
    for name, (gte, lte) in dates.items():
        stmt = date_range(stmt, tz, columns[name], gte, lte)
    wanted = check_states(states, TaskInstanceState)
    if wanted:
        stmt = stmt.where(TI.state.in_(wanted))
    if pools:
        stmt = stmt.where(TI.pool.in_(pools))
    if queues:
        stmt = stmt.where(TI.queue.in_(queues))
    if map_indexes is not None:
        stmt = stmt.where(TI.map_index.in_(map_indexes))
    if duration[0] is not None:
        stmt = stmt.where(TI.duration >= duration[0])
    if duration[1] is not None:
        stmt = stmt.where(TI.duration <= duration[1])
    return stmt


def _both() -> Select[Any]:
    """Task instances with their runs (for the logical date)."""
    stmt: Any = select(TI, DagRun).join(DagRun, _JOIN)
    return cast(Select[Any], stmt)


def _page(session: Session, stmt: Select[Any], order: str | None, limit: int,
          offset: int) -> dict[str, Any]:
    ordered = (order_by(stmt, order, _ORDER, "execution_date")
               .order_by(TI.dag_id, TI.run_id, TI.task_id, TI.map_index))
    rows = session.execute(ordered.limit(limit).offset(offset)).all()
    return {"task_instances": tis_json(session, [(ti, run) for ti, run in rows]),
            "total_entries": total(session, stmt)}


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances",
            summary="List the task instances of a DAG run (`~` as dag_id and / or "
            "dag_run_id: of every DAG / run)", response_model=TaskInstanceCollection)
def list_task_instances(
    dag_id: str, dag_run_id: str, request: Request, pages: Paged, session: DB,
    user: Viewer, order: OrderBy = None,
    execution_date_gte: DateQuery = None, execution_date_lte: DateQuery = None,
    start_date_gte: DateQuery = None, start_date_lte: DateQuery = None,
    end_date_gte: DateQuery = None, end_date_lte: DateQuery = None,
    updated_at_gte: DateQuery = None, updated_at_lte: DateQuery = None,
    duration_gte: float | None = None, duration_lte: float | None = None,
    state: ListQuery = None, pool: ListQuery = None, queue: ListQuery = None,
) -> dict[str, Any]:
    stmt = _both()
    if dag_id != ANY:
        if dag_run_id != ANY:
            get_run(session, dag_id, dag_run_id)
        else:
            get_dag_row(session, dag_id)
        stmt = stmt.where(TI.dag_id == dag_id)
    if dag_run_id != ANY:
        stmt = stmt.where(TI.run_id == dag_run_id)
    stmt = _filtered(stmt, default_tz(request), states=state, pools=pool, queues=queue,
                     duration=(duration_gte, duration_lte), dates={
                         "execution_date": (execution_date_gte, execution_date_lte),
                         "start_date": (start_date_gte, start_date_lte),
                         "end_date": (end_date_gte, end_date_lte),
                         "updated_at": (updated_at_gte, updated_at_lte)})
    return _page(session, stmt, order, pages.limit, pages.offset)


@router.post("/dags/~/dagRuns/~/taskInstances/list",
             summary="List task instances across DAGs and runs (batch form)",
             response_model=TaskInstanceCollection)
def list_task_instances_batch(body: ListTaskInstanceForm, request: Request, session: DB,
                              user: Viewer) -> dict[str, Any]:
    limit = checked_page(request, body.page_limit)
    stmt = _both()
    if body.dag_ids is not None:
        stmt = stmt.where(TI.dag_id.in_(body.dag_ids))
    if body.dag_run_ids is not None:
        stmt = stmt.where(TI.run_id.in_(body.dag_run_ids))
    if body.task_ids is not None:
        stmt = stmt.where(TI.task_id.in_(body.task_ids))
    stmt = _filtered(stmt, default_tz(request), states=body.state, pools=body.pool,
                     queues=body.queue, duration=(body.duration_gte, body.duration_lte),
                     map_indexes=body.map_index,
                     dates={"execution_date": (body.execution_date_gte,
                                               body.execution_date_lte),
                            "start_date": (body.start_date_gte, body.start_date_lte),
                            "end_date": (body.end_date_gte, body.end_date_lte)})
    return _page(session, stmt, None, limit, body.page_offset)


def get_ti(session: Session, dag_id: str, run_id: str, task_id: str,
           map_index: int = -1) -> tuple[TI, DagRun]:
    """The task instance and its run; a 404 naming what is missing (for a mapped task
    without a ``map_index``: Airflow's "Task instance is mapped, add the map_index value to
    the URL")."""
    run = get_run(session, dag_id, run_id)
    ti = session.get(TI, (dag_id, task_id, run_id, map_index))
    if ti is not None:
        return ti, run
    if map_index == -1 and mapped_count(session, dag_id, run_id, task_id):
        raise not_found(f"Task instance {task_id!r} of DAGRun '{run_id}' is mapped, add the "
                        "map_index value to the URL (its instances: .../taskInstances/"
                        f"{task_id}/listMapped)")
    which = f"{task_id!r}" if map_index == -1 else f"{task_id!r} map_index {map_index}"
    raise not_found(f"Task instance {which} not found in DAGRun with DAG ID: "
                    f"'{dag_id}' and DagRun ID: '{run_id}'")


def mapped_count(session: Session, dag_id: str, run_id: str, task_id: str) -> int:
    """How many mapped instances (``map_index >= 0``) ``task_id`` has in the run."""
    return int(session.scalar(select(func.count()).select_from(TI).where(
        TI.dag_id == dag_id, TI.run_id == run_id, TI.task_id == task_id,
        TI.map_index >= 0)) or 0)


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}",
            summary="Get a task instance", response_model=TaskInstanceOut)
def get_task_instance(dag_id: str, dag_run_id: str, task_id: str, session: DB,
                      user: Viewer) -> dict[str, Any]:
    return tis_json(session, [get_ti(session, dag_id, dag_run_id, task_id)])[0]


def _reference(key: TaskInstanceKey, when: datetime) -> dict[str, Any]:
    return {"task_id": key.task_id, "dag_id": key.dag_id, "dag_run_id": key.run_id,
            "execution_date": when.isoformat()}


def _mark(session: Session, run: DagRun, task_id: str, new: TaskInstanceState, *,
          dry_run: bool, by: str, map_indexes: list[int] | None = None,
          relatives: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Mark ``task_id`` of ``run`` (only its instances ``map_indexes`` when given; and the
    ``relatives`` asked for: ``upstream``, ``downstream``, ``past``, ``future``) ``new``;
    the references of the task instances that change (``dry_run``: would change)."""
    dag = serialized_dag(session, run.dag_id)
    try:
        selection = select_marks(session, dag, task_id=task_id, run_id=run.run_id, state=new,
                                 map_indexes=map_indexes, **(relatives or {}))
    except TaskNotFound:
        raise not_found(f"Task {task_id!r} is no longer in DAG {run.dag_id!r}") from None
    if dry_run or (not selection.targets and not selection.to_clear):
        return [_reference(t.key, t.logical_date) for t in selection.targets]
    result = apply_marks(session, dag, selection, now=utcnow(),
                         reason=f"set to {new.value} through the API by {by}")
    if result.lost:
        raise ApiProblem(409, f"Task instance(s) {', '.join(str(t.key) for t in result.lost)} "
                         f"changed while being marked {new.value}; nothing changed: look "
                         "again and retry")
    audit.record_event(
        session, audit.task_mark_event(new), owner=by, dag_id=run.dag_id, task_id=task_id,
        run_id=run.run_id, logical_date=run.logical_date, source="api",
        map_index=map_indexes[0] if map_indexes and len(map_indexes) == 1 else None,
        extra={"changed": len(result.changed), "cleared_downstream":
               len(result.cleared.cleared), **{k: v for k, v in (relatives or {}).items() if v}})
    log.info("DAG %s: %d task instance(s) of %s marked %s through the API by %s (%d cleared "
             "downstream)", run.dag_id, len(result.changed), task_id, new.value, by,
             len(result.cleared.cleared))
    return [_reference(t.key, t.logical_date) for t in result.changed]


@router.patch("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}",
              summary="Mark a task instance success, failed or skipped (dry_run: only say "
              "which)", response_model=TaskInstanceReference, responses=CONFLICT)
def patch_task_instance(dag_id: str, dag_run_id: str, task_id: str,
                        body: UpdateTaskInstance, session: DB, user: Op) -> dict[str, Any]:
    return _patch_one(session, dag_id, dag_run_id, task_id, -1, body, user.username)


def _patch_one(session: Session, dag_id: str, dag_run_id: str, task_id: str, map_index: int,
               body: UpdateTaskInstance, by: str) -> dict[str, Any]:
    ti, run = get_ti(session, dag_id, dag_run_id, task_id, map_index)
    key, when = ti.key, run.logical_date
    _mark(session, run, task_id, TaskInstanceState(body.new_state), dry_run=body.dry_run,
          by=by, map_indexes=[map_index])
    return _reference(key, when)


@router.post("/dags/{dag_id}/updateTaskInstancesState", tags=["DAG"],
             summary="Mark a task instance and, as asked, its relatives success, failed or "
             "skipped (dry_run: only list them)",
             response_model=TaskInstanceReferenceCollection, responses=CONFLICT)
def set_task_instances_state(dag_id: str, body: UpdateTaskInstancesState, request: Request,
                             session: DB, user: Op) -> dict[str, Any]:
    get_dag_row(session, dag_id)
    if (body.dag_run_id is None) == (body.execution_date is None):
        raise bad_request("give one of dag_run_id and execution_date")
    if body.dag_run_id is not None:
        run = get_run(session, dag_id, body.dag_run_id)
    else:
        when = aware(body.execution_date, default_tz(request))
        found = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id,
                                                    DagRun.logical_date == when))
        if found is None:
            raise not_found(f"DAG {dag_id!r} has no run of execution_date {when}")
        run = found
    refs = _mark(session, run, body.task_id, TaskInstanceState(body.new_state),
                 dry_run=body.dry_run, by=user.username,
                 map_indexes=None if body.map_index is None else [body.map_index],
                 relatives={"upstream": body.include_upstream,
                            "downstream": body.include_downstream,
                            "past": body.include_past, "future": body.include_future})
    return {"task_instances": refs}


def _task_regex(dag_id: str, known: set[str],
                task_ids: list[str | tuple[str, int]] | None,
                ) -> tuple[str | None, dict[str, set[int]]]:
    """The regex of the task ids named (a task id alone, or ``[task_id, map_index]``), and
    the map indexes of the tasks named only by pairs (a task id alone: all instances)."""
    if task_ids is None:
        return None, {}
    whole = {t for t in task_ids if isinstance(t, str)}
    pairs: dict[str, set[int]] = {}
    for entry in task_ids:
        if not isinstance(entry, str) and entry[0] not in whole:
            pairs.setdefault(entry[0], set()).add(entry[1])
    names = whole | pairs.keys()
    missing = sorted(names - known)
    if missing:
        raise not_found(f"DAG {dag_id!r} has no task(s): {', '.join(missing)}")
    return "^(?:" + "|".join(re.escape(t) for t in sorted(names)) + ")$", pairs


@router.post("/dags/{dag_id}/clearTaskInstances", tags=["DAG"],
             summary="Clear task instances of a DAG so that they run again (dry_run: only "
             "list them)", response_model=TaskInstanceReferenceCollection)
def clear_tis(dag_id: str, body: ClearTaskInstances, request: Request, session: DB,
              user: Op) -> dict[str, Any]:
    get_dag_row(session, dag_id)
    if body.only_failed and body.only_running:
        raise bad_request("only_failed and only_running cannot both be true (only_failed "
                          "is true unless given false)")
    tz = default_tz(request)
    start, end = aware(body.start_date, tz), aware(body.end_date, tz)
    if start is not None and end is not None and start > end:
        raise bad_request("start_date is after end_date")
    run_id: str | None = None
    if body.dag_run_id is not None:
        run = get_run(session, dag_id, body.dag_run_id)
        if body.include_past or body.include_future:
            start = None if body.include_past else run.logical_date
            end = None if body.include_future else run.logical_date
        else:
            run_id = run.run_id
    dag = serialized_dag(session, dag_id)
    regex, map_indexes = _task_regex(dag_id, set(dag.task_dict), body.task_ids)
    states = (ONLY_FAILED_STATES if body.only_failed
              else ONLY_RUNNING_STATES if body.only_running else None)
    try:
        tis = select_task_instances(session, dag, task_regex=regex,
                                    upstream=body.include_upstream,
                                    downstream=body.include_downstream, start=start, end=end,
                                    run_id=run_id, states=states, map_indexes=map_indexes)
        if body.include_subdags:
            tis = follow_markers(session, dag, tis, states)
    except ClearError as exc:
        raise bad_request(str(exc)) from None
    keys = [ti.key for ti in tis]
    if not body.dry_run and tis:
        result = clear_task_instances(session, tis, dag, utcnow())
        keys = [c.key for c in result.cleared]
        _record_clear(session, dag_id, body, tis, len(keys), user.username)
        log.info("DAG %s: %d task instances cleared through the API by %s (%d changed "
                 "meanwhile)", dag_id, len(keys), user.username, len(result.changed))
    dates = logical_dates(session, [(k.dag_id, k.run_id) for k in keys])
    return {"task_instances": [_reference(k, dates[(k.dag_id, k.run_id)]) for k in keys]}


def _record_clear(session: Session, dag_id: str, body: ClearTaskInstances,
                  tis: list[TaskInstance], cleared: int, owner: str) -> None:
    """The audit entry of a clear: its run and task when it was one of each."""
    runs = {ti.run_id for ti in tis}
    tasks = {ti.task_id for ti in tis}
    flags = ("only_failed", "only_running", "include_upstream", "include_downstream",
             "include_past", "include_future", "include_subdags")
    audit.record_event(
        session, audit.CLEAR, owner=owner, dag_id=dag_id, source="api",
        run_id=runs.pop() if len(runs) == 1 else None,
        task_id=tasks.pop() if len(tasks) == 1 else None,
        extra={"cleared": cleared, "task_ids": body.task_ids,
               **{f: True for f in flags if getattr(body, f)}})


_MAPPED_ORDER = {"map_index": TI.map_index, "state": TI.state, "duration": TI.duration,
                 "start_date": TI.start_date, "end_date": TI.end_date}


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/listMapped",
            summary="List the instances of a mapped task in a DAG run",
            response_model=TaskInstanceCollection)
def list_mapped_task_instances(
    dag_id: str, dag_run_id: str, task_id: str, request: Request, pages: Paged, session: DB,
    user: Viewer, order: OrderBy = None,
    execution_date_gte: DateQuery = None, execution_date_lte: DateQuery = None,
    start_date_gte: DateQuery = None, start_date_lte: DateQuery = None,
    end_date_gte: DateQuery = None, end_date_lte: DateQuery = None,
    updated_at_gte: DateQuery = None, updated_at_lte: DateQuery = None,
    duration_gte: float | None = None, duration_lte: float | None = None,
    state: ListQuery = None, pool: ListQuery = None, queue: ListQuery = None,
) -> dict[str, Any]:
    """Airflow's ``get_mapped_task_instances``: ordered by ``map_index`` (or ``order_by``
    ``state``, ``duration``, ``start_date``, ``end_date``, each ``-`` for descending, then
    by ``map_index``); a 404 when the task is not there or has no mapped instances (a
    mapped task expanded to nothing: an empty list)."""
    get_run(session, dag_id, dag_run_id)
    if not mapped_count(session, dag_id, dag_run_id, task_id):
        task = serialized_dag(session, dag_id).task_dict.get(task_id)
        if task is None:
            raise not_found(f"Task id {task_id} not found")
        if not getattr(task, "is_mapped", False):
            raise not_found(f"Task id {task_id} is not mapped")
    stmt = _both().where(TI.dag_id == dag_id, TI.run_id == dag_run_id, TI.task_id == task_id,
                         TI.map_index >= 0)
    stmt = _filtered(stmt, default_tz(request), states=state, pools=pool, queues=queue,
                     duration=(duration_gte, duration_lte), dates={
                         "execution_date": (execution_date_gte, execution_date_lte),
                         "start_date": (start_date_gte, start_date_lte),
                         "end_date": (end_date_gte, end_date_lte),
                         "updated_at": (updated_at_gte, updated_at_lte)})
    ordered = order_by(stmt, order, _MAPPED_ORDER, "map_index").order_by(TI.map_index)
    rows = session.execute(ordered.limit(pages.limit).offset(pages.offset)).all()
    return {"task_instances": tis_json(session, [(ti, run) for ti, run in rows]),
            "total_entries": total(session, stmt)}


# ``{map_index:int}``: only digits, so ``.../{task_id}/tries`` and the like stay 404s
@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index:int}",
            summary="Get an instance of a mapped task", response_model=TaskInstanceOut)
def get_mapped_task_instance(dag_id: str, dag_run_id: str, task_id: str, map_index: int,
                             session: DB, user: Viewer) -> dict[str, Any]:
    return tis_json(session, [get_ti(session, dag_id, dag_run_id, task_id, map_index)])[0]


@router.patch("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index:int}",
              summary="Mark an instance of a mapped task success, failed or skipped "
              "(dry_run: only say which)", response_model=TaskInstanceReference,
              responses=CONFLICT)
def patch_mapped_task_instance(dag_id: str, dag_run_id: str, task_id: str, map_index: int,
                               body: UpdateTaskInstance, session: DB,
                               user: Op) -> dict[str, Any]:
    return _patch_one(session, dag_id, dag_run_id, task_id, map_index, body, user.username)
