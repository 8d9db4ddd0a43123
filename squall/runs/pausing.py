"""Pausing and unpausing a DAG: one home for the CLI, the REST API and the web UI.

A paused DAG gets no scheduled runs and its runs' task instances are not scheduled (a
backfill's excepted, ADR 16). Unpausing wakes the schedulers, so a due run starts now rather
than at the next poll; pausing needs no wake-up (the next look skips the DAG).
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from squall.common.models import DagModel
from squall.common.wakeup import notify_scheduler

log = logging.getLogger(__name__)


def set_paused(session: Session, dag_id: str, paused: bool, *, by: str) -> DagModel | None:
    """Pause (``paused``) or unpause ``dag_id``, in the caller's transaction; ``by`` says who
    and through what, for the log and the wake-up. Returns the DAG's row, or ``None`` when
    there is no such DAG."""
    row = session.get(DagModel, dag_id)
    if row is None:
        return None
    row.is_paused = paused
    session.flush()
    if not paused:
        notify_scheduler(session, f"unpaused {dag_id} ({by})")
    log.info("DAG %s: %s (%s)", dag_id, "paused" if paused else "unpaused", by)
    return row
