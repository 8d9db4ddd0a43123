"""``squall dags backfill``: plan a backfill of a date range and hand it to the scheduler;
``squall backfills list | show | cancel``.

``dags backfill`` records a ``backfill`` row (state ``queued``); the scheduler creates its
runs (see :mod:`squall.runs.backfill`; the options are checked there, as
:class:`~squall.runs.backfill.BackfillOptions`). Without ``--detach`` the command then follows
it from the database with a live display until it ends. ``--dry-run`` prints the runs and
task instances it would create and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from squall.cli.common import (
    CliContext,
    CliError,
    add_output_flag,
    ask_yes,
    console,
    print_rows,
)
from squall.cli.dags_cmds import _parse_conf, _parse_date
from squall.cli.runs_cmds import _subcommands, load_dag
from squall.common.errors import BackfillError
from squall.common.state import BackfillState

if TYPE_CHECKING:
    from rich.console import RenderableType

    from squall.runs.backfill import BackfillPlan
    from squall.runs.backfill_progress import BackfillProgress
    from squall.sdk.dag import DAG

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
        "DAG already has a run for are left alone, but for an unfinished run nothing drives "
        "(an ended backfill left it, or it is a paused DAG's): it joins the backfill as it "
        "is. A paused DAG can be backfilled.")
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
    p.add_argument("-t", "--task-regex",
                   help="only the tasks whose id matches this regex (re.search), with their "
                   "upstream tasks unless -i")
    p.add_argument("-i", "--ignore-dependencies", action="store_true",
                   help="with -t: leave out the upstream tasks; the matching tasks do not "
                   "wait for tasks outside the selection")
    p.add_argument("-I", "--ignore-first-depends-on-past", action="store_true",
                   help="the run at the first date of the range does not wait for its past "
                   "(depends_on_past); later runs do")
    p.add_argument("-m", "--mark-success", action="store_true",
                   help="create the runs with every task instance marked success; nothing "
                   "runs")
    p.add_argument("--pool", help="run every task instance of the backfill in this pool "
                   "(it must exist)")
    p.add_argument("--delay-on-limit", type=float, default=0.0, metavar="SECS",
                   help="after reaching --max-active-runs, wait SECS before creating the "
                   "next run (default 0)")
    p.add_argument("--rerun-failed-tasks", action="store_true",
                   help="existing runs in the range: clear their failed and upstream_failed "
                   "task instances and run them again (default: leave the runs alone)")
    p.add_argument("--reset-dagruns", action="store_true",
                   help="existing runs in the range: clear all their task instances and run "
                   "them again")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs and task instances it would create or clear; change "
                   "nothing")
    p.add_argument("--detach", action="store_true",
                   help="return once the backfill is recorded (default: follow it until it "
                   "ends; exit code 0 when it succeeded)")
    p.add_argument("--local", action="store_true",
                   help="drive the backfill from this process with the scheduler's own loop, "
                   "limited to this backfill (no `squall scheduler` needed; workers still "
                   "run the tasks). If this process stops, a scheduler carries on with it")
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
                        "go on to finish, or end now with --end-running)")
    p.add_argument("backfill_id", type=int)
    p.add_argument("--end-running", action="store_true",
                   help="also end its unfinished runs now: running task instances are set "
                   "failed (their processes stopped), the rest skipped, the runs failed")
    p.set_defaults(func=cancel)


def _date(value: str, ctx: CliContext) -> datetime:
    parsed = _parse_date(value, ctx.settings.core.default_timezone)
    assert parsed is not None
    return parsed


def backfill(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.common.models import utcnow
    from squall.runs.backfill import BackfillOptions, create_requested, plan_requested

    if args.local and args.detach:
        raise CliError("--local drives the backfill from this process: it cannot --detach")
    options = BackfillOptions(
        from_date=_date(args.start_date, ctx), to_date=_date(args.end_date, ctx),
        run_backwards=args.run_backwards, max_active_runs=args.max_active_runs,
        conf=_parse_conf(args.conf), task_regex=args.task_regex,
        ignore_dependencies=args.ignore_dependencies,
        ignore_first_depends_on_past=args.ignore_first_depends_on_past,
        mark_success=args.mark_success, pool=args.pool, delay_on_limit=args.delay_on_limit,
        rerun_failed_tasks=args.rerun_failed_tasks, reset_dagruns=args.reset_dagruns)
    dag = load_dag(ctx, args.dag_id)
    max_active_runs = args.max_active_runs or dag.max_active_runs
    factory = ctx.session_factory()
    with session_scope(factory) as session:
        try:
            plan = plan_requested(session, dag, options)
        except BackfillError as exc:
            raise CliError(str(exc)) from None
        if args.dry_run:
            _print_plan(dag, plan, sorted(options.task_ids(dag)), args.output,
                        mark_success=args.mark_success)
            return 0
        if not plan.runs and not plan.joining:
            _print_existing(plan)
            print(f"Nothing to backfill: DAG {dag.dag_id} has a run for every date of the "
                  "range" + (" and none has task instances to run again"
                             if args.rerun_failed_tasks or args.reset_dagruns else ""))
            return 0
        what = _what(plan)
        if (not args.yes and sys.stdin.isatty()
                and not ask_yes(f"Backfill {dag.dag_id}: {what}. Go on?")):
            print("Cancelled, nothing created")
            return 1
        row = create_requested(session, dag, options, plan, now=utcnow())
        backfill_id = row.id
        from squall.runs import audit
        audit.record_event(session, audit.BACKFILL, owner=audit.cli_owner(),
                           dag_id=dag.dag_id, source="cli",
                           extra=audit.backfill_extra(backfill_id, options, len(plan.runs)))
    if args.output == "json":
        json.dump({"backfill_id": backfill_id, "dag_id": dag.dag_id,
                   "runs": [r.run_id for r in plan.runs],
                   "rerun": [r.run_id for r in plan.rerun],
                   "taken_in": [r.run_id for r in plan.taken_in],
                   "existing": [r.run_id for r in plan.existing if not r.joins]},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_existing(plan)
        print(f"Created backfill {backfill_id} of {dag.dag_id}: {what}, at most "
              f"{max_active_runs} active" + ("" if args.local else
                                             " (queued: the scheduler creates the runs)"))
    if args.detach:
        return 0
    if args.local:
        return follow_local(ctx, backfill_id, quiet=args.output == "json")
    return follow(ctx, backfill_id, quiet=args.output == "json")


def _what(plan: BackfillPlan) -> str:
    parts = []
    if plan.runs:
        parts.append(f"{len(plan.runs)} runs from {plan.runs[0].run_id} to "
                     f"{plan.runs[-1].run_id}")
    if plan.rerun:
        tis = sum(len(r.to_clear) for r in plan.rerun)
        parts.append(f"{len(plan.rerun)} existing runs run again ({tis} task instances "
                     "cleared)")
    if plan.taken_in:
        parts.append(f"{len(plan.taken_in)} unfinished runs nothing drives taken in")
    return " and ".join(parts)


def follow_local(ctx: CliContext, backfill_id: int, *, quiet: bool = False) -> int:
    """Drive backfill ``backfill_id`` with a scheduler loop in this process, limited to it,
    while following it; stop the loop when it ends (or on Ctrl-C: a scheduler then carries
    on with it)."""
    import threading

    from squall.common.celery_app import create_celery_app
    from squall.common.wakeup import waker_for
    from squall.scheduler.executor import CeleryExecutor
    from squall.scheduler.job import SchedulerJob

    settings = ctx.settings
    app = create_celery_app(settings)
    executor = CeleryExecutor.from_settings(app, settings)
    job = SchedulerJob(settings, ctx.session_factory(), executor, waker=waker_for(ctx.engine),
                       only_backfill_id=backfill_id)
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            job.run()
        except BaseException as exc:  # reported by the follower below
            failure.append(exc)

    thread = threading.Thread(target=loop, name=f"backfill-{backfill_id}", daemon=True)
    thread.start()
    try:
        return follow(ctx, backfill_id, quiet=quiet, check_scheduler=False,
                      alive=lambda: not failure)
    finally:
        job.stop()
        thread.join(timeout=60)
        if failure:
            log.error("backfill %s: the local scheduler loop stopped: %s", backfill_id,
                      failure[0])


# --------------------------------------------------------------------------- following


def _check_scheduler(ctx: CliContext, backfill_id: int) -> None:
    """Raise :class:`CliError` when no scheduler heartbeats: nothing would drive it."""
    from squall.common.db import session_scope
    from squall.common.models import utcnow
    from squall.runs.jobs import scheduler_alive

    threshold = ctx.settings.scheduler.scheduler_health_check_threshold
    with session_scope(ctx.session_factory()) as session:
        alive = scheduler_alive(session, now=utcnow(), threshold=threshold)
    if not alive:
        raise CliError(
            f"no scheduler is running (no scheduler heartbeat in the last {threshold:g}s): "
            f"backfill {backfill_id} waits for one; start `squall scheduler`, then follow "
            f"it with `squall backfills show {backfill_id} -f`")


def _progress(ctx: CliContext, backfill_id: int) -> BackfillProgress:
    from squall.common.db import session_scope
    from squall.runs.backfill_progress import backfill_progress

    with session_scope(ctx.session_factory()) as session:
        progress = backfill_progress(session, backfill_id)
    if progress is None:
        raise CliError(f"no backfill {backfill_id} (see `squall backfills list`)")
    return progress


def follow(ctx: CliContext, backfill_id: int, *, quiet: bool = False,
           poll_seconds: float = POLL_SECONDS, check_scheduler: bool = True,
           alive: Callable[[], bool] | None = None) -> int:
    """Show the backfill's progress live until it ends (``quiet``: no display, the outcome
    on stderr); 0 when it succeeded, else 1 (the failed runs, or the deadlock report,
    named). Says so at once, and returns 1, when no scheduler is running
    (``check_scheduler``), or when ``alive`` (the local loop) says it stopped."""
    from contextlib import nullcontext

    from rich.live import Live

    progress = _progress(ctx, backfill_id)
    if not progress.finished and check_scheduler:
        _check_scheduler(ctx, backfill_id)
    started = checked = time.monotonic()
    live = (nullcontext() if quiet else
            Live(_render(progress, 0.0), console=console(), auto_refresh=False))
    with live:
        while not progress.finished:
            if alive is not None and not alive():
                raise CliError(f"backfill {backfill_id}: the local scheduler loop stopped "
                               "(see the log above); a running `squall scheduler` carries on "
                               f"with it: `squall backfills show {backfill_id} -f`")
            time.sleep(poll_seconds)
            progress = _progress(ctx, backfill_id)
            if isinstance(live, Live):
                live.update(_render(progress, time.monotonic() - started), refresh=True)
            if (check_scheduler and not progress.finished
                    and time.monotonic() - checked >= SCHEDULER_CHECK_SECONDS):
                checked = time.monotonic()
                _check_scheduler(ctx, backfill_id)
    return _outcome(progress, quiet=quiet)


def _outcome(progress: BackfillProgress, *, quiet: bool = False) -> int:
    """Print how the backfill ended; its exit code."""
    in_range = _range_counts(progress)
    if progress.state == BackfillState.SUCCESS:
        print(f"Backfill {progress.backfill_id} of {progress.dag_id}: success "
              f"({progress.runs_finished} runs){in_range}",
              file=sys.stderr if quiet else sys.stdout)
        return 0
    failed = ", ".join(progress.failed_runs) or "none"
    print(f"Backfill {progress.backfill_id} of {progress.dag_id}: {progress.state.value} "
          f"(failed runs: {failed}){in_range}", file=sys.stderr)
    if progress.reason:
        print(progress.reason, file=sys.stderr)
    _print_left(progress, file=sys.stderr)
    return 1


def _range_counts(progress: BackfillProgress) -> str:
    """``"; its range has 5 runs: success 5"``: every run of the range, this backfill's or
    not (empty until it ended)."""
    total = sum(progress.range_runs_by_state.values())
    if not total:
        return ""
    return f"; its range has {total} runs: {_counts(progress.range_runs_by_state)}"


def _print_left(progress: BackfillProgress, *, file: Any = None) -> None:
    """The runs an ended backfill left unfinished, and how to resume them."""
    if not progress.resume:
        return
    print(f"It left {len(progress.unfinished_runs)} run(s) unfinished, which no backfill "
          f"follows: {', '.join(progress.unfinished_runs)}", file=file)
    fix = "fix the cause, then " if progress.state == BackfillState.FAILED else ""
    print(f"To finish them, {fix}resume with: {progress.resume}\n(or clear or mark the "
          "blocking task instances: `squall tasks clear`, `squall tasks set-state`; or end "
          f"them: `squall backfills cancel {progress.backfill_id} --end-running`)", file=file)


def _render(progress: BackfillProgress, elapsed: float) -> RenderableType:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    total = max(progress.total_runs, progress.runs_finished, 1)
    table = Table(show_header=False, box=None)
    table.add_row("runs finished", f"{progress.runs_finished} / {progress.total_runs}")
    table.add_row("runs", _counts(progress.runs_by_state))
    table.add_row("task instances", _ti_counts(progress))
    table.add_row("elapsed", f"{elapsed:.0f}s" + _estimate(progress, elapsed))
    if progress.reason:
        table.add_row("reason", progress.reason.splitlines()[0])
    return Group(
        f"Backfill {progress.backfill_id} of {progress.dag_id}: {progress.state.value}",
        ProgressBar(total=total, completed=progress.runs_finished, width=40),
        table,
    )


def _counts(by_state: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(by_state.items())) or "-"


#: The task instance states the display names, in its order (``none`` is "not ready").
_TI_ORDER = ("success", "failed", "upstream_failed", "running", "queued", "scheduled",
             "up_for_retry", "up_for_reschedule", "deferred", "restarting", "skipped", "removed")


def _ti_counts(progress: BackfillProgress) -> str:
    by_state = progress.tis_by_state
    parts = [f"{state} {by_state[state]}" for state in _TI_ORDER if by_state.get(state)]
    if progress.not_ready:
        label = "deadlocked" if progress.deadlocked else "not ready"
        parts.append(f"{label} {progress.not_ready}")
    return ", ".join(parts) or "-"


def _estimate(progress: BackfillProgress, elapsed: float) -> str:
    """``", about Ns left"`` from the pace so far (nothing before the first run ends)."""
    done, total = progress.runs_finished, progress.total_runs
    if progress.finished or done == 0 or done >= total:
        return ""
    return f", about {elapsed / done * (total - done):.0f}s left"


# --------------------------------------------------------------------------- backfills


def list_backfills(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import Backfill

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
    from squall.common.models import utcnow

    if args.follow:
        return follow(ctx, args.backfill_id, quiet=args.output == "json")
    progress = _progress(ctx, args.backfill_id)
    if args.output == "json":
        json.dump({"id": progress.backfill_id, "dag_id": progress.dag_id,
                   "state": progress.state.value, "total_runs": progress.total_runs,
                   "runs_finished": progress.runs_finished,
                   "runs_by_state": progress.runs_by_state,
                   "task_instances_by_state": progress.tis_by_state,
                   "failed_runs": progress.failed_runs, "reason": progress.reason,
                   "unfinished_runs": progress.unfinished_runs,
                   "resume_command": progress.resume,
                   "range_runs_by_state": progress.range_runs_by_state,
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
    _print_left(progress)
    return 0


def cancel(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.common.models import Backfill, utcnow
    from squall.runs.backfill import cancel_backfill

    with session_scope(ctx.session_factory()) as session:
        row = session.get(Backfill, args.backfill_id)
        if row is None:
            raise CliError(f"no backfill {args.backfill_id} (see `squall backfills list`)")
        ended = cancel_backfill(session, args.backfill_id, now=utcnow(),
                                end_running=args.end_running)
        if ended is None:
            raise CliError(f"backfill {args.backfill_id} is {row.state}: nothing to cancel"
                           + ("" if args.end_running else
                              " (--end-running ends the runs it left unfinished)"))
        state = row.state  # (each run ended wakes the schedulers: mark_run)
        from squall.runs import audit
        audit.record_event(session, audit.BACKFILL_CANCEL, owner=audit.cli_owner(),
                           dag_id=row.dag_id, source="cli",
                           extra={"backfill_id": args.backfill_id,
                                  "end_running": args.end_running, "ended_runs": len(ended)})
    if args.end_running:
        what = "cancelled" if state in ("queued", "running") else f"{state} already"
        print(f"Backfill {args.backfill_id}: {what}; {len(ended)} unfinished run(s) "
              f"ended{': ' + ', '.join(ended) if ended else ''}")
    else:
        print(f"Backfill {args.backfill_id}: cancelled (its runs already created go on to "
              "finish; `--end-running` ends them)")
    return 0


def _print_existing(plan: BackfillPlan) -> None:
    for run in plan.existing:
        if run.orphan is not None and not run.to_clear:
            print(f"Taken in: {plan.dag_id} run {run.run_id} ({run.run_type}, {run.state}) "
                  f"at {run.logical_date.isoformat()}: nothing drives it ({run.orphan})")
        elif run.to_clear:
            print(f"Run again: {plan.dag_id} run {run.run_id} ({run.run_type}, {run.state}) "
                  f"at {run.logical_date.isoformat()}: clears {', '.join(run.to_clear)}")
        else:
            print(f"Left alone: {plan.dag_id} already has run {run.run_id} ({run.run_type}, "
                  f"{run.state}) at {run.logical_date.isoformat()}")


def _print_plan(dag: DAG, plan: BackfillPlan, task_ids: list[str], output: str, *,
                mark_success: bool = False) -> None:
    if output == "json":
        data: dict[str, Any] = {
            "dag_id": dag.dag_id,
            "mark_success": mark_success,
            "runs": [{"run_id": r.run_id, "logical_date": r.logical_date.isoformat(),
                      "data_interval_start": r.data_interval.start.isoformat(),
                      "data_interval_end": r.data_interval.end.isoformat(),
                      "task_ids": task_ids} for r in plan.runs],
            "existing": [{"run_id": r.run_id, "logical_date": r.logical_date.isoformat(),
                          "run_type": r.run_type, "state": r.state,
                          "to_clear": list(r.to_clear), "taken_in": r.orphan}
                         for r in plan.existing],
        }
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    rows = [{"run_id": r.run_id, "logical_date": r.logical_date.isoformat(),
             "data_interval": f"{r.data_interval.start.isoformat()} -> "
                              f"{r.data_interval.end.isoformat()}",
             "task_instances": ", ".join(task_ids)} for r in plan.runs]
    marked = " (marked success, not run)" if mark_success else ""
    print_rows(rows, ["run_id", "logical_date", "data_interval", "task_instances"], "table",
               title=f"Dry run: backfill of {dag.dag_id} would create {len(plan.runs)} "
               f"runs{marked}")
    _print_existing(plan)
    console().print("Dry run: nothing was created.")
