"""Backfills: planning the runs of a logical date range, and recording the request.

:func:`plan_backfill` computes the logical dates of ``[from_date, to_date]`` from the DAG's
timetable (both ends included, each date a tick of the schedule), leaves out the dates the
DAG already has a run for (they are reported, never touched) and orders the rest oldest
first, or newest first for ``run_backwards``. :func:`create_backfill` inserts the
``backfill`` row (state ``queued``) that the scheduler then drives.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pendulum
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.errors import BackfillError
from squall.common.models import Backfill, DagRun
from squall.common.state import BackfillState, DagRunType
from squall.scheduler.dag_shape import DagLike
from squall.sdk.timetables import DagRunInfo, DataInterval

log = logging.getLogger(__name__)

#: The most runs one backfill may plan (a guard against a minutely DAG over ten years).
MAX_BACKFILL_RUNS = 10_000

#: The options of ``squall dags backfill`` kept in ``backfill.options``, as Airflow names them.
OPTION_NAMES = ("mark_success", "rerun_failed_tasks", "reset_dagruns", "task_regex",
                "ignore_first_depends_on_past", "ignore_dependencies", "pool",
                "delay_on_limit")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a backfill: its logical date, data interval and run id."""

    logical_date: datetime
    data_interval: DataInterval
    run_id: str


@dataclass(frozen=True)
class ExistingRun:
    """A date of the range the DAG already has a run for: left alone."""

    logical_date: datetime
    run_id: str
    run_type: str
    state: str


@dataclass
class BackfillPlan:
    """The runs a backfill of ``dag_id`` creates, in the order it creates them, and the
    dates of the range that already have a run."""

    dag_id: str
    from_date: datetime
    to_date: datetime
    run_backwards: bool
    runs: list[PlannedRun] = field(default_factory=list)
    existing: list[ExistingRun] = field(default_factory=list)


def backfill_run_id(logical_date: datetime) -> str:
    """``backfill__<logical date in UTC, ISO 8601>``."""
    return DagRunType.BACKFILL.generate_run_id(logical_date.astimezone(UTC).isoformat())


def range_run_infos(dag: DagLike, from_date: datetime, to_date: datetime) -> list[DagRunInfo]:
    """The runs the DAG's schedule has in ``[from_date, to_date]``, oldest first.

    Raises :class:`BackfillError` when the DAG has no periodic schedule (``None``,
    ``@once``), when the range is empty or reversed, or past :data:`MAX_BACKFILL_RUNS`."""
    if from_date > to_date:
        raise BackfillError(f"backfill of {dag.dag_id}: the start {from_date.isoformat()} is "
                            f"after the end {to_date.isoformat()}")
    timetable = dag.timetable
    if not timetable.periodic:
        raise BackfillError(f"DAG {dag.dag_id} has no periodic schedule "
                            f"({timetable.summary}): there are no runs to backfill")
    start, end = pendulum.instance(from_date), pendulum.instance(to_date)
    far_future = pendulum.datetime(9999, 1, 1, tz="UTC")
    infos: list[DagRunInfo] = []
    last: DataInterval | None = None
    while True:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, start_date=start,
                                          end_date=end, catchup=True, now=far_future)
        if info is None or (infos and info.logical_date <= infos[-1].logical_date):
            break
        if len(infos) >= MAX_BACKFILL_RUNS:
            raise BackfillError(f"backfill of {dag.dag_id}: more than {MAX_BACKFILL_RUNS} "
                                "runs in the range; backfill a shorter range")
        infos.append(info)
        last = info.data_interval
    return infos


def plan_backfill(session: Session, dag: DagLike, from_date: datetime, to_date: datetime,
                  *, run_backwards: bool = False) -> BackfillPlan:
    """The runs a backfill of ``dag`` over ``[from_date, to_date]`` creates.

    Dates the DAG already has a run for (of any type) are left out and listed in
    ``existing``. Raises :class:`BackfillError` for ``run_backwards`` when a task depends on
    its past (its runs could never start), and as :func:`range_run_infos` does."""
    if run_backwards:
        depending = sorted(tid for tid, task in dag.task_dict.items() if task.depends_on_past)
        if depending:
            raise BackfillError(
                f"cannot backfill DAG {dag.dag_id} backwards: tasks depend on their past "
                f"(depends_on_past): {', '.join(depending)}")
    infos = range_run_infos(dag, from_date, to_date)
    plan = BackfillPlan(dag_id=dag.dag_id, from_date=from_date, to_date=to_date,
                        run_backwards=run_backwards)
    if not infos:
        return plan
    rows = session.execute(
        select(DagRun.logical_date, DagRun.run_id, DagRun.run_type, DagRun.state)
        .where(DagRun.dag_id == dag.dag_id,
               DagRun.logical_date >= infos[0].logical_date,
               DagRun.logical_date <= infos[-1].logical_date)
    ).all()
    by_date = {row.logical_date.timestamp(): row for row in rows}
    for info in infos:
        row = by_date.get(info.logical_date.timestamp())
        if row is not None:
            plan.existing.append(ExistingRun(logical_date=row.logical_date, run_id=row.run_id,
                                             run_type=row.run_type, state=row.state))
            continue
        plan.runs.append(PlannedRun(logical_date=info.logical_date,
                                    data_interval=info.data_interval,
                                    run_id=backfill_run_id(info.logical_date)))
    if run_backwards:
        plan.runs.reverse()
    return plan


def create_backfill(session: Session, plan: BackfillPlan, *, max_active_runs: int,
                    conf: Mapping[str, Any] | None = None,
                    options: Mapping[str, Any] | None = None) -> Backfill:
    """Insert the ``backfill`` row of ``plan`` (state ``queued``) and return it (flushed).

    ``options`` may only hold the names in :data:`OPTION_NAMES`."""
    if max_active_runs < 1:
        raise BackfillError(f"max_active_runs must be >= 1, got {max_active_runs}")
    unknown = sorted(set(options or {}) - set(OPTION_NAMES))
    if unknown:
        raise BackfillError(f"unknown backfill options: {', '.join(unknown)}")
    backfill = Backfill(
        dag_id=plan.dag_id, from_date=plan.from_date, to_date=plan.to_date,
        run_backwards=plan.run_backwards, max_active_runs=max_active_runs,
        conf=dict(conf) if conf is not None else None,
        options=dict(options) if options else None,
        state=BackfillState.QUEUED.value, total_runs=len(plan.runs),
    )
    session.add(backfill)
    session.flush()
    log.info("Backfill %s of %s created: %d runs from %s to %s%s (max %d active)",
             backfill.id, plan.dag_id, len(plan.runs), plan.from_date.isoformat(),
             plan.to_date.isoformat(), ", backwards" if plan.run_backwards else "",
             max_active_runs)
    return backfill
