"""Following a backfill: its progress (:func:`backfill_progress`, what ``squall backfills
show`` and ``GET /api/v1/backfills/{id}`` show), and what a run an ended backfill left
unfinished says (:func:`ended_backfill_notes`) with the command that resumes it
(:func:`resume_command`). Reads only.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from squall.common.models import Backfill, DagRun, TaskInstance
from squall.common.state import (
    BACKFILL_FINISHED_STATES,
    DAGRUN_UNFINISHED_STATES,
    BackfillState,
    DagRunState,
    TaskInstanceState,
)

_UNFINISHED_RUN = frozenset(s.value for s in DAGRUN_UNFINISHED_STATES)
_FINISHED_BACKFILL = frozenset(s.value for s in BACKFILL_FINISHED_STATES)


@dataclass
class BackfillProgress:
    """Where a backfill is: its row, its runs by state, its task instances by state."""

    backfill_id: int
    dag_id: str
    state: BackfillState
    total_runs: int
    created_at: datetime
    completed_at: datetime | None
    runs_by_state: dict[str, int]
    tis_by_state: dict[str, int]
    failed_runs: list[str]
    #: why it ended, when it did not simply run out of runs (the deadlock report)
    reason: str | None = None
    #: its unfinished runs (once it ended: the runs it left without a backfill)
    unfinished_runs: list[str] = field(default_factory=list)
    #: once it ended with runs unfinished: the command that resumes them
    resume: str | None = None
    #: once it ended: the runs of its range by state, whichever backfill (or none) they
    #: belong to
    range_runs_by_state: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in BACKFILL_FINISHED_STATES

    @property
    def deadlocked(self) -> bool:
        return self.reason is not None and self.reason.startswith(DEADLOCK_PREFIX)

    @property
    def not_ready(self) -> int:
        """Task instances waiting for their upstream tasks or their past (state none); once
        the backfill is deadlocked these are the blocked ones."""
        return self.tis_by_state.get(TaskInstanceState.NONE.value, 0)

    @property
    def runs_finished(self) -> int:
        return sum(n for s, n in self.runs_by_state.items()
                   if s not in DAGRUN_UNFINISHED_STATES)


def backfill_progress(session: Session, backfill_id: int) -> BackfillProgress | None:
    """The progress of backfill ``backfill_id`` (three queries, four once it ended), or
    ``None`` when there is no such backfill."""
    row = session.get(Backfill, backfill_id, populate_existing=True)
    if row is None:
        return None
    runs = session.execute(select(DagRun.run_id, DagRun.state)
                           .where(DagRun.backfill_id == backfill_id)
                           .order_by(DagRun.logical_date)).all()
    by_state: dict[str, int] = {}
    for run in runs:
        by_state[run.state] = by_state.get(run.state, 0) + 1
    unfinished = [r.run_id for r in runs if r.state in _UNFINISHED_RUN]
    tis = session.execute(
        select(TaskInstance.state, func.count())
        .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
              & (DagRun.run_id == TaskInstance.run_id))
        .where(DagRun.backfill_id == backfill_id).group_by(TaskInstance.state)
    ).all()
    ended = row.state in _FINISHED_BACKFILL
    return BackfillProgress(
        backfill_id=row.id, dag_id=row.dag_id, state=BackfillState(row.state),
        total_runs=row.total_runs, created_at=row.created_at, completed_at=row.completed_at,
        runs_by_state=by_state, tis_by_state={state: int(n) for state, n in tis},
        failed_runs=[r.run_id for r in runs if r.state == DagRunState.FAILED.value],
        reason=row.reason, unfinished_runs=unfinished,
        resume=resume_command(row) if unfinished and ended else None,
        range_runs_by_state=range_runs_by_state(session, row) if ended else {})


#: How a deadlock report (``backfill.reason``) begins.
DEADLOCK_PREFIX = "deadlock"


def range_runs_by_state(session: Session, backfill: Backfill) -> dict[str, int]:
    """How many runs of each state the DAG has in the backfill's range, whoever made them
    (this backfill, an earlier one, the schedule, a trigger)."""
    rows = session.execute(
        select(DagRun.state, func.count())
        .where(DagRun.dag_id == backfill.dag_id, DagRun.logical_date >= backfill.from_date,
               DagRun.logical_date <= backfill.to_date)
        .group_by(DagRun.state)).all()
    return {state: int(n) for state, n in rows}


def ended_how(backfill: Backfill) -> str:
    """``deadlocked``, or the ended backfill's state."""
    if backfill.reason is not None and backfill.reason.startswith(DEADLOCK_PREFIX):
        return "deadlocked"
    return str(backfill.state)


def resume_command(backfill: Backfill) -> str:
    """The ``squall dags backfill`` that takes in the runs ``backfill`` left unfinished: its
    range and options again, with ``--rerun-failed-tasks`` when it failed (the failed task
    instance that held the others back runs again once its cause is fixed)."""
    opts = backfill.options or {}
    args = ["squall", "dags", "backfill", backfill.dag_id, "-s",
            backfill.from_date.isoformat(), "-e", backfill.to_date.isoformat()]
    if backfill.state == BackfillState.FAILED.value or opts.get("rerun_failed_tasks"):
        args.append("--rerun-failed-tasks")
    if backfill.run_backwards:
        args.append("-B")
    for key, flag in (("task_regex", "-t"), ("pool", "--pool"),
                      ("delay_on_limit", "--delay-on-limit")):
        if opts.get(key):
            args += [flag, str(opts[key])]
    for key, flag in (("ignore_dependencies", "-i"), ("ignore_first_depends_on_past", "-I"),
                      ("mark_success", "-m")):
        if opts.get(key):
            args.append(flag)
    args += ["--max-active-runs", str(backfill.max_active_runs)]
    if backfill.conf is not None:
        args += ["-c", json.dumps(backfill.conf)]
    return shlex.join(args)


def ended_backfill_note(backfill: Backfill) -> str:
    """What an unfinished run of the ended ``backfill`` shows."""
    first = ("fix what held it back, then resume"
             if backfill.state == BackfillState.FAILED.value else "resume")
    return (f"backfill {backfill.id} ended ({ended_how(backfill)}) with this run unfinished "
            f"and no backfill follows it; {first} with: {resume_command(backfill)}")


def ended_backfill_notes(session: Session, dag_id: str,
                         run_ids: Collection[str]) -> dict[str, str]:
    """run_id -> :func:`ended_backfill_note` for those of ``run_ids`` that are unfinished
    and whose backfill ended (one query)."""
    if not run_ids:
        return {}
    rows = session.execute(
        select(DagRun.run_id, Backfill)
        .join(Backfill, Backfill.id == DagRun.backfill_id)
        .where(DagRun.dag_id == dag_id, DagRun.run_id.in_(list(run_ids)),
               DagRun.state.in_(sorted(_UNFINISHED_RUN)),
               Backfill.state.in_(sorted(_FINISHED_BACKFILL)))).all()
    return {run_id: ended_backfill_note(backfill) for run_id, backfill in rows}
