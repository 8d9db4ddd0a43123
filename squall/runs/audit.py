"""The audit log: one home for writing who did what (the ``log`` table, Airflow's
``eventLogs``). The REST API, the web UI and the CLI call :func:`record_event` in the
action's own transaction, so the entry commits with the action or not at all.

Event names follow Airflow 2.10's web UI where it has them (its views' names: ``trigger``,
``clear``, ``success``, ``dagrun_failed``, ``paused``, ``pool.edit``, ...), one name per
action whatever asked for it; the source of the action is in ``owner`` (``cli:<os user>`` for
the command line) and in ``extra["source"]`` (``api``, ``ui``, ``cli``). What is never
recorded: previews (``dry_run``), refused or rolled-back actions, actions that found nothing
to do, reads, and secrets (ADR 33).
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from squall.common.models import AuditLog, utcnow
from squall.secrets.masking import masker

if TYPE_CHECKING:
    from squall.runs.backfill import BackfillOptions

log = logging.getLogger(__name__)

#: The events Squall writes; a test checks every call names one of these.
TRIGGER = "trigger"
CLEAR = "clear"
MARK_SUCCESS = "success"
MARK_FAILED = "failed"
MARK_SKIPPED = "skipped"
RUN_SUCCESS = "dagrun_success"
RUN_FAILED = "dagrun_failed"
RUN_QUEUED = "dagrun_queued"
RUN_CLEAR = "dagrun_clear"
RUN_DELETE = "dagrun.delete"
PAUSED = "paused"
UNPAUSED = "unpaused"
BACKFILL = "backfill"
BACKFILL_CANCEL = "backfill.cancel"
DELETE_DAG = "delete"
VARIABLE_EDIT = "variable.edit"
VARIABLE_DELETE = "variable.delete"
CONNECTION_EDIT = "connection.edit"
CONNECTION_DELETE = "connection.delete"
POOL_CREATE = "pool.create"
POOL_EDIT = "pool.edit"
POOL_DELETE = "pool.delete"
EVENTS = frozenset({
    TRIGGER, CLEAR, MARK_SUCCESS, MARK_FAILED, MARK_SKIPPED, RUN_SUCCESS, RUN_FAILED,
    RUN_QUEUED, RUN_CLEAR, RUN_DELETE, PAUSED, UNPAUSED, BACKFILL, BACKFILL_CANCEL,
    DELETE_DAG, VARIABLE_EDIT, VARIABLE_DELETE, CONNECTION_EDIT, CONNECTION_DELETE,
    POOL_CREATE, POOL_EDIT, POOL_DELETE,
})

#: where an action came from, ``extra["source"]``
SOURCES = frozenset({"api", "ui", "cli"})

_TASK_MARKS = {"success": MARK_SUCCESS, "failed": MARK_FAILED, "skipped": MARK_SKIPPED}
_RUN_MARKS = {"success": RUN_SUCCESS, "failed": RUN_FAILED, "queued": RUN_QUEUED}


def task_mark_event(state: str) -> str:
    """The event of marking task instances ``state`` (``success``, ``failed``,
    ``skipped``)."""
    return _TASK_MARKS[getattr(state, "value", state)]


def run_mark_event(state: str) -> str:
    """The event of setting a DAG run's state to ``state`` (``success``, ``failed``,
    ``queued``)."""
    return _RUN_MARKS[getattr(state, "value", state)]


def paused_event(paused: bool) -> str:
    return PAUSED if paused else UNPAUSED


def backfill_extra(backfill_id: int, options: BackfillOptions, runs: int) -> dict[str, Any]:
    """A backfill's ``extra``: its id, range, how many runs it plans, and the options given
    (those left at their defaults are left out; its conf is not recorded)."""
    flags = ("run_backwards", "mark_success", "rerun_failed_tasks", "reset_dagruns",
             "ignore_dependencies", "ignore_first_depends_on_past")
    given = ("task_regex", "pool", "max_active_runs")
    return {"backfill_id": backfill_id, "from_date": options.from_date.isoformat(),
            "to_date": options.to_date.isoformat(), "runs": runs,
            **{f: True for f in flags if getattr(options, f)},
            **{f: getattr(options, f) for f in given if getattr(options, f) is not None}}


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
                 logical_date: datetime | None = None, extra: Mapping[str, Any] | None = None,
                 source: str | None = None) -> AuditLog:
    """Add one audit entry for ``event`` in the caller's transaction. ``extra`` is stored as
    JSON, with ``source`` (``api``, ``ui``, ``cli``) as its ``"source"`` when given; the
    caller leaves secrets out of it (a connection's password, a variable's value), and what
    slips in (a run's conf) is masked as task logs are: a value under a sensitive key
    (``password``, ``token``, ...) and every secret this process knows become ``***``.

    The table's ``try_number`` and ``owner_display_name`` (Airflow's) stay empty: Airflow
    fills the first for the events its tasks log themselves, which Squall does not record,
    and Squall's users have no display name."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}; known: {sorted(EVENTS)}")
    if source is not None:
        if source not in SOURCES:
            raise ValueError(f"unknown audit source {source!r}; known: {sorted(SOURCES)}")
        extra = {"source": source, **(extra or {})}
    row = AuditLog(
        dttm=utcnow(), event=event, owner=owner, dag_id=dag_id, task_id=task_id,
        run_id=run_id, map_index=map_index, execution_date=logical_date,
        extra=json.dumps(masker().redact(dict(extra)), default=str, sort_keys=True)
        if extra else None)
    session.add(row)
    log.debug("audit: %s %s by %s", event, dag_id or "", owner)
    return row
