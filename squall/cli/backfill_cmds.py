"""``squall dags backfill``: plan a backfill of a date range and hand it to the scheduler.

The command records a ``backfill`` row (state ``queued``); the scheduler creates its runs
(see :mod:`squall.scheduler.backfill`). ``--dry-run`` prints the runs and task instances it
would create and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from typing import Any

from squall.cli.common import CliContext, CliError, add_output_flag, console, print_rows
from squall.cli.dags_cmds import _parse_conf, _parse_date
from squall.cli.runs_cmds import _parse_and_add, _subcommands
from squall.common.db import session_scope
from squall.common.errors import BackfillError
from squall.common.wakeup import notify_scheduler
from squall.dag_processing.sync import load_serialized_dags
from squall.scheduler.backfill import BackfillPlan, create_backfill, plan_backfill
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)


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
                   help="return once the backfill is recorded")
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask for confirmation")
    add_output_flag(p)
    p.set_defaults(func=backfill)


def _load_dag(ctx: CliContext, dag_id: str) -> DAG:
    """``dag_id`` from ``serialized_dag`` (parsing the DAG folder when it is not there)."""
    factory = ctx.session_factory()
    with session_scope(factory) as session:
        dag = load_serialized_dags(session, [dag_id], only_active=True).get(dag_id)
    if dag is None:
        log.info("DAG %s is not in the database yet: parsing the DAG folder", dag_id)
        _parse_and_add(ctx)
        with session_scope(factory) as session:
            dag = load_serialized_dags(session, [dag_id], only_active=True).get(dag_id)
    if dag is None:
        raise CliError(f"DAG {dag_id!r} not found (see `squall dags list` and "
                       "`squall dags list-import-errors`)")
    return dag


def _date(value: str, ctx: CliContext) -> datetime:
    parsed = _parse_date(value, ctx.settings.core.default_timezone)
    assert parsed is not None
    return parsed


def backfill(ctx: CliContext, args: argparse.Namespace) -> int:
    start, end = _date(args.start_date, ctx), _date(args.end_date, ctx)
    conf = _parse_conf(args.conf)
    if args.max_active_runs is not None and args.max_active_runs < 1:
        raise CliError("--max-active-runs must be >= 1")
    dag = _load_dag(ctx, args.dag_id)
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
