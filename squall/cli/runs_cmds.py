"""DAG run and task instance commands: ``squall dags trigger | state | list-runs`` and
``squall tasks state | set-state | states-for-dag-run``.

They work from the database (the serialized DAG, the ``dag_run`` and ``task_instance``
rows); only ``dags trigger`` of a DAG the database does not know yet parses the DAG folder
(in child processes) first.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from squall.cli.common import CliContext, CliError, add_output_flag, confirm, print_rows
from squall.cli.dags_cmds import _bag, _parse_conf, _parse_date
from squall.common.errors import TaskNotFound, TriggerError
from squall.common.state import SETTABLE_STATES, DagRunState, TaskInstanceState

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from squall.common.models import DagRun
    from squall.sdk.dag import DAG

log = logging.getLogger(__name__)

RUN_COLUMNS = ["dag_id", "run_id", "state", "run_type", "logical_date", "start_date",
               "end_date"]
TI_COLUMNS = ["task_id", "state", "try_number", "hostname", "start_date", "end_date",
              "reason"]
MAP_INDEX_HELP = "the instance of a mapped task (Airflow's --map-index; -1: not mapped)"


def with_map_index(columns: list[str], rows: list[dict[str, Any]], output: str = "table",
                   ) -> tuple[list[str], list[dict[str, Any]]]:
    """``columns`` and ``rows`` (each with a ``map_index``) as Airflow's ``tasks
    states-for-dag-run`` shows them: a ``map_index`` column after ``task_id`` only when a
    row is a mapped instance ("" for the others in a table); no ``map_index`` otherwise."""
    if not any(r["map_index"] >= 0 for r in rows):
        return columns, [{k: v for k, v in r.items() if k != "map_index"} for r in rows]
    at = columns.index("task_id") + 1
    if output != "json":
        rows = [{**r, "map_index": str(r["map_index"]) if r["map_index"] >= 0 else ""}
                for r in rows]
    return [*columns[:at], "map_index", *columns[at:]], rows


def _subcommands(sub: argparse._SubParsersAction, name: str) -> argparse._SubParsersAction:
    """The subcommands of the already registered command ``name`` (``dags`` / ``tasks``)."""
    parser = sub.choices[name]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError(f"command {name!r} has no subcommands")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the run commands to ``dags`` and ``tasks`` (registered before this)."""
    dsub = _subcommands(sub, "dags")
    p = dsub.add_parser(
        "trigger", help="create a manual DAG run (of one or more DAGs); the scheduler starts it",
        description="Creates a QUEUED manual run of each DAG_ID from the DAG as last parsed "
        "into the database (the DAG folder is parsed first if a DAG is not there yet) and "
        "prints its run id; a DAG whose file has import errors is refused. The scheduler "
        "starts it when the DAG has room under max_active_runs and is not paused. With "
        "several DAG_IDs each run is created on its own: one that fails is reported and "
        "the others are still created (exit status 1).")
    p.add_argument("dag_id", nargs="+")
    p.add_argument("-c", "--conf", help="JSON object passed to the run as dag_run.conf")
    p.add_argument("-r", "--run-id", help="the run id (default: manual__<logical date>)")
    p.add_argument("-e", "--logical-date", help="ISO date or datetime (default: now)")
    p.set_defaults(func=trigger)

    p = dsub.add_parser("state", help="print the state of a DAG run")
    p.add_argument("dag_id")
    p.add_argument("run_id")
    p.set_defaults(func=dag_run_state)

    p = dsub.add_parser("list-runs", help="list a DAG's runs, newest first")
    p.add_argument("dag_id")
    p.add_argument("--state", choices=[s.value for s in DagRunState],
                   help="only runs in this state")
    add_output_flag(p)
    p.set_defaults(func=list_runs)

    tsub = _subcommands(sub, "tasks")
    p = tsub.add_parser("state", help="print the state of a task instance (and on stderr "
                        "why it is in it, when the scheduler or a worker said)")
    p.add_argument("dag_id")
    p.add_argument("task_id")
    p.add_argument("run_id")
    p.add_argument("--map-index", type=int, default=-1, help=MAP_INDEX_HELP)
    p.set_defaults(func=task_state)

    p = tsub.add_parser(
        "set-state", help="mark a task instance (and its relatives) failed, success or "
        "skipped",
        description="Sets the task instance's state, and with --upstream / --downstream "
        "that of its upstream / downstream tasks (transitively) in the run, with --past / "
        "--future also in the DAG's runs with an earlier / later logical date (Airflow's "
        "mark success / failed). Task instances already in that state are left out. Each "
        "is changed by compare-and-set from the state it was listed in; one that changed "
        "meanwhile is reported and left alone (exit status 1). A running try's supervisor "
        "sees the change at its next heartbeat and kills the task process. A finished DAG "
        "run with a changed task instance is set back to running and the scheduler decides "
        "it again (a failed run whose failed leaf is marked success succeeds). Marked "
        "success or skipped, the failed and upstream_failed task instances downstream of "
        "the task are cleared to run again, as Airflow does. More than one task instance "
        "is listed and confirmed first (unless -y). For a mapped task: every instance, or "
        "with --map-index only those (its relatives: all of theirs).")
    p.add_argument("dag_id")
    p.add_argument("task_id")
    p.add_argument("run_id")
    p.add_argument("--map-index", type=int, action="append", metavar="N",
                   help="only this instance of a mapped task (repeat for more)")
    p.add_argument("--state", required=True, choices=[s.value for s in SETTABLE_STATES])
    p.add_argument("-u", "--upstream", action="store_true",
                   help="also the task's upstream tasks, transitively")
    p.add_argument("-d", "--downstream", action="store_true",
                   help="also the task's downstream tasks, transitively")
    p.add_argument("--future", action="store_true",
                   help="also in the DAG's runs with a later logical date")
    p.add_argument("--past", action="store_true",
                   help="also in the DAG's runs with an earlier logical date")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would change; change nothing")
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask for confirmation (needed without a terminal when more "
                   "than one task instance changes)")
    p.set_defaults(func=set_task_state)

    p = tsub.add_parser("states-for-dag-run",
                        help="list the task instances of a DAG run, their states and why "
                        "(e.g. what a task instance waits for)")
    p.add_argument("dag_id")
    p.add_argument("run_id")
    add_output_flag(p)
    p.set_defaults(func=states_for_dag_run)


# ---------------------------------------------------------------------------------------


def trigger(ctx: CliContext, args: argparse.Namespace) -> int:
    conf = _parse_conf(args.conf)
    logical = _parse_date(args.logical_date, ctx.settings.core.default_timezone)
    dag_ids: list[str] = list(dict.fromkeys(args.dag_id))
    failed = 0
    for dag_id in dag_ids:
        try:
            run_id, paused = trigger_dag_run(ctx, dag_id, conf=conf, run_id=args.run_id,
                                             logical_date=logical)
        except CliError as exc:
            if len(dag_ids) == 1:
                raise
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"Created DagRun {dag_id} {run_id} (queued)")
        if paused:
            print(f"DAG {dag_id} is paused: the run starts once it is unpaused "
                  f"(squall dags unpause {dag_id})")
    return 1 if failed else 0


def trigger_dag_run(ctx: CliContext, dag_id: str, *, conf: dict[str, Any] | None = None,
                    run_id: str | None = None,
                    logical_date: datetime | None = None) -> tuple[str, bool]:
    """Create a QUEUED manual run of ``dag_id`` (parsing the DAG folder first when the DAG
    is not in the database yet); returns the run id and whether the DAG is paused."""
    from squall.common.db import session_scope
    from squall.runs.trigger import trigger_run

    load_dag(ctx, dag_id)
    with session_scope(ctx.session_factory()) as session:
        try:
            done = trigger_run(session, dag_id, run_id=run_id, logical_date=logical_date,
                               conf=conf, triggered_by="`squall dags trigger`",
                               default_queue=ctx.settings.celery.default_queue)
        except TriggerError as exc:
            raise CliError(str(exc)) from None
        from squall.runs import audit
        audit.record_event(session, audit.TRIGGER, owner=audit.cli_owner(), dag_id=dag_id,
                           run_id=done.run.run_id, logical_date=done.run.logical_date,
                           source="cli", extra={"conf": conf} if conf else None)
        return done.run.run_id, done.paused


NOT_FOUND = ("DAG {dag_id!r} not found (see `squall dags list` and "
             "`squall dags list-import-errors`)")


NO_USABLE_DAG = ("DAG {dag_id!r} has no usable serialized DAG in the database "
                 "(see `squall dags list-import-errors`)")


def load_dag(ctx: CliContext, dag_id: str, *, only_active: bool = True,
             missing: str = NOT_FOUND) -> DAG:
    """``dag_id`` as the database has it (``serialized_dag``), parsing the DAG folder first
    when it is not there (e.g. its runs were made by `squall dags test`); ``missing``
    (formatted with ``dag_id``) is the error when it is still not there."""
    from squall.common.db import session_scope
    from squall.dag_processing.sync import load_serialized_dags

    factory = ctx.session_factory()
    with session_scope(factory) as session:
        dag = load_serialized_dags(session, [dag_id], only_active=only_active).get(dag_id)
    if dag is None:
        log.info("DAG %s is not in the database yet: parsing the DAG folder", dag_id)
        _parse_and_add(ctx)
        with session_scope(factory) as session:
            dag = load_serialized_dags(session, [dag_id],
                                       only_active=only_active).get(dag_id)
    if dag is None:
        raise CliError(missing.format(dag_id=dag_id))
    return dag


def _parse_and_add(ctx: CliContext) -> None:
    """Parse the DAG folder (in child processes) and record what it defines, deactivating
    nothing: this command's settings (``load_examples``, the folder) may differ from the
    scheduler's, whose DAG processor owns the full picture."""
    from squall.common.db import session_scope
    from squall.common.models import utcnow
    from squall.dag_processing.sync import sync_to_db

    result = _bag(ctx).parse_isolated()
    with session_scope(ctx.session_factory()) as session:
        # a DAG processor recording the same DAGs now is waited for (sync_to_db serialises)
        sync_to_db(session, result,
                   paused_at_creation=ctx.settings.core.dags_are_paused_at_creation,
                   now=utcnow())


def _get_run(session: Session, dag_id: str, run_id: str) -> DagRun:
    from sqlalchemy import select

    from squall.common.models import DagModel, DagRun

    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id,
                                              DagRun.run_id == run_id))
    if run is None:
        if session.get(DagModel, dag_id) is None:
            raise CliError(f"DAG {dag_id!r} not found (see `squall dags list`)")
        raise CliError(f"DAG {dag_id} has no run {run_id!r} "
                       f"(see `squall dags list-runs {dag_id}`)")
    return run


def dag_run_state(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope

    with session_scope(ctx.session_factory()) as session:
        run = _get_run(session, args.dag_id, args.run_id)
        print(run.state)
    return 0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def list_runs(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import DagModel, DagRun

    with session_scope(ctx.session_factory()) as session:
        if session.get(DagModel, args.dag_id) is None:
            raise CliError(f"DAG {args.dag_id!r} not found (see `squall dags list`)")
        stmt = select(DagRun).where(DagRun.dag_id == args.dag_id)
        if args.state:
            stmt = stmt.where(DagRun.state == args.state)
        runs = session.scalars(stmt.order_by(DagRun.logical_date.desc())).all()
        rows: list[dict[str, Any]] = [
            {"dag_id": r.dag_id, "run_id": r.run_id, "state": r.state,
             "run_type": r.run_type, "logical_date": _iso(r.logical_date),
             "start_date": _iso(r.start_date), "end_date": _iso(r.end_date)}
            for r in runs
        ]
    print_rows(rows, RUN_COLUMNS, args.output)
    return 0


def task_state(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import TaskInstance

    with session_scope(ctx.session_factory()) as session:
        _get_run(session, args.dag_id, args.run_id)
        row = session.execute(select(TaskInstance.state, TaskInstance.state_reason).where(
            TaskInstance.dag_id == args.dag_id, TaskInstance.run_id == args.run_id,
            TaskInstance.task_id == args.task_id,
            TaskInstance.map_index == args.map_index)).first()
        if row is None:
            raise CliError(_no_instance(session, args.dag_id, args.run_id, args.task_id,
                                        args.map_index))
    # the state alone on stdout, as Airflow prints it for scripts; why it is there (a
    # missing pool, a wait on the past, a failure) on stderr, for the person reading
    print(TaskInstanceState(row.state).value)
    if row.state_reason:
        print(f"reason: {row.state_reason}", file=sys.stderr)
    return 0


def _no_instance(session: Session, dag_id: str, run_id: str, task_id: str,
                 map_index: int) -> str:
    """Why (dag_id, task_id, run_id, map_index) is not there: no such task in the run, a
    mapped task named without --map-index, or no such instance of it."""
    from sqlalchemy import select

    from squall.common.models import TaskInstance

    indexes = sorted(session.scalars(select(TaskInstance.map_index).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
        TaskInstance.task_id == task_id)))
    see = f"(see `squall tasks states-for-dag-run {dag_id} {run_id}`)"
    if not indexes:
        return f"DagRun {dag_id} {run_id} has no task {task_id!r} {see}"
    if map_index == -1:
        return (f"Task {task_id!r} of DagRun {dag_id} {run_id} is mapped: give --map-index "
                f"(0 to {indexes[-1]}) {see}")
    return f"Task {task_id!r} of DagRun {dag_id} {run_id} has no map index {map_index} {see}"


def set_task_state(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import func, select, true

    from squall.common.db import session_scope
    from squall.common.models import DagModel, TaskInstance, utcnow
    from squall.runs.mark import apply_marks, select_marks

    new = TaskInstanceState(args.state)
    factory = ctx.session_factory()
    with session_scope(factory) as session:
        _get_run(session, args.dag_id, args.run_id)
        for index in args.map_index or [None]:
            if not session.scalar(select(func.count()).select_from(TaskInstance).where(
                    TaskInstance.dag_id == args.dag_id, TaskInstance.run_id == args.run_id,
                    TaskInstance.task_id == args.task_id,
                    TaskInstance.map_index == index if index is not None else true())):
                raise CliError(_no_instance(session, args.dag_id, args.run_id, args.task_id,
                                            -1 if index is None else index))
    dag = load_dag(ctx, args.dag_id, only_active=False, missing=NO_USABLE_DAG)
    with session_scope(factory) as session:
        try:
            selection = select_marks(session, dag, task_id=args.task_id, run_id=args.run_id,
                                     state=new, upstream=args.upstream,
                                     downstream=args.downstream, past=args.past,
                                     future=args.future, map_indexes=args.map_index)
        except TaskNotFound as exc:
            raise CliError(f"{exc} (it is no longer in the DAG)") from None
        paused = bool(session.scalar(select(DagModel.is_paused)
                                     .where(DagModel.dag_id == args.dag_id)))
    targets, to_clear = selection.targets, selection.to_clear
    if not targets and not to_clear:
        what = (f"TaskInstance {args.dag_id}.{args.task_id}[{args.run_id}]: already"
                if selection.already == 1 else
                f"Nothing to change: the {selection.already} task instance(s) selected are")
        print(f"{what} {new.value}")
        return 0
    count = len(targets) + len(to_clear)
    ask = count > 1 and not args.yes
    if ask or args.dry_run:
        if targets:
            print(f"{'Would set' if args.dry_run else 'To set'} to {new.value}:")
            for t in targets:
                print(f"  {t.key}: {t.state.value}")
        if selection.already:
            print(f"  ({selection.already} more already {new.value})")
        if to_clear:
            print(f"{'Would clear' if args.dry_run else 'To clear'} (failed downstream, "
                  "to run again):")
            for ti in to_clear:
                print(f"  {ti.key}: {ti.state}")
    if args.dry_run:
        print(f"Dry run: {len(targets)} task instance(s) would be set to {new.value} and "
              f"{len(to_clear)} cleared; nothing changed")
        return 0
    if ask:
        _confirm_marks(count, new)
    # no transaction is held while asking: each row changes only if it is still as listed
    with session_scope(factory) as session:
        result = apply_marks(session, dag, selection, now=utcnow(),
                             reason=f"set to {new.value} by `squall tasks set-state`")
        from squall.runs import audit
        audit.record_event(
            session, audit.task_mark_event(new), owner=audit.cli_owner(), dag_id=args.dag_id,
            run_id=args.run_id, task_id=args.task_id, source="cli",
            map_index=args.map_index[0] if args.map_index and len(args.map_index) == 1
            else None,
            extra={"changed": len(result.changed),
                   "cleared_downstream": len(result.cleared.cleared),
                   **{f: True for f in ("upstream", "downstream", "past", "future")
                      if getattr(args, f)}})
    for t in result.changed:
        note = (" (the running try is killed at its supervisor's next heartbeat)"
                if t.state == TaskInstanceState.RUNNING else "")
        print(f"TaskInstance {t.key}: {t.state.value} -> {new.value}{note}")
    for c in result.cleared.cleared:
        print(f"TaskInstance {c.key}: {c.old_state.value} -> {c.new_state.value} (cleared "
              "to run again)")
    for run in result.reopened:
        note = (f"; DAG {run.dag_id} is paused, so not before it is unpaused" if paused
                else "")
        print(f"DagRun {run.dag_id} {run.run_id}: {run.was.value} -> running (the scheduler "
              f"decides it again{note})")
    for dag_id, run_id in result.cleared.reactivated_runs:
        print(f"DagRun {dag_id} {run_id}: queued again (a task instance was cleared)")
    for t in result.lost:
        print(f"error: TaskInstance {t.key} changed meanwhile (it was {t.state.value} when "
              "listed); not set: look again and retry", file=sys.stderr)
    for key in result.cleared.changed:
        print(f"error: TaskInstance {key} changed meanwhile; not cleared", file=sys.stderr)
    return 1 if result.lost or result.cleared.changed else 0


def _confirm_marks(count: int, state: TaskInstanceState) -> None:
    confirm(f"Change these {count} task instances (marked {state.value})?",
            no_terminal=f"{count} task instances would change and there is no terminal to "
                        "confirm on: pass -y to change them without asking (or --dry-run to "
                        "only list)",
            cancelled="cancelled; nothing changed")


def states_for_dag_run(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import TaskInstance
    from squall.runs.backfill_progress import ended_backfill_notes

    with session_scope(ctx.session_factory()) as session:
        _get_run(session, args.dag_id, args.run_id)
        tis = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == args.dag_id, TaskInstance.run_id == args.run_id,
        ).order_by(TaskInstance.task_id, TaskInstance.map_index)).all()
        rows: list[dict[str, Any]] = [
            {"task_id": t.task_id, "map_index": t.map_index, "state": t.state,
             "try_number": t.try_number,
             "hostname": t.hostname, "start_date": _iso(t.start_date),
             "end_date": _iso(t.end_date), "reason": t.state_reason}
            for t in tis
        ]
        note = ended_backfill_notes(session, args.dag_id, [args.run_id]).get(args.run_id)
    columns, rows = with_map_index(TI_COLUMNS, rows, args.output)
    print_rows(rows, columns, args.output)
    if note is not None:  # (on stderr with -o json: the rows stay the document)
        print(f"Run {args.run_id}: {note}",
              file=sys.stderr if args.output == "json" else sys.stdout)
    return 0
