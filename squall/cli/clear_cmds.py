"""``squall tasks clear``: clear task instances so that they run again (Airflow 2's
``airflow tasks clear``).

The selection and the database work are :mod:`squall.runs.clear`'s; this module
parses the options, shows what will be cleared and asks before clearing it (unless
``-y``; with no terminal to ask on, ``-y`` is required).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Any

from squall.cli.common import CliContext, CliError, confirm, print_rows
from squall.cli.dags_cmds import _parse_date
from squall.cli.runs_cmds import (
    NO_USABLE_DAG,
    _subcommands,
    load_dag,
    with_map_index,
)
from squall.common.state import ONLY_FAILED_STATES, ONLY_RUNNING_STATES, TaskInstanceState

log = logging.getLogger(__name__)

COLUMNS = ["dag_id", "run_id", "task_id", "state", "try_number"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``clear`` to ``tasks`` (registered before this)."""
    p = _subcommands(sub, "tasks").add_parser(
        "clear", help="clear task instances so that they run again",
        description="Clears the selected task instances of DAG_ID: a finished one (or one "
        "waiting for a retry, scheduled or queued) goes back to none with its retries "
        "granted again (max_tries = try number + retries); a running try is stopped (state "
        "restarting: its supervisor kills every process of it at its next heartbeat) and "
        "then runs again as the next try. Their reschedule records are deleted and their "
        "finished DAG runs are queued again, so the scheduler runs them. The selection is "
        "listed and confirmed first (unless -y).")
    p.add_argument("dag_id")
    p.add_argument("-t", "--task-regex",
                   help="only the tasks whose id matches this regular expression (search)")
    p.add_argument("-s", "--start-date", help="only runs with a logical date from this one")
    p.add_argument("-e", "--end-date", help="only runs with a logical date up to this one")
    p.add_argument("--run-id", help="only this run")
    p.add_argument("--map-index", type=int, action="append", metavar="N",
                   help="only this instance of the mapped tasks -t matches (repeat for more; "
                   "their upstream / downstream tasks: every instance)")
    p.add_argument("-u", "--upstream", action="store_true",
                   help="also the tasks upstream of the matched ones")
    p.add_argument("-d", "--downstream", action="store_true",
                   help="also the tasks downstream of the matched ones")
    only = p.add_mutually_exclusive_group()
    only.add_argument("-f", "--only-failed", action="store_true",
                      help="only failed and upstream_failed task instances")
    only.add_argument("-r", "--only-running", action="store_true",
                      help="only running task instances")
    p.add_argument("-x", "--exclude-subdags", action="store_true",
                   help="do not clear the tasks of other DAGs that the ExternalTaskMarkers "
                   "among the cleared task instances mark (followed by default, as Airflow)")
    p.add_argument("-X", "--exclude-parentdag", action="store_true",
                   help="accepted for Airflow's command line; there are no subDAGs")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be cleared and change nothing")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=clear)


def clear(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.common.models import DagModel, utcnow
    from squall.runs.clear import (
        clear_task_instances,
        follow_markers,
        matching_task_ids,
        select_task_instances,
    )
    from squall.runs.external_clear import ClearError

    tz = ctx.settings.core.default_timezone
    start = _parse_date(args.start_date, tz)
    end = _parse_date(args.end_date, tz)
    if args.task_regex:
        try:
            re.compile(args.task_regex)
        except re.error as exc:
            raise CliError(f"--task-regex {args.task_regex!r}: {exc}") from None
    states = (ONLY_FAILED_STATES if args.only_failed
              else ONLY_RUNNING_STATES if args.only_running else None)
    factory = ctx.session_factory()
    with session_scope(factory) as session:
        if session.get(DagModel, args.dag_id) is None:
            raise CliError(f"DAG {args.dag_id!r} not found (see `squall dags list`)")
    if args.map_index and not args.task_regex:
        raise CliError("--map-index needs -t/--task-regex: the tasks whose instances it picks")
    dag = load_dag(ctx, args.dag_id, only_active=False, missing=NO_USABLE_DAG)
    map_indexes = ({tid: set(args.map_index) for tid in matching_task_ids(dag, args.task_regex)}
                   if args.map_index else None)
    with session_scope(factory) as session:
        try:
            tis = select_task_instances(session, dag, task_regex=args.task_regex,
                                        upstream=args.upstream, downstream=args.downstream,
                                        start=start, end=end, run_id=args.run_id,
                                        states=states, map_indexes=map_indexes)
            if not args.exclude_subdags:
                tis = follow_markers(session, dag, tis, states)
        except ClearError as exc:
            raise CliError(str(exc)) from None
    if not tis:
        print("No task instances to clear")
        return 0
    rows: list[dict[str, Any]] = [
        {"dag_id": t.dag_id, "run_id": t.run_id, "task_id": t.task_id,
         "map_index": t.map_index, "state": t.state, "try_number": t.try_number} for t in tis]
    columns, shown = with_map_index(COLUMNS, rows)
    print_rows(shown, columns, "table")
    if args.dry_run:
        print(f"Dry run: {len(tis)} task instance(s) would be cleared; nothing changed")
        return 0
    if not args.yes:
        _confirm(len(tis))
    # no transaction is held while asking; each row is cleared only if it is still as
    # listed (compare-and-set), else reported
    with session_scope(factory) as session:
        result = clear_task_instances(session, tis, dag, utcnow())
        from squall.runs import audit
        runs, tasks = {ti.run_id for ti in tis}, {ti.task_id for ti in tis}
        audit.record_event(
            session, audit.CLEAR, owner=audit.cli_owner(), dag_id=args.dag_id, source="cli",
            run_id=runs.pop() if len(runs) == 1 else None,
            task_id=tasks.pop() if len(tasks) == 1 else None,
            extra={"cleared": len(result.cleared),
                   **{f: getattr(args, f) for f in ("task_regex", "start_date", "end_date")
                      if getattr(args, f)},
                   **{f: True for f in ("only_failed", "only_running", "upstream",
                                        "downstream") if getattr(args, f)}})
    stopped = sum(c.new_state == TaskInstanceState.RESTARTING for c in result.cleared)
    note = (f" ({stopped} running: stopped at their supervisor's next heartbeat, then run "
            "again)" if stopped else "")
    print(f"Cleared {len(result.cleared)} task instance(s){note}")
    if result.reactivated_runs:
        print(f"Queued again {len(result.reactivated_runs)} finished DAG run(s): "
              + ", ".join(run_id for _, run_id in result.reactivated_runs))
    if result.changed:
        print(f"Left alone {len(result.changed)} task instance(s) that changed meanwhile: "
              + ", ".join(str(k) for k in result.changed), file=sys.stderr)
        return 1
    return 0


def _confirm(count: int) -> None:
    confirm(f"Clear these {count} task instance(s)?",
            no_terminal="no terminal to confirm on: pass -y to clear without asking "
                        "(or --dry-run to only list)",
            cancelled="cancelled; nothing cleared")
