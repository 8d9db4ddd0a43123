"""The web UI's pages: server-rendered skeletons that the scripts in ``static/`` fill from
the ``/ui/api`` endpoints. A page asked for without a login redirects to ``/login``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from squall.api.auth import Principal, Role
from squall.api.state import api_state
from squall.api.ui.render import render
from squall.api.ui.session import page_csrf, page_user
from squall.common.db import session_scope
from squall.common.models import DagModel
from squall.runs import audit

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


def _page(request: Request, template: str, page: str, title: str,
          **extra: Any) -> Response:
    user: Principal | None = page_user(request)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    return render(request, template, {
        "page": page, "title": title, "user": user, "may_act": user.may(Role.OP),
        "csrf": page_csrf(request), "default_tz": _default_tz(request), **extra})


def _default_tz(request: Request) -> str:
    """``[api] default_ui_timezone``: the zone the pages show times in until the user picks
    another in the header (``system``: the browser's)."""
    return api_state(request).settings.api.default_ui_timezone


@router.get("/")
def dag_list(request: Request) -> Response:
    return _page(request, "dags.html", "dags", "DAGs")


@router.get("/dags/{dag_id}/grid")
def dag_grid(dag_id: str, request: Request) -> Response:
    return _page(request, "grid.html", "grid", f"{dag_id} · grid", dag_id=dag_id)


@router.get("/dags/{dag_id}/graph")
def dag_graph(dag_id: str, request: Request) -> Response:
    return _page(request, "graph.html", "graph", f"{dag_id} · graph", dag_id=dag_id)


@router.get("/backfills")
def backfills(request: Request) -> Response:
    return _page(request, "backfills.html", "backfills", "Backfills")


@router.get("/datasets")
def datasets(request: Request) -> Response:
    return _page(request, "datasets.html", "datasets", "Datasets")


@router.get("/pools")
def pools(request: Request) -> Response:
    return _page(request, "pools.html", "pools", "Pools")


@router.get("/dagruns")
def dag_runs(request: Request) -> Response:
    """Runs of every DAG, filtered (Airflow's Browse → DAG Runs)."""
    from squall.common.state import DagRunState, DagRunType

    return _page(request, "runs.html", "runs", "Runs",
                 states=[s.value for s in DagRunState], run_types=[t.value for t in DagRunType])


@router.get("/audit")
def audit_log(request: Request) -> Response:
    """Who did what, newest first (``/api/v1/eventLogs``); ``?dag_id=``: one DAG's."""
    return _page(request, "audit.html", "audit", "Audit log", events=sorted(audit.EVENTS))


@router.get("/variables")
def variables_page(request: Request) -> Response:
    return _page(request, "variables.html", "variables", "Variables")


@router.get("/connections")
def connections_page(request: Request) -> Response:
    return _page(request, "connections.html", "connections", "Connections")


def _dag_page(request: Request, dag_id: str, template: str, page: str,
              title: str) -> Response:
    """A page about one DAG; a "not found" page (404) for a DAG the database does not know."""
    with session_scope(api_state(request).session_factory) as session:
        known = session.get(DagModel, dag_id) is not None
    response = _page(request, template if known else "not_found.html", page,
                     title if known else "Not found", dag_id=dag_id)
    if not known and response.status_code == 200:
        response.status_code = 404
    return response


@router.get("/dags/{dag_id}/details")
def dag_details(dag_id: str, request: Request) -> Response:
    return _dag_page(request, dag_id, "dag_details.html", "details", f"{dag_id} · details")


@router.get("/dags/{dag_id}/code")
def dag_code(dag_id: str, request: Request) -> Response:
    return _dag_page(request, dag_id, "dag_code.html", "code", f"{dag_id} · code")
