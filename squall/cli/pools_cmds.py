"""``squall pools list | get | set | delete | import | export`` (Airflow 2's ``airflow pools``).

The database work is :mod:`squall.runs.pools`; this module parses arguments and files and
prints. Every change is one transaction: a bad import changes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from squall.cli.common import CliContext, CliError, add_output_flag, print_rows
from squall.common.errors import PoolError

log = logging.getLogger(__name__)

POOL_COLUMNS = ["pool", "slots", "description", "running_slots", "queued_slots", "open_slots"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "pools", help="list, create, change, delete, import and export pools",
        description="A pool caps how many slots its QUEUED and RUNNING task instances hold "
        "(a task's `pool` and `pool_slots`); -1 slots is unlimited. A task whose pool does not "
        "exist waits in SCHEDULED until the pool is created.")
    psub = parser.add_subparsers(dest="pools_command", required=True, metavar="COMMAND")

    p = psub.add_parser("list", help="every pool with its slots and what is in use")
    add_output_flag(p)
    p.set_defaults(func=list_cmd)

    p = psub.add_parser("get", help="one pool with its slots and what is in use")
    p.add_argument("name")
    add_output_flag(p)
    p.set_defaults(func=get_cmd)

    p = psub.add_parser("set", help="create a pool or change its slots and description")
    p.add_argument("name")
    p.add_argument("slots", type=_slots, help="0 or more, or -1 for unlimited")
    p.add_argument("description", nargs="?", help="(kept as it is when not given)")
    add_output_flag(p)
    p.set_defaults(func=set_cmd)

    p = psub.add_parser("delete", help="delete a pool (not default_pool)")
    p.add_argument("name")
    add_output_flag(p)
    p.set_defaults(func=delete_cmd)

    p = psub.add_parser(
        "import", help="create or update the pools of a JSON file",
        description='Reads {"NAME": {"slots": N, "description": "..."}, ...} (what `squall '
        'pools export` and `airflow pools export` write) and creates or updates each pool, '
        "all in one transaction: a file with any problem changes nothing.")
    p.add_argument("file", type=Path)
    add_output_flag(p)
    p.set_defaults(func=import_cmd)

    p = psub.add_parser("export", help="write every pool to a JSON file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=export_cmd)


def _slots(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"slots must be an integer, not {value!r}") from None


def _print_pools(ctx: CliContext, names: list[str] | None, output: str) -> None:
    from squall.common.db import session_scope
    from squall.runs import pools

    with session_scope(ctx.session_factory()) as session:
        usages = pools.list_pools(session)
    rows = [u.as_row() for u in usages if names is None or u.name in names]
    print_rows(rows, POOL_COLUMNS, output)


def list_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    _print_pools(ctx, None, args.output)
    return 0


def get_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.runs import pools

    try:
        with session_scope(ctx.session_factory()) as session:
            usage = pools.get_pool(session, args.name)
    except PoolError as exc:
        raise CliError(str(exc)) from None
    print_rows([usage.as_row()], POOL_COLUMNS, args.output)
    return 0


def set_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from squall.common.db import session_scope
    from squall.common.wakeup import notify_scheduler
    from squall.runs import pools

    try:
        with session_scope(ctx.session_factory()) as session:
            from squall.runs import audit
            created = pools.set_pool(session, args.name, args.slots, args.description)
            notify_scheduler(session, f"pool {args.name}")
            audit.record_event(session, audit.POOL_CREATE if created else audit.POOL_EDIT,
                               owner=audit.cli_owner(), source="cli",
                               extra={"pool": args.name, "slots": args.slots})
    except PoolError as exc:
        raise CliError(str(exc)) from None
    except IntegrityError:
        raise CliError(f"pool {args.name!r} was created by someone else meanwhile; look "
                       "again (`squall pools get`) and retry") from None
    _print_pools(ctx, [args.name], args.output)
    return 0


def delete_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.runs import pools

    try:
        with session_scope(ctx.session_factory()) as session:
            usage = pools.get_pool(session, args.name)
            pools.delete_pool(session, args.name)
            from squall.runs import audit
            audit.record_event(session, audit.POOL_DELETE, owner=audit.cli_owner(),
                               source="cli", extra={"pool": args.name})
    except PoolError as exc:
        raise CliError(str(exc)) from None
    print_rows([usage.as_row()], POOL_COLUMNS, args.output)
    return 0


def import_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from squall.common.db import session_scope
    from squall.common.wakeup import notify_scheduler
    from squall.runs import pools

    path: Path = args.file
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from None
    try:
        with session_scope(ctx.session_factory()) as session:
            names = pools.import_pools(session, document)
            notify_scheduler(session, "pools imported")
            from squall.runs import audit
            audit.record_event(session, audit.POOL_EDIT, owner=audit.cli_owner(), source="cli",
                               extra={"imported": names, "file": str(path)})
    except PoolError as exc:
        raise CliError(f"{path}: {exc}; nothing was imported") from None
    except IntegrityError:
        raise CliError(f"{path}: a pool of it was created by someone else meanwhile; "
                       "nothing was imported, retry") from None
    if args.output == "json":
        _print_pools(ctx, names, args.output)
    else:
        print(f"Uploaded {len(names)} pool(s) from {path}")
    return 0


def export_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.runs import pools

    path: Path = args.file
    with session_scope(ctx.session_factory()) as session:
        document = pools.export_pools(session)
    try:
        path.write_text(json.dumps(document, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"Exported {len(document)} pool(s) to {path}")
    return 0
