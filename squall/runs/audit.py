"""The audit log: one home for writing who did what (the ``log`` table, Airflow's
``eventLogs``). The REST API, the web UI and the CLI call :func:`record_event` in the
action's own transaction, so the entry commits with the action or not at all.

Event names follow Airflow 2.10's where it has them; the source of the action is in
``owner`` (``cli:<os user>`` for the command line) and in ``extra["source"]``.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from squall.common.models import AuditLog, utcnow

log = logging.getLogger(__name__)

#: The events Squall writes; a test checks every call names one of these.
TRIGGER = "trigger"
CLEAR = "clear"
MARK_SUCCESS = "success"
MARK_FAILED = "failed"
PAUSED = "paused"
UNPAUSED = "unpaused"
BACKFILL = "backfill"
BACKFILL_CANCEL = "backfill.cancel"
DELETE_DAG = "delete"
VARIABLE_EDIT = "variable.edit"
VARIABLE_DELETE = "variable.delete"
CONNECTION_EDIT = "connection.edit"
CONNECTION_DELETE = "connection.delete"
POOL_EDIT = "pool.edit"
POOL_DELETE = "pool.delete"
EVENTS = frozenset({
    TRIGGER, CLEAR, MARK_SUCCESS, MARK_FAILED, PAUSED, UNPAUSED, BACKFILL, BACKFILL_CANCEL,
    DELETE_DAG, VARIABLE_EDIT, VARIABLE_DELETE, CONNECTION_EDIT, CONNECTION_DELETE, POOL_EDIT,
    POOL_DELETE,
})


def cli_owner() -> str:
    """The owner of an action taken on the command line: ``cli:<os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        user = "unknown"
    return f"cli:{user}"


def record_event(session: Session, event: str, *, owner: str | None,
                 dag_id: str | None = None, task_id: str | None = None,
                 run_id: str | None = None, map_index: int | None = None,
                 try_number: int | None = None, logical_date: datetime | None = None,
                 extra: Mapping[str, Any] | None = None) -> AuditLog:
    """Add one audit entry for ``event`` in the caller's transaction. ``extra`` is stored as
    JSON; the caller leaves secrets out of it (a connection's password, a variable's
    value)."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}; known: {sorted(EVENTS)}")
    row = AuditLog(
        dttm=utcnow(), event=event, owner=owner, owner_display_name=owner,
        dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index,
        try_number=try_number, execution_date=logical_date,
        extra=json.dumps(dict(extra), default=str, sort_keys=True) if extra else None)
    session.add(row)
    log.debug("audit: %s %s by %s", event, dag_id or "", owner)
    return row
