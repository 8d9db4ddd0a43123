"""``squall dags backfill``: plan a backfill of a date range and hand it to the scheduler;
``squall backfills list | show | cancel``.

``dags backfill`` records a ``backfill`` row (state ``queued``); the scheduler creates its
runs (see :mod:`squall.scheduler.backfill`). Without ``--detach`` the command then follows
it from the database with a live display until it ends. ``--dry-run`` prints the runs and
task instances it would create and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from squall.cli.common import CliContext, CliError, add_output_flag, console, print_rows
from squall.cli.dags_cmds import _parse_conf, _parse_date
from squall.cli.runs_cmds import _subcommands, load_dag
from squall.common.db import session_scope
from squall.common.errors import BackfillError
from squall.common.models import Backfill, utcnow
from squall.common.state import BackfillState
from squall.common.wakeup import notify_scheduler
from squall.scheduler.backfill import (
    BackfillPlan,
    BackfillProgress,
    backfill_progress,
    cancel_backfill,
    create_backfill,
    plan_backfill,
)
from squall.sdk.dag import DAG

if TYPE_CHECKING:
    from rich.console import RenderableType

log = logging.getLogger(__name__)

#: How often a followed backfill is read again (seconds).
POLL_SECONDS = 1.0
#: How often, while following, the scheduler's heartbeat is checked (seconds).
SCHEDULER_CHECK_SECONDS = 10.0

LIST_COLUMNS = ["id", "dag_id", "state", "from_date", "to_date", "run_backwards",
                "max_active_runs", "total_runs", "created_at", "completed_at"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``backfill`` to ``dags`` (registered before this)."""
    dsub = _subcommands(sub, "dags")
    p = dsub.add_parser(
        "backfill", help="run a DAG over a range of past logical dates (the scheduler runs it)",
        description="Records a backfill of DAG_ID over [START, END] (both included): the "
        "scheduler creates one backfill run per schedule interval in the range, oldest first "
        "(newest first with -B), at most --max-active-runs unfinished at a time. Dates the "
        "DAG already has a run for are left alone. A paused DAG can be backfilled.")
    p.add_argument("dag_id")
    p.add_argument("-s", "--start-date", required=True,
                   help="first logical date (ISO date or datetime)")
    p.add_argument("-e", "--end-date", required=True,
                   help="last logical date (ISO date or datetime)")
    p.add_argument("-B", "--run-backwards", action="store_true",
                   help="create the newest runs first (refused when a task depends_on_past)")
    p.add_argument("--max-active-runs", type=int,
                   help="unfinished backfill runs at a time (default: the DAG's "
                   "max_active_runs)")
    p.add_argument("-c", "--conf", help="JSON object passed to every run as dag_run.conf")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs and task instances it would create; create nothing")
    p.add_argument("--detach", action="store_true",
                   help="return once the backfill is recorded (default: follow it until it "
                   "ends; exit code 0 when it succeeded)")
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask for confirmation")
    add_output_flag(p)
    p.set_defaults(func=backfill)


def register_backfills(sub: argparse._SubParsersAction) -> None:
    """``squall backfills list | show ID | cancel ID``."""
    backfills = sub.add_parser("backfills", help="list, follow and cancel backfills")
    bsub = backfills.add_subparsers(dest="backfills_command", required=True, metavar="COMMAND")
    p = bsub.add_parser("list", help="the backfills, newest first")
    p.add_argument("--dag-id", help="only this DAG's")
    add_output_flag(p)
    p.set_defaults(func=list_backfills)
    p = bsub.add_parser("show", help="a backfill's progress: runs and task instances by state")
    p.add_argument("backfill_id", type=int)
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow it live until it ends (exit code 0 when it succeeded)")
    add_output_flag(p)
    p.set_defaults(func=show_backfill)
    p = bsub.add_parser("cancel", help="create no more runs of a backfill (those created "
                        "go on to finish)")
    p.add_argument("backfill_id", type=int)
    p.set_defaults(func=cancel)


def _date(value: str, ctx: CliContext) -> datetime:
    parsed = _parse_date(value, ctx.settings.core.default_timezone)
    assert parsed is not None
    return parsed


def backfill(ctx: CliContext, args: argparse.Namespace) -> int:
    start, end = _date(args.start_date, ctx), _date(args.end_date, ctx)
    conf = _parse_conf(args.conf)
    if args.max_active_runs is not None and args.max_active_runs < 1:
        raise CliError("--max-active-runs must be >= 1")
    dag = load_dag(ctx, args.dag_id)
    max_active_runs = args.max_active_runs or dag.max_active_runs
    factory = ctx.session_factory()
    with session_scope(factory) as session:
        try:
            plan = plan_backfill(session, dag, start, end, run_backwards=args.run_backwards)
        except BackfillError as exc:
            raise CliError(str(exc)) from None
        if args.dry_run:
            _print_plan(dag, plan, args.output)
            return 0
        if not plan.runs:
            _print_existing(plan)
            print(f"Nothing to backfill: DAG {dag.dag_id} has a run for every date of the "
                  "range")
            return 0
        if not args.yes and sys.stdin.isatty():
            answer = input(f"Backfill {dag.dag_id}: create {len(plan.runs)} runs? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("Cancelled, nothing created")
                return 1
        row = create_backfill(session, plan, max_active_runs=max_active_runs, conf=conf)
        backfill_id = row.id
        notify_scheduler(session, f"backfill {backfill_id} of {dag.dag_id}")
    if args.output == "json":
        json.dump({"backfill_id": backfill_id, "dag_id": dag.dag_id,
                   "runs": [r.run_id for r in plan.runs],
                   "existing": [r.run_id for r in plan.existing]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_existing(plan)
        print(f"Created backfill {backfill_id} of {dag.dag_id}: {len(plan.runs)} runs from "
              f"{plan.runs[0].run_id} to {plan.runs[-1].run_id}, at most {max_active_runs} "
              "active (queued: the scheduler creates the runs)")
    if args.detach:
        return 0
    return follow(ctx, backfill_id, quiet=args.output == "json")


# --------------------------------------------------------------------------- following


def _check_scheduler(ctx: CliContext, backfill_id: int) -> None:
    """Raise :class:`CliError` when no scheduler heartbeats: nothing would drive it."""
    from squall.scheduler.job import scheduler_alive

    threshold = ctx.settings.scheduler.scheduler_health_check_threshold
    with session_scope(ctx.session_factory()) as session:
        alive = scheduler_alive(session, now=utcnow(), threshold=threshold)
    if not alive:
        raise CliError(
            f"no scheduler is running (no scheduler heartbeat in the last {threshold:g}s): "
            f"backfill {backfill_id} waits for one; start `squall scheduler`, then follow "
            f"it with `squall backfills show {backfill_id} -f`")


def _progress(ctx: CliContext, backfill_id: int) -> BackfillProgress:
    with session_scope(ctx.session_factory()) as session:
        progress = backfill_progress(session, backfill_id)
    if progress is None:
        raise CliError(f"no backfill {backfill_id} (see `squall backfills list`)")
    return progress


def follow(ctx: CliContext, backfill_id: int, *, quiet: bool = False,
           poll_seconds: float = POLL_SECONDS) -> int:
    """Show the backfill's progress live until it ends (``quiet``: no display, the outcome
    on stderr); 0 when it succeeded, else 1 (the failed runs named). Says so at once, and
    returns 1, when no scheduler is running."""
    from contextlib import nullcontext

    from rich.live import Live

    progress = _progress(ctx, backfill_id)
    if not progress.finished:
        _check_scheduler(ctx, backfill_id)
    started = checked = time.monotonic()
    live = (nullcontext() if quiet else
            Live(_render(progress, 0.0), console=console(), auto_refresh=False))
    with live:
        while not progress.finished:
            time.sleep(poll_seconds)
            progress = _progress(ctx, backfill_id)
            if isinstance(live, Live):
                live.update(_render(progress, time.monotonic() - started), refresh=True)
            if not progress.finished and time.monotonic() - checked >= SCHEDULER_CHECK_SECONDS:
                checked = time.monotonic()
                _check_scheduler(ctx, backfill_id)
    return _outcome(progress, quiet=quiet)


def _outcome(progress: BackfillProgress, *, quiet: bool = False) -> int:
    """Print how the backfill ended; its exit code."""
    if progress.state == BackfillState.SUCCESS:
        print(f"Backfill {progress.backfill_id} of {progress.dag_id}: success "
              f"({progress.runs_finished} runs)", file=sys.stderr if quiet else sys.stdout)
        return 0
    failed = ", ".join(progress.failed_runs) or "none"
    print(f"Backfill {progress.backfill_id} of {progress.dag_id}: {progress.state.value} "
          f"(failed runs: {failed})", file=sys.stderr)
    return 1


def _render(progress: BackfillProgress, elapsed: float) -> RenderableType:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    total = max(progress.total_runs, progress.runs_finished, 1)
    table = Table(show_header=False, box=None)
    table.add_row("runs finished", f"{progress.runs_finished} / {progress.total_runs}")
    table.add_row("runs", _counts(progress.runs_by_state))
    table.add_row("task instances", _counts(progress.tis_by_state))
    table.add_row("elapsed", f"{elapsed:.0f}s")
    return Group(
        f"Backfill {progress.backfill_id} of {progress.dag_id}: {progress.state.value}",
        ProgressBar(total=total, completed=progress.runs_finished, width=40),
        table,
    )


def _counts(by_state: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(by_state.items())) or "-"


# --------------------------------------------------------------------------- backfills


def list_backfills(ctx: CliContext, args: argparse.Namespace) -> int:
    stmt = select(Backfill).order_by(Backfill.id.desc())
    if args.dag_id:
        stmt = stmt.where(Backfill.dag_id == args.dag_id)
    with session_scope(ctx.session_factory()) as session:
        data = [{c: getattr(b, c) for c in LIST_COLUMNS} for b in session.scalars(stmt)]
    if args.output == "json":
        for row in data:
            for key in ("from_date", "to_date", "created_at", "completed_at"):
                row[key] = row[key].isoformat() if row[key] is not None else None
    print_rows(data, LIST_COLUMNS, args.output)
    return 0


def show_backfill(ctx: CliContext, args: argparse.Namespace) -> int:
    if args.follow:
        return follow(ctx, args.backfill_id, quiet=args.output == "json")
    progress = _progress(ctx, args.backfill_id)
    if args.output == "json":
        json.dump({"id": progress.backfill_id, "dag_id": progress.dag_id,
                   "state": progress.state.value, "total_runs": progress.total_runs,
                   "runs_finished": progress.runs_finished,
                   "runs_by_state": progress.runs_by_state,
                   "task_instances_by_state": progress.tis_by_state,
                   "failed_runs": progress.failed_runs,
                   "created_at": progress.created_at.isoformat(),
                   "completed_at": (progress.completed_at.isoformat()
                                    if progress.completed_at else None)},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    elapsed = ((progress.completed_at or utcnow()) - progress.created_at).total_seconds()
    console().print(_render(progress, elapsed))
    if progress.failed_runs:
        print(f"failed runs: {', '.join(progress.failed_runs)}")
    return 0


def cancel(ctx: CliContext, args: argparse.Namespace) -> int:
    with session_scope(ctx.session_factory()) as session:
        row = session.get(Backfill, args.backfill_id)
        if row is None:
            raise CliError(f"no backfill {args.backfill_id} (see `squall backfills list`)")
        if not cancel_backfill(session, args.backfill_id, now=utcnow()):
            raise CliError(f"backfill {args.backfill_id} is {row.state}: nothing to cancel")
    print(f"Backfill {args.backfill_id}: cancelled (its runs already created go on to "
          "finish)")
    return 0


def _print_existing(plan: BackfillPlan) -> None:
    for run in plan.existing:
        print(f"Left alone: {plan.dag_id} already has run {run.run_id} ({run.run_type}, "
              f"{run.state}) at {run.logical_date.isoformat()}")


def _print_plan(dag: DAG, plan: BackfillPlan, output: str) -> None:
    task_ids = sorted(dag.task_dict)
    if output == "json":
        data: dict[str, Any] = {
            "dag_id": dag.dag_id,
            "runs": [{"run_id": r.run_id, "logical_date": r.logical_date.isoformat(),
                      "data_interval_start": r.data_interval.start.isoformat(),
                      "data_interval_end": r.data_interval.end.isoformat(),
                      "task_ids": task_ids} for r in plan.runs],
            "existing": [{"run_id": r.run_id, "logical_date": r.logical_date.isoformat(),
                          "run_type": r.run_type, "state": r.state} for r in plan.existing],
        }
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    rows = [{"run_id": r.run_id, "logical_date": r.logical_date.isoformat(),
             "data_interval": f"{r.data_interval.start.isoformat()} -> "
                              f"{r.data_interval.end.isoformat()}",
             "task_instances": ", ".join(task_ids)} for r in plan.runs]
    print_rows(rows, ["run_id", "logical_date", "data_interval", "task_instances"], "table",
               title=f"Dry run: backfill of {dag.dag_id} would create {len(plan.runs)} runs")
    _print_existing(plan)
    console().print("Dry run: nothing was created.")
