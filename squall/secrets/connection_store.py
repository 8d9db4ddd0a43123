"""Where connections live: the ``connection`` table (add, read, list, delete, import,
export) and the ``SQUALL_CONN_*`` environment variables (:func:`get_connection`).

The password and the extra are Fernet-encrypted at rest
(:class:`~squall.secrets.fernet.FernetCodec`); everything else is stored as it is. An import
is all or nothing: every entry is checked before any row is written.

:func:`get_connection` is what ``BaseHook.get_connection`` and the template context's
``conn`` (:class:`ConnectionAccessor`) call; a connection read through it has its password
and the sensitive fields of its extra masked in this process's logs from then on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from squall.common.db import session_scope
from squall.common.models import ConnectionModel
from squall.common.models.connection import MAX_CONN_ID
from squall.secrets import backend as secrets_backend
from squall.secrets.connections import Connection, ConnectionError_, ConnectionNotFound
from squall.secrets.fernet import FernetCodec

log = logging.getLogger(__name__)

#: Airflow's rule for a conn_id: word characters and # ! ( ) - . : / \, spaces after the first
_CONN_ID = re.compile(r"^[\w#!()\-.:/\\]([\w#!()\-.:/\\]| )*$")


def check_conn_id(conn_id: Any) -> str:
    if isinstance(conn_id, str) and len(conn_id) > MAX_CONN_ID:
        raise ConnectionError_(f"conn_id {conn_id[:40]!r}...: longer than {MAX_CONN_ID} "
                               "characters")
    if not isinstance(conn_id, str) or not _CONN_ID.match(conn_id):
        raise ConnectionError_(f"conn_id {conn_id!r}: letters, digits and _ # ! ( ) - . : / "
                               "\\ (spaces after the first character)")
    return conn_id


def _check(conn: Connection) -> None:
    check_conn_id(conn.conn_id)
    if not conn.conn_type:
        raise ConnectionError_(f"connection {conn.conn_id}: a conn_type is needed")
    conn.check_extra()


def _write(session: Session, codec: FernetCodec, conn: Connection,
           row: ConnectionModel | None) -> None:
    if row is None:
        row = ConnectionModel(conn_id=conn.conn_id)
        session.add(row)
    assert conn.conn_type is not None
    row.conn_type = conn.conn_type
    row.description, row.host, row.schema = conn.description, conn.host, conn.schema
    row.login, row.port = conn.login, conn.port
    row.password, row.is_encrypted = (None, False) if conn.password is None \
        else codec.encrypt(conn.password)
    row.extra, row.is_extra_encrypted = (None, False) if not conn.extra \
        else codec.encrypt(conn.extra)


def _row(session: Session, conn_id: str) -> ConnectionModel | None:
    return session.scalars(
        select(ConnectionModel).where(ConnectionModel.conn_id == conn_id)).one_or_none()


def add_connection(session: Session, codec: FernetCodec, conn: Connection, *,
                   overwrite: bool = False) -> None:
    """Store ``conn``; :class:`ConnectionError_` when its conn_id exists (unless
    ``overwrite``) or it is malformed."""
    _check(conn)
    assert conn.conn_id is not None
    row = _row(session, conn.conn_id)
    if row is not None and not overwrite:
        raise ConnectionError_(f"connection {conn.conn_id} exists already")
    secrets_backend.warn_if_plain(codec)
    _write(session, codec, conn, row)
    session.flush()
    log.info("Connection %s: %s", conn.conn_id, "replaced" if row is not None else "added")


def _value(codec: FernetCodec, row: ConnectionModel) -> Connection:
    password = None if row.password is None else codec.decrypt(
        row.password, row.is_encrypted, what=f"the password of connection {row.conn_id}")
    extra = None if row.extra is None else codec.decrypt(
        row.extra, row.is_extra_encrypted, what=f"the extra of connection {row.conn_id}")
    return Connection(conn_id=row.conn_id, conn_type=row.conn_type,
                      description=row.description, host=row.host, login=row.login,
                      password=password, schema=row.schema, port=row.port, extra=extra)


def read_connection(session: Session, codec: FernetCodec, conn_id: str) -> Connection | None:
    """Connection ``conn_id`` from the table (not the environment), or None."""
    row = _row(session, conn_id)
    return None if row is None else _value(codec, row)


def list_connections(session: Session, codec: FernetCodec) -> list[Connection]:
    return [_value(codec, row) for row in
            session.scalars(select(ConnectionModel).order_by(ConnectionModel.conn_id))]


def delete_connection(session: Session, conn_id: str) -> bool:
    """Delete ``conn_id``; whether it existed."""
    result = session.execute(delete(ConnectionModel).where(ConnectionModel.conn_id == conn_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def parse_connections_document(document: Any) -> list[Connection]:
    """The connections of a file: ``{"conn_id": {fields} or "URI", ...}`` (Airflow's
    ``connections export`` JSON); :class:`ConnectionError_` naming the first bad entry."""
    if not isinstance(document, Mapping):
        raise ConnectionError_('a connections file holds one JSON object, '
                               '{"conn_id": {"conn_type": ..., ...} or "URI", ...}')
    found = []
    for conn_id, value in document.items():
        check_conn_id(conn_id)
        if isinstance(value, str):
            conn = Connection(conn_id=conn_id, uri=value)
        else:
            conn = Connection.from_json(value, conn_id)
        _check(conn)
        found.append(conn)
    return found


def import_connections(session: Session, codec: FernetCodec, document: Any, *,
                       overwrite: bool = False) -> list[str]:
    """Store every connection of ``document``; all or nothing. Their conn_ids."""
    conns = parse_connections_document(document)
    ids = [c.conn_id for c in conns]
    existing = sorted(set(session.scalars(select(ConnectionModel.conn_id).where(
        ConnectionModel.conn_id.in_(ids)))))
    if existing and not overwrite:
        raise ConnectionError_(f"connection(s) {', '.join(existing)} exist already "
                               "(--overwrite replaces them)")
    for conn in conns:
        add_connection(session, codec, conn, overwrite=overwrite)
    return [i for i in ids if i is not None]


def export_connections(session: Session, codec: FernetCodec) -> dict[str, dict[str, Any]]:
    """Every connection, decrypted, in the format :func:`import_connections` reads."""
    return {c.conn_id: c.to_dict() for c in list_connections(session, codec)
            if c.conn_id is not None}


def get_connection(conn_id: str) -> Connection:
    """Connection ``conn_id``: from ``SQUALL_CONN_<ID>`` (``AIRFLOW_CONN_<ID>`` under
    ``[core] airflow_compat``), else from the table; :class:`ConnectionNotFound` when it is
    in neither. Its secrets are masked in this process's logs from now on."""
    backend = secrets_backend.current()
    found = backend.connection_from_env(conn_id)
    if found is not None:
        env_name, value = found
        try:
            conn = Connection.parse(conn_id, value)
        except ConnectionError_ as exc:
            raise ConnectionError_(f"{exc} (from the environment variable {env_name})") \
                from None
        log.debug("Connection %s: from the environment variable %s", conn_id, env_name)
    else:
        with session_scope(backend.session_factory()) as session:
            stored = read_connection(session, backend.codec, conn_id)
        if stored is None:
            raise ConnectionNotFound(f"The conn_id `{conn_id}` isn't defined")
        conn = stored
    conn.mask_secrets()
    return conn


class ConnectionAccessor:
    """The template context's ``conn``: ``{{ conn.my_db.host }}``, ``{{ conn.get('my_db')
    }}``. A connection that is not defined fails the rendering (``conn.get`` returns its
    default instead)."""

    def __getattr__(self, conn_id: str) -> Connection:
        if conn_id.startswith("__"):
            raise AttributeError(conn_id)
        return get_connection(conn_id)

    def __getitem__(self, conn_id: str) -> Connection:
        return get_connection(conn_id)

    def get(self, conn_id: str, default_conn: Any = None) -> Any:
        try:
            return get_connection(conn_id)
        except ConnectionNotFound:
            return default_conn

    def __repr__(self) -> str:
        return "<ConnectionAccessor>"
