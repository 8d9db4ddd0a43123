"""The graph page's endpoints (issue 26, Airflow 2.10's Graph tab):

* ``GET /ui/api/dags/{dag_id}/graph?expanded=G...``: the DAG's tasks, task groups and
  edges (with their ``Label``), laid out left to right (:mod:`.graph_layout`) with the
  groups named open and the others collapsed; remembered per DAG version and groups open;
* ``GET /ui/api/dags/{dag_id}/graph/states?run_id=R``: the recent runs (for the run
  selector) and the state of each task in run ``R`` (default: the newest), a mapped
  task's instances counted by state, and each group's aggregate state.

Both need the ``viewer`` role; an unknown DAG or run is a 404."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.api.auth import Viewer
from squall.api.problems import not_found
from squall.api.state import DB
from squall.api.ui.data import GRID_RUNS, dag_row, iso, mapped_state
from squall.api.ui.graph_layout import GraphSpec, layout
from squall.common.models import DagRun, SerializedDagModel, TaskInstance
from squall.dag_processing.serialization import deserialize_dag
from squall.sdk.taskgroup import TaskGroup

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui/api", include_in_schema=False)

#: what the page needs of a DAG version: the spec to lay out and each node's facts
_Shape = tuple[GraphSpec, dict[str, Any], dict[str, list[str]]]
_shapes: dict[tuple[str, str], _Shape] = {}
_layouts: dict[tuple[str, str, frozenset[str]], dict[str, Any]] = {}
#: versions and layouts remembered (each map is emptied when it grows past this)
CACHED = 128


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHED:
        cache.clear()
    cache[key] = value


def _shape(session: Session, dag_id: str) -> tuple[str, _Shape] | None:
    """The DAG as parsed last: (its hash, its shape); None if it was never parsed."""
    row = session.execute(select(SerializedDagModel.dag_hash)
                          .where(SerializedDagModel.dag_id == dag_id)).first()
    if row is None:
        return None
    key = (dag_id, row.dag_hash)
    if key not in _shapes:
        data = session.scalar(select(SerializedDagModel.data)
                              .where(SerializedDagModel.dag_id == dag_id))
        try:
            shape = build_shape(deserialize_dag(data or {}))
        except Exception as exc:  # a row this version cannot read: no graph, not a 500
            log.warning("ui: cannot rebuild DAG %s for its graph: %s", dag_id, exc)
            return None
        _remember(_shapes, key, shape)
    return row.dag_hash, _shapes[key]


def build_shape(dag: Any) -> _Shape:
    """The spec of ``dag``'s graph, the facts the page shows of each task and group
    (``{"tasks": {...}, "groups": {...}}``), and each group's tasks (at any depth)."""
    children: dict[str | None, list[str]] = {}
    groups: dict[str, dict[str, Any]] = {}
    tasks: dict[str, dict[str, Any]] = {}
    members: dict[str, list[str]] = {}
    labels: dict[str, str] = {}

    def walk(group: TaskGroup, holders: list[str]) -> None:
        kids = children.setdefault(group.group_id, [])
        for child in group.children.values():
            if isinstance(child, TaskGroup):
                gid = str(child.group_id)
                kids.append(gid)
                labels[gid] = str(getattr(child, "_label", None) or gid.rsplit(".", 1)[-1])
                groups[gid] = {"label": labels[gid], "tooltip": child.tooltip or "",
                               "parent": group.group_id,
                               "mapped": bool(getattr(child, "is_mapped", False))}
                members[gid] = []
                walk(child, [*holders, gid])
            else:
                tid = child.task_id
                kids.append(tid)
                shown = child.task_display_name  # the task id unless one was given
                labels[tid] = child.label if shown == tid else shown
                tasks[tid] = {
                    "label": labels[tid], "operator": child.operator_name,
                    "group": group.group_id,
                    "kind": ("setup" if child.is_setup else
                             "teardown" if child.is_teardown else None),
                    "mapped": bool(getattr(child, "is_mapped", False))}
                for holder in holders:
                    members[holder].append(tid)

    walk(dag.task_group, [])
    for gid, info in groups.items():
        info["tasks"] = len(members[gid])
    edges = [(up, down, dag.get_edge_info(up, down).get("label"))
             for up, task in dag.task_dict.items() for down in sorted(task.downstream_task_ids)]
    sizes = dict(labels)  # the text a node's width is made for: its label and marks
    for tid, info in tasks.items():
        mark, count = ("↑ " if info["kind"] else ""), (" [99]" if info["mapped"] else "")
        sizes[tid] = f"{mark}{labels[tid]}{count}"
    for gid in groups:
        sizes[gid] = f"▸ {labels[gid]}" + (" [ ]" if groups[gid]["mapped"] else "")
    spec = GraphSpec(children=children, groups=frozenset(groups), labels=sizes,
                     edges=edges)
    return spec, {"tasks": tasks, "groups": groups}, members


@router.get("/dags/{dag_id}/graph")
def graph(dag_id: str, session: DB, user: Viewer,
          expanded: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    """The DAG's graph laid out, the groups in ``expanded`` open."""
    dag_row(session, dag_id)
    found = _shape(session, dag_id)
    if found is None:
        return {"dag_id": dag_id, "version": None, "expanded": [], "tasks": {},
                "groups": {}, "layout": {"width": 0, "height": 0, "nodes": [], "edges": []}}
    version, (spec, facts, _members) = found
    opened = frozenset(expanded or ()) & spec.groups
    key = (dag_id, version, opened)
    if key not in _layouts:
        _remember(_layouts, key, layout(spec, opened))
    return {"dag_id": dag_id, "version": version, "expanded": sorted(opened), **facts,
            "layout": _layouts[key]}


@router.get("/dags/{dag_id}/graph/states")
def graph_states(dag_id: str, session: DB, user: Viewer,
                 run_id: str | None = None) -> dict[str, Any]:
    """The newest runs and the states of run ``run_id`` (default: the newest)."""
    dag_row(session, dag_id)
    runs = session.execute(
        select(DagRun.run_id, DagRun.state, DagRun.run_type, DagRun.logical_date)
        .where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date.desc())
        .limit(GRID_RUNS)).all()
    shown = [{"run_id": r.run_id, "state": r.state, "run_type": r.run_type,
              "logical_date": iso(r.logical_date)} for r in runs]
    if run_id is not None and run_id not in {r.run_id for r in runs}:
        run = session.execute(select(DagRun.run_id, DagRun.state, DagRun.run_type,
                                     DagRun.logical_date)
                              .where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
        if run is None:
            raise not_found(f"DAG run {run_id!r} of DAG {dag_id!r} not found")
        shown.append({"run_id": run.run_id, "state": run.state, "run_type": run.run_type,
                      "logical_date": iso(run.logical_date)})
    selected = run_id if run_id is not None else (shown[0]["run_id"] if shown else None)
    found = _shape(session, dag_id)
    members = found[1][2] if found is not None else {}
    tasks: dict[str, dict[str, Any]] = {}
    counts: dict[str, dict[str, int]] = {}
    if selected is not None:
        for task_id, map_index, state in session.execute(
                select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
                .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == selected)):
            name = state or "none"
            if map_index < 0:
                tasks[task_id] = {"state": name, "mapped": None}
            else:
                cell = counts.setdefault(task_id, {})
                cell[name] = cell.get(name, 0) + 1
    for task_id, cell in counts.items():
        tasks[task_id] = {"state": mapped_state(cell),
                          "mapped": {"count": sum(cell.values()), "states": cell}}
    groups: dict[str, dict[str, Any]] = {}
    for gid, tids in members.items():
        total: dict[str, int] = {}
        for tid in tids:
            if tid in counts:
                for name, n in counts[tid].items():
                    total[name] = total.get(name, 0) + n
            elif tid in tasks:
                total[tasks[tid]["state"]] = total.get(tasks[tid]["state"], 0) + 1
        groups[gid] = {"state": mapped_state(total) if total else None, "states": total}
    return {"dag_id": dag_id, "version": found[0] if found is not None else None,
            "runs": shown, "run_id": selected, "tasks": tasks, "groups": groups}
