"""The end of a try stopped by ``squall tasks clear``: RESTARTING -> ``none``.

Clearing a RUNNING task instance (:mod:`squall.runs.clear`) moves it to RESTARTING,
with ``max_tries`` already raised. Its supervisor sees that at its next heartbeat, kills
every process of the try and then moves the row on with :func:`end_restart`; the scheduler's
watchdog does the same for a RESTARTING row whose supervisor is gone, ended or silent for
``[scheduler] zombie_threshold`` (:func:`squall.scheduler.watchdog.end_stale_restarting`), so
no row stays RESTARTING. From ``none`` the scheduler schedules the next try (its try number
one higher, ADR 2).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from squall.common.models import TaskInstanceKey, compare_and_set_state
from squall.common.state import TaskInstanceState

log = logging.getLogger(__name__)

REASON_RESTARTED = "cleared while running: the try was stopped and runs again"


def end_restart(session: Session, key: TaskInstanceKey, *, try_number: int,
                job_id: int | None, now: datetime, reason: str = REASON_RESTARTED) -> bool:
    """Move a RESTARTING try ``try_number`` (under ``job_id``, when given) to ``none``, by
    compare-and-set, in the caller's transaction; whether it won."""
    won = compare_and_set_state(
        session, key, expected=TaskInstanceState.RESTARTING, try_number=try_number,
        new_state=TaskInstanceState.NONE, expected_job_id=job_id, end_date=now,
        next_retry_at=None, external_executor_id=None, queued_dttm=None,
        state_reason=reason)
    if won:
        log.info("TaskInstance %s: try %d: restarting -> none (%s)", key, try_number, reason)
    return won
