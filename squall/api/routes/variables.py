"""``/api/v1/variables``: list (order, pages), get, create, patch, delete, in Airflow 2's
shape.

Reading needs the ``viewer`` role, changing a variable ``op`` (Airflow's Op role may). The
value of a key that names a secret (:func:`squall.secrets.masking.is_sensitive_key`) is
answered as ``***`` (and a ``***`` sent back for it in a PATCH keeps the stored value). The
database work is :mod:`squall.secrets.variables` (encrypted with
``[core] fernet_key`` when it is set, as ``squall variables`` does); variables given by
``AIRFLOW_VAR_*`` / ``SQUALL_VAR_*`` environment variables of other processes are not
visible here.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.api.auth import Op, Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import ApiProblem, bad_request, not_found
from squall.api.schemas import ERRORS
from squall.api.schemas_misc import CONFLICT
from squall.api.schemas_secrets import Variable, VariableCollection
from squall.api.state import DB, api_state
from squall.common.models import VariableModel
from squall.runs.audit import VARIABLE_DELETE, VARIABLE_EDIT, record_event
from squall.secrets import variables
from squall.secrets.fernet import FernetCodec, SecretsError
from squall.secrets.masking import MASK, is_sensitive_key

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["Variable"], responses=ERRORS)

_ORDER = {"id": VariableModel.id, "key": VariableModel.key}
_WRITABLE = ("key", "value", "description")

VariableBody = Annotated[dict[str, Any], Body(description="a Variable: key, value, "
                                                          "description")]


def _codec(request: Request) -> FernetCodec:
    return FernetCodec(api_state(request).settings.core.fernet_key)


def variable_json(record: variables.VariableRecord) -> dict[str, Any]:
    """A variable as the API answers it: a sensitive key's value as ``***``."""
    value = record.value or ""
    if value and is_sensitive_key(record.key):
        value = MASK
    return {"key": record.key, "value": value, "description": record.description}


def _read(session: Session, codec: FernetCodec, key: str) -> variables.VariableRecord:
    try:
        record = variables.read_variable(session, codec, key)
    except SecretsError as exc:
        raise ApiProblem(500, f"Variable {key}: {exc}") from None
    if record is None:
        raise not_found(f"Variable does not exist: {key}")
    return record


def _fields(body: dict[str, Any], update_mask: list[str] | None) -> dict[str, Any]:
    unknown = sorted(set(body) - set(_WRITABLE))
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)} (a variable has "
                          f"{', '.join(_WRITABLE)})")
    if update_mask is None:
        return dict(body)
    masked = [f.strip() for part in update_mask for f in part.split(",") if f.strip()]
    bad = sorted(set(masked) - {"value", "description"})
    if bad:
        raise bad_request(f"update_mask: {', '.join(bad)} cannot be changed (only value, "
                          "description)")
    missing = sorted(f for f in masked if f not in body)
    if missing:
        raise bad_request(f"update_mask names {', '.join(missing)}, which the body does not "
                          "give")
    return {f: body[f] for f in masked}


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{what} must be a string, got {type(value).__name__}")
    return value


def _set(session: Session, codec: FernetCodec, key: str, value: str,
         description: str | None) -> None:
    try:
        variables.set_variable(session, codec, key, value, description=description)
    except variables.VariableError as exc:
        raise bad_request(str(exc)) from None


@router.get("/variables", summary="List variables", response_model=VariableCollection)
def list_variables(request: Request, pages: Paged, session: DB, user: Viewer,
                   order: OrderBy = None) -> dict[str, Any]:
    codec = _codec(request)
    stmt = select(VariableModel.key)
    keys = list(session.scalars(pages.apply(order_by(stmt, order, _ORDER, "id"))))
    return {"variables": [variable_json(_read(session, codec, key)) for key in keys],
            "total_entries": total(session, stmt)}


@router.get("/variables/{variable_key}", summary="Get a variable", response_model=Variable)
def get_variable(variable_key: str, request: Request, session: DB,
                 user: Viewer) -> dict[str, Any]:
    return variable_json(_read(session, _codec(request), variable_key))


def _audit(session: Session, key: str, owner: str, source: str, *,
           deleted: bool = False) -> None:
    record_event(session, VARIABLE_DELETE if deleted else VARIABLE_EDIT, owner=owner,
                 source=source, extra={"key": key})


def create_variable(session: Session, codec: FernetCodec, body: dict[str, Any], *,
                    owner: str, source: str) -> dict[str, Any]:
    """Create the variable ``body`` gives (key, value, description), audited as
    ``owner``'s (``source``: api, ui); the API's answer for it. Shared by the REST API and
    the web UI."""
    fields = _fields(body, None)
    missing = [f for f in ("key", "value") if f not in fields]
    if missing:
        raise bad_request(f"missing required field(s): {', '.join(missing)}")
    key, value = _text(fields["key"], "key"), _text(fields["value"], "value")
    description = fields.get("description")
    if description is not None:
        description = _text(description, "description")
    if session.scalar(select(VariableModel.id).where(VariableModel.key == key)) is not None:
        raise ApiProblem(409, f"Variable {key} already exists")
    _set(session, codec, key, value, description)
    _audit(session, key, owner, source)
    log.info("%s: %s created variable %s", source, owner, key)
    return variable_json(_read(session, codec, key))


def update_variable(session: Session, codec: FernetCodec, variable_key: str,
                    body: dict[str, Any], update_mask: list[str] | None = None, *,
                    owner: str, source: str) -> dict[str, Any]:
    """Change variable ``variable_key`` (a ``***`` sent for a sensitive key's value keeps
    the stored one), audited as ``owner``'s; the API's answer for it."""
    record = _read(session, codec, variable_key)
    fields = _fields(body, update_mask)
    if update_mask is None:
        if "key" in fields and fields["key"] != variable_key:
            raise bad_request(f"the body's key {fields['key']!r} is not {variable_key!r} (a "
                              "variable cannot be renamed)")
        if "value" not in fields:
            raise bad_request("missing required field(s): value (or name the fields to "
                              "change in update_mask)")
    value = _text(fields["value"], "value") if "value" in fields else record.value or ""
    if value == MASK and is_sensitive_key(variable_key):
        value = record.value or ""  # sent back as it was answered: keep the secret
    description = fields.get("description", record.description)
    if description is not None:
        description = _text(description, "description")
    row = session.scalars(select(VariableModel).where(VariableModel.key == variable_key)).one()
    row.description = description
    _set(session, codec, variable_key, value, description)
    _audit(session, variable_key, owner, source)
    log.info("%s: %s changed variable %s: %s", source, owner, variable_key, sorted(fields))
    return variable_json(_read(session, codec, variable_key))


def remove_variable(session: Session, variable_key: str, *, owner: str, source: str) -> None:
    """Delete variable ``variable_key`` (a 404 when there is none), audited."""
    if not variables.delete_variable(session, variable_key):
        raise not_found(f"Variable does not exist: {variable_key}")
    _audit(session, variable_key, owner, source, deleted=True)
    log.info("%s: %s deleted variable %s", source, owner, variable_key)


@router.post("/variables", summary="Create a variable", response_model=Variable,
             responses=CONFLICT)
def post_variable(body: VariableBody, request: Request, session: DB,
                  user: Op) -> dict[str, Any]:
    return create_variable(session, _codec(request), body, owner=user.username,
                           source="api")


@router.patch("/variables/{variable_key}", summary="Update a variable",
              response_model=Variable)
def patch_variable(variable_key: str, body: VariableBody, request: Request, session: DB,
                   user: Op, update_mask: Annotated[list[str] | None, Query()] = None,
                   ) -> dict[str, Any]:
    return update_variable(session, _codec(request), variable_key, body, update_mask,
                           owner=user.username, source="api")


@router.delete("/variables/{variable_key}", summary="Delete a variable", status_code=204,
               response_class=Response, responses={204: {"description": "deleted"}})
def delete_variable(variable_key: str, session: DB, user: Op) -> Response:
    remove_variable(session, variable_key, owner=user.username, source="api")
    return Response(status_code=204)
