"""The web UI's variables page data and actions: ``/ui/api/variables``.

Listing needs the ``viewer`` role and answers values as the REST API does (a sensitive key's
value is ``***``, :func:`squall.secrets.masking.is_sensitive_key`). Creating, changing and
deleting need ``op`` and the session's CSRF token; they are the REST API's own operations
(:mod:`squall.api.routes.variables`: the same validation, encryption and audit entry, with
``source: ui``)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from squall.api.auth import Op, Role, Viewer
from squall.api.problems import ApiProblem
from squall.api.routes.variables import (
    create_variable,
    remove_variable,
    update_variable,
    variable_json,
)
from squall.api.state import DB, api_state
from squall.secrets import variables
from squall.secrets.fernet import FernetCodec, SecretsError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui/api", include_in_schema=False)

JsonBody = Annotated[dict[str, Any], Body()]


def _codec(request: Request) -> FernetCodec:
    return FernetCodec(api_state(request).settings.core.fernet_key)


@router.get("/variables")
def list_variables(request: Request, session: DB, user: Viewer,
                   search: Annotated[str, Query(max_length=250)] = "") -> dict[str, Any]:
    """Every variable (by key) whose key or description holds ``search`` (any case)."""
    try:
        records = variables.list_variables(session, _codec(request))
    except SecretsError as exc:
        raise ApiProblem(500, f"variables: {exc}") from None
    needle = search.strip().lower()
    rows = [{**variable_json(r), "is_encrypted": r.is_encrypted} for r in records
            if not needle or needle in r.key.lower() or needle in (r.description or "").lower()]
    return {"variables": rows, "total_entries": len(rows),
            "may_edit": user.may(Role.OP)}


@router.post("/variables")
def create(body: JsonBody, request: Request, session: DB, user: Op) -> dict[str, Any]:
    return create_variable(session, _codec(request), body, owner=user.username, source="ui")


@router.patch("/variables/{key:path}")
def edit(key: str, body: JsonBody, request: Request, session: DB, user: Op) -> dict[str, Any]:
    return update_variable(session, _codec(request), key, body, owner=user.username,
                           source="ui")


@router.delete("/variables/{key:path}")
def delete(key: str, session: DB, user: Op) -> dict[str, Any]:
    remove_variable(session, key, owner=user.username, source="ui")
    return {"deleted": key}  # a body: the page's fetch helper reads JSON
