"""``squall dags ...`` and ``squall tasks test``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squall.cli.common import CliContext, CliError, add_output_flag, console, print_rows
from squall.common.errors import SquallError
from squall.common.state import SUCCEEDED_STATES, DagRunState

if TYPE_CHECKING:
    from squall.dag_processing.dagbag import DagBag
    from squall.sdk.dag import DAG

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    dags = sub.add_parser("dags", help="list, inspect, pause and test DAGs",
                          description="Work with the DAGs in [core] dags_folder.")
    dsub = dags.add_subparsers(dest="dags_command", required=True, metavar="COMMAND")

    p = dsub.add_parser("list", help="parse the DAG folder and list its DAGs")
    add_output_flag(p)
    p.set_defaults(func=list_dags)

    p = dsub.add_parser("list-import-errors", help="DAG files that failed to load, and why")
    add_output_flag(p)
    p.set_defaults(func=list_import_errors)

    p = dsub.add_parser(
        "report", help="how long each DAG file took to parse, slowest first",
        description="One row per DAG file, from the last parse a DAG processor (or `squall "
        "dags list`) recorded, slowest first: the file (relative to [core] dags_folder when "
        "inside it); duration: the seconds the parse's child process took to import the file "
        "and serialize its DAGs (a file whose answer was unchanged still counts its import); "
        "dag_num / task_num: the DAGs the file defines and their tasks; dags: their ids; "
        "last_parsed: how long ago that parse was; import_error: whether the file has one "
        "(see `squall dags list-import-errors`). The last line totals files, DAGs, tasks and "
        "durations (not in -o json, a list of rows with the duration in seconds and "
        "last_parsed_at in ISO 8601). Nothing is parsed by this command.")
    p.add_argument("-o", "--output", choices=("table", "json", "plain"), default="table",
                   help="output format: a table, JSON, or plain aligned columns without "
                   "borders (default: table)")
    p.set_defaults(func=report)

    p = dsub.add_parser("show", help="print a DAG's tasks and dependencies")
    p.add_argument("dag_id")
    p.set_defaults(func=show_dag)

    for name, paused in (("pause", True), ("unpause", False)):
        p = dsub.add_parser(name, help=f"{name} a DAG (a paused DAG gets no scheduled runs)")
        p.add_argument("dag_id")
        p.set_defaults(func=set_paused, paused=paused)

    p = dsub.add_parser(
        "sla-misses", help="the DAG's tasks that missed their sla, latest first",
        description="Lists the sla_miss rows of a DAG the DAG processor recorded: a task of "
        "a scheduled run that had not succeeded by the run's data_interval_end plus the "
        "task's sla; whether the DAG's sla_miss_callback / e-mail was run for it "
        "(notification_sent) and the e-mail sent (email_sent).")
    p.add_argument("dag_id")
    add_output_flag(p)
    p.set_defaults(func=list_sla_misses)

    p = dsub.add_parser(
        "test", help="run one DAG run in this process (no broker, no worker)",
        description="Runs every task of one DAG run here, one after another, honouring "
        "dependencies, trigger rules, retries (waiting out their delays), timeouts, sensors "
        "and XCom, then prints the run's state and each task instance's state and try "
        "number. Exit code 0 when the run succeeded, 1 otherwise.")
    p.add_argument("dag_id")
    p.add_argument("logical_date", nargs="?", help="ISO date or datetime (default: now)")
    p.add_argument("--conf", help="JSON object passed to the run as dag_run.conf")
    add_output_flag(p)
    p.set_defaults(func=test_dag, service=True)


def register_tasks(sub: argparse._SubParsersAction) -> None:
    tasks = sub.add_parser("tasks", help="run or inspect single tasks")
    tsub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")
    p = tsub.add_parser(
        "test", help="run one task once in this process, without checking its dependencies",
        description="Creates a run for LOGICAL_DATE (replacing an existing one) and runs one "
        "try of TASK_ID in it. Exit code 0 when the task succeeded or skipped.")
    p.add_argument("dag_id")
    p.add_argument("task_id")
    p.add_argument("logical_date", nargs="?", help="ISO date or datetime (default: now)")
    p.add_argument("--conf", help="JSON object passed to the run as dag_run.conf")
    add_output_flag(p)
    p.set_defaults(func=test_task, service=True)


# ---------------------------------------------------------------------------------------


def _bag(ctx: CliContext) -> DagBag:
    from squall.dag_processing.dagbag import DagBag

    return DagBag.from_settings(ctx.settings)


def parse_and_sync(ctx: CliContext) -> None:
    """Parse every DAG file (in child processes) and record the result in the database.

    As the DAG processor does, each file's last recorded answer (``dag_file.fingerprint``)
    is given to the parse: a file that answers the same again is neither decoded nor
    written, only its DAGs' ``last_parsed_time`` is (issue 26: most of a `dags list` on an
    unchanged folder was rebuilding and comparing every DAG). An unchanged file that
    ``sync_to_db`` says lost a DAG row is parsed again in full, in the same transaction."""
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import DagFile, utcnow
    from squall.dag_processing.sync import sync_to_db

    factory = ctx.session_factory()
    bag = _bag(ctx)
    if not bag.dag_folder.is_dir():
        log.warning("DAG folder %s does not exist", bag.dag_folder)
    files = bag.files()
    with session_scope(factory) as session:
        previous = dict(session.execute(select(DagFile.fileloc, DagFile.fingerprint)).all())
    result = bag.parse_isolated(files=files, previous=previous)
    paused = ctx.settings.core.dags_are_paused_at_creation
    known = [*result.files_parsed, *result.unchanged]
    with session_scope(factory) as session:
        stale = sync_to_db(session, result, paused_at_creation=paused, now=utcnow(),
                           known_files=known)
        if stale:
            again = bag.parse_isolated(files=[(p, r) for p, r in files if str(p) in stale])
            sync_to_db(session, again, paused_at_creation=paused, now=utcnow(),
                       known_files=known)


def load_dag(ctx: CliContext, dag_id: str) -> DAG:
    """Load ``dag_id`` in this process (it runs the DAG file's code)."""
    bag = _bag(ctx)
    bag.collect_in_process()
    if dag_id in bag.dags:
        return bag.dags[dag_id]
    for path, message in bag.import_errors.items():
        log.warning("DAG file %s failed to load: %s", path, message.splitlines()[-1])
    searched = str(bag.dag_folder) + (" and the examples" if bag.include_examples else "")
    raise CliError(f"DAG {dag_id!r} not found in {searched} "
                   "(see `squall dags list-import-errors` for files that failed to load)")


def list_dags(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from squall.common.db import session_scope
    from squall.common.models import DagModel, ImportError_

    parse_and_sync(ctx)
    with session_scope(ctx.session_factory()) as session:
        rows = session.scalars(select(DagModel).where(DagModel.is_active.is_(True))
                               .order_by(DagModel.dag_id)).all()
        data = [{"dag_id": d.dag_id, "fileloc": d.fileloc, "owners": d.owners,
                 "is_paused": d.is_paused, "schedule": d.schedule,
                 "tags": ",".join(d.tags or [])} for d in rows]
        failed = session.scalar(select(func.count()).select_from(ImportError_)) or 0
    if failed:  # as Airflow 2's `dags list` says it, on stderr: stdout stays the list
        print(f"Error: Failed to load all files ({failed} file(s) with import errors). For "
              "details, run `squall dags list-import-errors`", file=sys.stderr)
    print_rows(data, ["dag_id", "fileloc", "owners", "is_paused", "schedule", "tags"],
               args.output)
    return 0


def list_sla_misses(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import DagModel, SlaMiss
    from squall.runs.sla_misses import sla_miss_dict

    with session_scope(ctx.session_factory()) as session:
        if session.get(DagModel, args.dag_id) is None:
            raise CliError(f"DAG {args.dag_id!r} is not in the metadata database (squall dags "
                           "list parses the DAG folder)")
        rows = session.scalars(select(SlaMiss).where(SlaMiss.dag_id == args.dag_id)
                               .order_by(SlaMiss.execution_date.desc(),
                                         SlaMiss.task_id)).all()
        data = [sla_miss_dict(m) for m in rows]
    if not data and args.output == "table":
        print(f"No SLA misses for DAG {args.dag_id}.")
        return 0
    print_rows(data, ["task_id", "run_id", "execution_date", "deadline", "timestamp",
                      "notification_sent", "email_sent"], args.output)
    return 0


def list_import_errors(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import ImportError_

    parse_and_sync(ctx)
    with session_scope(ctx.session_factory()) as session:
        rows = session.scalars(select(ImportError_).order_by(ImportError_.filename)).all()
        data = [{"filepath": e.filename, "error": e.stacktrace} for e in rows]
    if not data and args.output == "table":
        print("No import errors.")
        return 0
    print_rows(data, ["filepath", "error"], args.output)
    return 0


def _ago(seconds: float) -> str:
    """``seconds`` as a short "ago": 42s, 3m 5s, 2h 10m, 4d 1h."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h ago"
    if hours:
        return f"{hours}h {minutes}m ago"
    if minutes:
        return f"{minutes}m {secs}s ago"
    return f"{secs}s ago"


def _shown_path(fileloc: str, folder: Path) -> str:
    """``fileloc`` relative to ``folder`` when it is inside it, else as it is."""
    try:
        return str(Path(fileloc).relative_to(folder))
    except ValueError:
        return fileloc


REPORT_COLUMNS = ["file", "duration", "dag_num", "task_num", "dags", "last_parsed",
                  "import_error"]


def report(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import DagFile, utcnow

    with session_scope(ctx.session_factory()) as session:
        rows = session.scalars(select(DagFile).order_by(DagFile.last_duration.desc(),
                                                        DagFile.fileloc)).all()
    if not rows:
        if args.output == "json":
            print("[]")
        else:
            print("No DAG file has been parsed yet: a DAG processor records each parse "
                  "(is the scheduler running?).")
        return 0
    folder = Path(os.path.abspath(ctx.settings.dags_folder))
    now = utcnow()
    if args.output == "json":
        json.dump([{"file": _shown_path(r.fileloc, folder), "fileloc": r.fileloc,
                    "duration": r.last_duration, "dag_num": len(r.dag_ids),
                    "task_num": r.task_count, "dags": list(r.dag_ids),
                    "last_parsed_at": r.last_parsed_at.isoformat(),
                    "import_error": r.has_import_error} for r in rows],
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    data = [{"file": _shown_path(r.fileloc, folder), "duration": f"{r.last_duration:.3f}s",
             "dag_num": len(r.dag_ids), "task_num": r.task_count,
             "dags": ", ".join(r.dag_ids),
             "last_parsed": _ago((now - r.last_parsed_at).total_seconds()),
             "import_error": "yes" if r.has_import_error else "no"} for r in rows]
    total = (f"Total: {len(rows)} file(s), {sum(len(r.dag_ids) for r in rows)} DAG(s), "
             f"{sum(r.task_count for r in rows)} task(s), "
             f"{sum(r.last_duration for r in rows):.3f}s of parsing")
    if args.output == "plain":
        cells = [REPORT_COLUMNS] + [[str(row[c]) for c in REPORT_COLUMNS] for row in data]
        widths = [max(len(line[i]) for line in cells) for i in range(len(REPORT_COLUMNS))]
        for line in cells:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                  .rstrip())
        print(total)
        return 0
    print_rows(data, REPORT_COLUMNS, "table")
    print(total)
    return 0


def show_dag(ctx: CliContext, args: argparse.Namespace) -> int:
    dag = load_dag(ctx, args.dag_id)
    out = console()
    out.print(f"DAG {dag.dag_id}  schedule={dag.timetable.summary}  file={dag.fileloc}")
    for line in dag.tree_lines():
        out.print(line, markup=False, highlight=False)
    return 0


def set_paused(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.common.models import DagModel
    from squall.runs import pausing

    factory = ctx.session_factory()
    with session_scope(factory) as session:
        exists = session.get(DagModel, args.dag_id) is not None
    if not exists:
        parse_and_sync(ctx)
    with session_scope(factory) as session:
        changed = pausing.set_paused(session, args.dag_id, args.paused, by="CLI") is not None
        if changed:
            from squall.runs import audit
            audit.record_event(session, audit.paused_event(args.paused),
                               owner=audit.cli_owner(), dag_id=args.dag_id, source="cli")
    if not changed:
        raise CliError(f"DAG {args.dag_id!r} not found (see `squall dags list`)")
    print(f"DAG {args.dag_id}: {'paused' if args.paused else 'unpaused'}")
    return 0


def _parse_date(value: str | None, timezone: str) -> datetime | None:
    """A logical date from the command line; without an offset it is a wall time in
    ``timezone`` (``[core] default_timezone``, as Airflow's CLI takes it)."""
    import pendulum

    if value is None:
        return None
    try:
        parsed = pendulum.parse(value, tz=timezone)
    except (ValueError, pendulum.parsing.exceptions.ParserError) as exc:
        raise CliError(f"logical date {value!r} is not an ISO date or datetime: {exc}") from None
    if not isinstance(parsed, datetime):
        raise CliError(f"logical date {value!r} is not a date or datetime")
    return parsed


def _parse_conf(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        conf = json.loads(value)
    except json.JSONDecodeError as exc:
        raise CliError(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise CliError("--conf must be a JSON object")
    return conf


def test_dag(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.scheduler.local_run import run_dag_locally

    logical = _parse_date(args.logical_date, ctx.settings.core.default_timezone)
    conf = _parse_conf(args.conf)
    dag = load_dag(ctx, args.dag_id)
    try:
        result = run_dag_locally(dag, ctx.session_factory(), logical_date=logical, conf=conf,
                                 log_folder=ctx.settings.log_folder)
    except SquallError as exc:
        raise CliError(str(exc)) from exc
    if args.output == "json":
        json.dump(result.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        rows = [{"task_id": t.task_id, "map_index": t.map_index, "state": t.state,
                 "try_number": t.try_number, "reason": t.state_reason}
                for t in result.task_instances]
        mapped = any(t.map_index >= 0 for t in result.task_instances)
        columns = ["task_id", *(["map_index"] if mapped else []), "state", "try_number",
                   "reason"]
        print_rows(rows, columns, "table",
                   title=f"DagRun {result.dag_id} {result.run_id}: {result.state.value}")
    return 0 if result.state == DagRunState.SUCCESS else 1


def test_task(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.scheduler.local_run import run_task_locally

    dag = load_dag(ctx, args.dag_id)
    if not dag.has_task(args.task_id):
        raise CliError(f"DAG {dag.dag_id} has no task {args.task_id!r} "
                       f"(tasks: {', '.join(dag.task_ids)})")
    summary = run_task_locally(dag, args.task_id, ctx.session_factory(),
                               logical_date=_parse_date(args.logical_date,
                                                        ctx.settings.core.default_timezone),
                               conf=_parse_conf(args.conf), log_folder=ctx.settings.log_folder)
    row = {"task_id": summary.task_id, "state": summary.state,
           "try_number": summary.try_number, "reason": summary.state_reason}
    if args.output == "json":
        json.dump(row, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_rows([row], ["task_id", "state", "try_number", "reason"], "table")
    return 0 if summary.state in SUCCEEDED_STATES else 1
