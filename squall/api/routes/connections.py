"""``/api/v1/connections``: list (order, pages), get, create, patch, delete, in Airflow 2's
shape.

Reading needs the ``viewer`` role, changing a connection ``op`` (Airflow's Op role may).
A connection's password is never answered (Airflow's API leaves it out too); in its
``extra`` (a JSON object) the values of keys that name a secret are ``***``, and a ``***``
sent back in a PATCH keeps the stored value. The database
work is :mod:`squall.secrets.connection_store` (encrypted with ``[core] fernet_key`` when it
is set, as ``squall connections`` does); connections given by environment variables of
other processes are not visible here.
"""

from __future__ import annotations

import json
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
from squall.api.schemas_secrets import Connection as ConnectionOut
from squall.api.schemas_secrets import ConnectionCollection
from squall.api.state import DB, api_state
from squall.common.models import ConnectionModel
from squall.runs.audit import CONNECTION_DELETE, CONNECTION_EDIT, record_event
from squall.secrets import connection_store
from squall.secrets.connections import Connection, ConnectionError_
from squall.secrets.fernet import FernetCodec, SecretsError
from squall.secrets.masking import MASK, SecretsMasker

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["Connection"], responses=ERRORS)

_ORDER = {"id": ConnectionModel.id, "connection_id": ConnectionModel.conn_id,
          "conn_type": ConnectionModel.conn_type}
#: API field -> Connection attribute
_FIELDS = {"connection_id": "conn_id", "conn_type": "conn_type", "description": "description",
           "host": "host", "login": "login", "schema": "schema", "port": "port",
           "password": "password", "extra": "extra"}

ConnectionBody = Annotated[dict[str, Any], Body(
    description="a Connection: connection_id, conn_type, description, host, login, schema, "
                "port, password, extra (JSON object text)")]


def _codec(request: Request) -> FernetCodec:
    return FernetCodec(api_state(request).settings.core.fernet_key)


def masked_extra(extra: str | None) -> str | None:
    """``extra`` with the values of its sensitive keys (at any depth) as ``***``."""
    if not extra:
        return extra
    try:
        parsed = json.loads(extra)
    except ValueError:
        return extra
    return json.dumps(SecretsMasker().redact(parsed))


def restore_masked(new: Any, old: Any) -> Any:
    """``new`` (a parsed extra sent back) with each ``***`` the API answered in place of a
    value of ``old`` replaced by that value, so a client that sends back what it read does
    not overwrite a secret with ``***``."""
    if new == MASK and old is not None and not isinstance(old, (dict, list)):
        return old
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: restore_masked(v, old.get(k)) for k, v in new.items()}
    return new


def _unmasked_extra(extra: Any, old_extra: str | None) -> Any:
    if not isinstance(extra, str) or not old_extra:
        return extra
    try:
        new, old = json.loads(extra), json.loads(old_extra)
    except ValueError:
        return extra
    return json.dumps(restore_masked(new, old))


def connection_item(conn: Connection) -> dict[str, Any]:
    """A connection as the API lists it: never its password nor its extra."""
    return {"connection_id": conn.conn_id, "conn_type": conn.conn_type,
            "description": conn.description, "host": conn.host, "login": conn.login,
            "schema": conn.schema, "port": conn.port}


def connection_json(conn: Connection) -> dict[str, Any]:
    """A connection as the API answers it: no password, the extra's secrets masked."""
    return {**connection_item(conn), "extra": masked_extra(conn.extra)}


def _read(session: Session, codec: FernetCodec, conn_id: str) -> Connection:
    try:
        conn = connection_store.read_connection(session, codec, conn_id)
    except SecretsError as exc:
        raise ApiProblem(500, f"Connection {conn_id}: {exc}") from None
    if conn is None:
        raise not_found(f"Connection with connection_id: `{conn_id}` was not found")
    return conn


def _fields(body: dict[str, Any], update_mask: list[str] | None) -> dict[str, Any]:
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)} (a connection has "
                          f"{', '.join(_FIELDS)})")
    if update_mask is None:
        return dict(body)
    masked = [f.strip() for part in update_mask for f in part.split(",") if f.strip()]
    bad = sorted(set(masked) - set(_FIELDS) | ({"connection_id"} & set(masked)))
    if bad:
        raise bad_request(f"update_mask: {', '.join(bad)} cannot be changed")
    missing = sorted(f for f in masked if f not in body)
    if missing:
        raise bad_request(f"update_mask names {', '.join(missing)}, which the body does not "
                          "give")
    return {f: body[f] for f in masked}


def _build(conn_id: str, values: dict[str, Any]) -> Connection:
    """A connection from API field values, checked as the CLI checks one."""
    document = {_FIELDS[k]: v for k, v in values.items() if k != "connection_id"}
    try:
        conn = Connection.from_json(document, conn_id)
        connection_store.check_conn_id(conn_id)
        if not conn.conn_type:
            raise ConnectionError_(f"connection {conn_id}: a conn_type is needed")
        conn.check_extra()
    except ConnectionError_ as exc:
        raise bad_request(str(exc)) from None
    return conn


@router.get("/connections", summary="List connections", response_model=ConnectionCollection)
def list_connections(request: Request, pages: Paged, session: DB, user: Viewer,
                     order: OrderBy = None) -> dict[str, Any]:
    codec = _codec(request)
    stmt = select(ConnectionModel.conn_id)
    ids = list(session.scalars(pages.apply(order_by(stmt, order, _ORDER, "id"))))
    return {"connections": [connection_item(_read(session, codec, conn_id)) for conn_id in ids],
            "total_entries": total(session, stmt)}


@router.get("/connections/{connection_id}", summary="Get a connection",
            response_model=ConnectionOut)
def get_connection(connection_id: str, request: Request, session: DB,
                   user: Viewer) -> dict[str, Any]:
    return connection_json(_read(session, _codec(request), connection_id))


def _audit(session: Session, conn_id: str, owner: str, source: str, *,
           deleted: bool = False) -> None:
    record_event(session, CONNECTION_DELETE if deleted else CONNECTION_EDIT, owner=owner,
                 source=source, extra={"conn_id": conn_id})


def create_connection(session: Session, codec: FernetCodec, body: dict[str, Any], *,
                      owner: str, source: str) -> dict[str, Any]:
    """Create the connection ``body`` gives (API fields), audited as ``owner``'s
    (``source``: api, ui); the API's answer for it. Shared by the REST API and the web UI."""
    fields = _fields(body, None)
    missing = [f for f in ("connection_id", "conn_type") if f not in fields]
    if missing:
        raise bad_request(f"missing required field(s): {', '.join(missing)}")
    conn_id = fields["connection_id"]
    if not isinstance(conn_id, str):
        raise bad_request("connection_id must be a string")
    conn = _build(conn_id, fields)
    if connection_store.read_connection(session, codec, conn_id) is not None:
        raise ApiProblem(409, f"Connection already exist. ID: {conn_id}")
    connection_store.add_connection(session, codec, conn)
    _audit(session, conn_id, owner, source)
    log.info("%s: %s created connection %s", source, owner, conn_id)
    return connection_json(_read(session, codec, conn_id))


def update_connection(session: Session, codec: FernetCodec, connection_id: str,
                      body: dict[str, Any], update_mask: list[str] | None = None, *,
                      owner: str, source: str) -> dict[str, Any]:
    """Change connection ``connection_id``: without ``update_mask`` the body replaces it,
    but its password only when the body gives one; a ``***`` in the extra keeps the stored
    value. Audited as ``owner``'s; the API's answer for it."""
    old = _read(session, codec, connection_id)
    fields = _fields(body, update_mask)
    if update_mask is None:
        if fields.get("connection_id", connection_id) != connection_id:
            raise bad_request(f"the body's connection_id {fields['connection_id']!r} is not "
                              f"{connection_id!r} (a connection cannot be renamed)")
        if "conn_type" not in fields:
            raise bad_request("missing required field(s): conn_type (or name the fields "
                              "to change in update_mask)")
        values = fields  # the body replaces the connection (its password only when given)
        if "password" not in values:
            values = {**values, "password": old.password}
    else:
        values = {api: getattr(old, attr) for api, attr in _FIELDS.items()}
        values.update(fields)
    if "extra" in values:
        values = {**values, "extra": _unmasked_extra(values["extra"], old.extra)}
    conn = _build(connection_id, values)
    connection_store.add_connection(session, codec, conn, overwrite=True)
    _audit(session, connection_id, owner, source)
    log.info("%s: %s changed connection %s: %s", source, owner, connection_id,
             sorted(fields))
    return connection_json(_read(session, codec, connection_id))


def remove_connection(session: Session, connection_id: str, *, owner: str,
                      source: str) -> None:
    """Delete connection ``connection_id`` (a 404 when there is none), audited."""
    if not connection_store.delete_connection(session, connection_id):
        raise not_found(f"Connection with connection_id: `{connection_id}` was not found")
    _audit(session, connection_id, owner, source, deleted=True)
    log.info("%s: %s deleted connection %s", source, owner, connection_id)


@router.post("/connections", summary="Create a connection", response_model=ConnectionOut,
             responses=CONFLICT)
def post_connection(body: ConnectionBody, request: Request, session: DB,
                    user: Op) -> dict[str, Any]:
    return create_connection(session, _codec(request), body, owner=user.username,
                             source="api")


@router.patch("/connections/{connection_id}", summary="Update a connection",
              response_model=ConnectionOut)
def patch_connection(connection_id: str, body: ConnectionBody, request: Request,
                     session: DB, user: Op,
                     update_mask: Annotated[list[str] | None, Query()] = None,
                     ) -> dict[str, Any]:
    return update_connection(session, _codec(request), connection_id, body, update_mask,
                             owner=user.username, source="api")


@router.delete("/connections/{connection_id}", summary="Delete a connection",
               status_code=204, response_class=Response,
               responses={204: {"description": "deleted"}})
def delete_connection(connection_id: str, session: DB, user: Op) -> Response:
    remove_connection(session, connection_id, owner=user.username, source="api")
    return Response(status_code=204)
