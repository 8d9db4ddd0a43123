"""The web UI's actions, ``POST /ui/api/...`` for users with the ``op`` role: pause and
unpause, trigger (with conf), clear (with upstream / downstream), mark success / failed.

They call the operations on runs (:mod:`squall.runs`), as the CLI does (``squall dags trigger``,
``squall tasks clear``, ``squall tasks set-state``). Made with the session cookie, each
request must carry the session's CSRF token in ``X-CSRF-Token``
(:func:`squall.api.auth.authenticate` refuses it with 403 otherwise)."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from sqlalchemy.orm import Session

from squall.api.auth import Op
from squall.api.problems import bad_request, not_found
from squall.api.routes.dag_runs import trigger_problem
from squall.api.state import DB, api_state
from squall.api.ui.data import dag_row, iso
from squall.common.errors import DagRunNotFound, TaskNotFound, TriggerError
from squall.common.models import utcnow
from squall.common.state import TaskInstanceState
from squall.dag_processing.sync import load_serialized_dags
from squall.runs import audit
from squall.runs.clear import clear_task_instances, follow_markers, select_task_instances
from squall.runs.external_clear import ClearError
from squall.runs.mark import apply_marks, select_marks
from squall.runs.pausing import set_paused
from squall.runs.trigger import trigger_run
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui/api", include_in_schema=False)

JsonBody = Annotated[dict[str, Any], Body()]
MARKABLE = {"success": TaskInstanceState.SUCCESS, "failed": TaskInstanceState.FAILED}


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false")
    return value


def _dag(session: Session, dag_id: str) -> DAG:
    dag_row(session, dag_id)
    dag = load_serialized_dags(session, [dag_id]).get(dag_id)
    if dag is None:
        raise not_found(f"DAG with dag_id: '{dag_id}' has no serialized form (not parsed yet, "
                        "or it cannot be read: see the import errors)")
    return dag


@router.post("/dags/{dag_id}/pause")
def pause(dag_id: str, body: JsonBody, session: DB, user: Op) -> dict[str, Any]:
    dag_row(session, dag_id)  # a 404 for an unknown DAG
    paused = body.get("is_paused")
    if not isinstance(paused, bool):
        raise bad_request("is_paused must be true or false")
    set_paused(session, dag_id, paused, by=f"UI, by {user.username}")
    audit.record_event(session, audit.paused_event(paused), owner=user.username, dag_id=dag_id,
                       source="ui")
    return {"dag_id": dag_id, "is_paused": paused}


@router.post("/dags/{dag_id}/trigger")
def trigger(dag_id: str, body: JsonBody, session: DB, user: Op,
            request: Request) -> dict[str, Any]:
    conf = body.get("conf")
    try:
        done = trigger_run(session, dag_id, conf=None if conf == {} else conf,
                           triggered_by=f"{user.username} in the web UI",
                           default_queue=api_state(request).settings.celery.default_queue)
    except TriggerError as exc:
        raise trigger_problem(exc) from None
    run = done.run
    audit.record_event(session, audit.TRIGGER, owner=user.username, dag_id=dag_id,
                       run_id=run.run_id, logical_date=run.logical_date, source="ui",
                       extra={"conf": conf} if conf else None)
    log.info("ui: %s triggered DAG %s: run %s", user.username, dag_id, run.run_id)
    return {"dag_id": dag_id, "run_id": run.run_id, "state": run.state,
            "logical_date": iso(run.logical_date), "is_paused": done.paused}


def _map_index(body: dict[str, Any]) -> int | None:
    """The body's ``map_index``: one instance of a mapped task; absent or null: every
    instance (as Airflow's grid acts on a mapped task as a whole)."""
    value = body.get("map_index")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
        raise bad_request("map_index must be an integer, -1 or more")
    return value


@router.post("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear")
def clear(dag_id: str, run_id: str, task_id: str, body: JsonBody, session: DB,
          user: Op) -> dict[str, Any]:
    upstream, downstream = _flag(body, "upstream"), _flag(body, "downstream")
    dag = _dag(session, dag_id)
    if task_id not in dag.task_dict:
        raise not_found(f"task {task_id!r} is not in DAG {dag_id} (as last parsed)")
    index = _map_index(body)
    try:
        tis = select_task_instances(session, dag, task_regex=f"^{re.escape(task_id)}$",
                                    upstream=upstream, downstream=downstream, run_id=run_id,
                                    map_indexes=None if index is None else {task_id: {index}})
        if _flag(body, "recursive"):
            tis = follow_markers(session, dag, tis)
    except ClearError as exc:
        raise bad_request(str(exc)) from None
    result = clear_task_instances(session, tis, dag, utcnow(),
                                  reason=f"cleared by {user.username} in the web UI")
    if tis:  # (nothing selected: nothing done, no entry)
        audit.record_event(session, audit.CLEAR, owner=user.username, dag_id=dag_id,
                           run_id=run_id, task_id=task_id, map_index=index, source="ui",
                           extra={"cleared": len(result.cleared),
                                  **{f: True for f in ("upstream", "downstream", "recursive")
                                     if body.get(f) is True}})
    log.info("ui: %s cleared %d task instance(s) of %s %s from %s", user.username,
             len(result.cleared), dag_id, run_id, task_id)
    return {"cleared": [{"task_id": c.key.task_id, "run_id": c.key.run_id,
                         "map_index": c.key.map_index, "old_state": c.old_state.value,
                         "new_state": c.new_state.value}
                        for c in result.cleared],
            "changed_meanwhile": [k.task_id for k in result.changed],
            "runs_queued_again": [r for _, r in result.reactivated_runs]}


@router.post("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/mark")
def mark(dag_id: str, run_id: str, task_id: str, body: JsonBody, session: DB,
         user: Op) -> dict[str, Any]:
    state = MARKABLE.get(str(body.get("state")))
    if state is None:
        raise bad_request("state must be success or failed")
    upstream, downstream = _flag(body, "upstream"), _flag(body, "downstream")
    dag = _dag(session, dag_id)
    try:
        index = _map_index(body)
        selection = select_marks(session, dag, task_id=task_id, run_id=run_id, state=state,
                                 upstream=upstream, downstream=downstream,
                                 map_indexes=None if index is None else [index])
    except (TaskNotFound, DagRunNotFound) as exc:
        raise not_found(str(exc)) from None
    result = apply_marks(session, dag, selection, now=utcnow(),
                         reason=f"marked {state.value} by {user.username} in the web UI")
    if selection.targets or selection.to_clear:  # (all already so: no entry)
        audit.record_event(
            session, audit.task_mark_event(state), owner=user.username, dag_id=dag_id,
            run_id=run_id, task_id=task_id, map_index=index, source="ui",
            extra={"changed": len(result.changed),
                   "cleared_downstream": len(result.cleared.cleared),
                   **{f: True for f in ("upstream", "downstream") if body.get(f) is True}})
    log.info("ui: %s marked %s %s %s %s: %d changed", user.username, dag_id, run_id, task_id,
             state.value, len(result.changed))
    return {"state": state.value, "already": selection.already,
            "changed": [{"task_id": t.key.task_id, "run_id": t.key.run_id,
                         "map_index": t.key.map_index, "old_state": t.state.value}
                        for t in result.changed],
            "changed_meanwhile": [t.key.task_id for t in result.lost],
            "cleared_downstream": [c.key.task_id for c in result.cleared.cleared]}
