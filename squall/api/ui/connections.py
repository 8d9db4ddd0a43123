"""The web UI's connections page data and actions: ``/ui/api/connections``.

Listing needs the ``viewer`` role. A connection's password never leaves the server (the list
says only whether one is stored), and in its ``extra`` the values of sensitive keys are
``***`` (:func:`squall.api.routes.connections.masked_extra`). Creating, changing and deleting
need ``op`` and the session's CSRF token; they are the REST API's own operations
(:mod:`squall.api.routes.connections`: the same validation, encryption and audit entry,
with ``source: ui``). An edit that gives no password keeps the stored one."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from squall.api.auth import Op, Role, Viewer
from squall.api.problems import ApiProblem
from squall.api.routes.connections import (
    connection_json,
    create_connection,
    remove_connection,
    update_connection,
)
from squall.api.state import DB, api_state
from squall.secrets import connection_store
from squall.secrets.fernet import FernetCodec, SecretsError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui/api", include_in_schema=False)

JsonBody = Annotated[dict[str, Any], Body()]


def _codec(request: Request) -> FernetCodec:
    return FernetCodec(api_state(request).settings.core.fernet_key)


@router.get("/connections")
def list_connections(request: Request, session: DB, user: Viewer,
                     search: Annotated[str, Query(max_length=250)] = "") -> dict[str, Any]:
    """Every connection (by conn_id) whose id, type, host or description holds ``search``."""
    try:
        conns = connection_store.list_connections(session, _codec(request))
    except SecretsError as exc:
        raise ApiProblem(500, f"connections: {exc}") from None
    needle = search.strip().lower()
    rows = []
    for conn in conns:
        text = " ".join(str(v or "") for v in (conn.conn_id, conn.conn_type, conn.host,
                                               conn.description)).lower()
        if needle and needle not in text:
            continue
        rows.append({**connection_json(conn), "has_password": bool(conn.password)})
    return {"connections": rows, "total_entries": len(rows),
            "may_edit": user.may(Role.OP)}


@router.post("/connections")
def create(body: JsonBody, request: Request, session: DB, user: Op) -> dict[str, Any]:
    return create_connection(session, _codec(request), body, owner=user.username,
                             source="ui")


@router.patch("/connections/{conn_id:path}")
def edit(conn_id: str, body: JsonBody, request: Request, session: DB,
         user: Op) -> dict[str, Any]:
    if body.get("password") in ("", None):
        body = {k: v for k, v in body.items() if k != "password"}  # keep the stored one
    return update_connection(session, _codec(request), conn_id, body, owner=user.username,
                             source="ui")


@router.delete("/connections/{conn_id:path}")
def delete(conn_id: str, session: DB, user: Op) -> dict[str, Any]:
    remove_connection(session, conn_id, owner=user.username, source="ui")
    return {"deleted": conn_id}  # a body: the page's fetch helper reads JSON
