"""``squall db migrate | reset | check``."""

from __future__ import annotations

import argparse
import logging
import sys

from squall.cli.common import CliContext, CliError, ask_yes

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="manage the metadata database",
                        description="Create, upgrade, reset or check the metadata database.")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    p = dbsub.add_parser("migrate", help="create or upgrade the schema to this version")
    p.set_defaults(func=migrate)
    p = dbsub.add_parser("reset", help="drop every Squall table and create the schema anew")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=reset)
    p = dbsub.add_parser("check", help="check that the database is reachable and up to date")
    p.set_defaults(func=check)


def migrate(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common import dbops

    ctx.ensure_home()
    before = dbops.current_revision(ctx.engine)
    dbops.migrate(ctx.engine, default_pool_slots=ctx.settings.core.default_pool_task_slot_count)
    after = dbops.current_revision(ctx.engine)
    print(f"Database {_where(ctx)}: schema revision {before or 'none'} -> {after}")
    return 0


def reset(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common import dbops

    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("db reset deletes every DAG run and task instance: pass --yes")
        if not ask_yes(f"Delete all Squall data in {_where(ctx)}?"):
            print("Cancelled.")
            return 1
    ctx.ensure_home()
    dbops.reset(ctx.engine, default_pool_slots=ctx.settings.core.default_pool_task_slot_count)
    print(f"Database {_where(ctx)} reset to revision {dbops.current_revision(ctx.engine)}")
    return 0


def check(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common import dbops

    problems = dbops.check(ctx.engine)
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 1
    print(f"Database {_where(ctx)} is reachable and at revision "
          f"{dbops.current_revision(ctx.engine)}")
    return 0


def _where(ctx: CliContext) -> str:
    return ctx.engine.url.render_as_string(hide_password=True)
