"""``squall api`` (the REST API and web UI) and ``squall users create | list | delete``."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from squall.api.roles import ROLES
from squall.cli.common import CliContext, CliError, add_output_flag, print_rows
from squall.common.console import CONSOLE
from squall.common.errors import UserError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "api", help="serve the REST API (/api/v1) and the web UI",
        description="Serves Airflow 2's stable REST API shape under /api/v1 (OpenAPI document "
        "at /api/v1/openapi.json) and the web UI at /, on [api] host and port. Every endpoint "
        "but /api/v1/health needs credentials: create users with `squall users create`.")
    p.add_argument("--host", help="address to listen on (default: [api] host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: [api] port, 8080)")
    p.add_argument("--workers", type=int,
                   help="server processes (default: [api] workers, 1; one uses one core)")
    p.set_defaults(func=run_api, service=True, quiet_console=True)

    users = sub.add_parser("users", help="create, list and delete the API's users")
    usub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    p = usub.add_parser(
        "create", help="create a user",
        description="Roles: viewer reads; op also triggers, clears, marks and pauses; admin "
        "also manages users and pools. The password is asked for when not given (and never "
        "logged); it is stored as a salted scrypt hash.")
    p.add_argument("--username", "-u", required=True)
    p.add_argument("--role", "-r", required=True, choices=ROLES)
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password", "-p",
                        help="the password (asked for when not given); on the command line "
                        "it is visible to other users of this host (ps): prefer "
                        "--password-stdin in scripts")
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input (its first line)")
    p.set_defaults(func=create)
    p = usub.add_parser("list", help="the users and their roles")
    add_output_flag(p)
    p.set_defaults(func=list_users)
    p = usub.add_parser("delete", help="delete a user")
    p.add_argument("--username", "-u", required=True)
    p.set_defaults(func=delete)


def run_api(ctx: CliContext, args: argparse.Namespace) -> int:
    import uvicorn

    from squall.api.app import create_app

    settings = ctx.settings
    host = args.host or settings.api.host
    port = args.port or settings.api.port
    if not 1 <= port <= 65535:
        raise CliError(f"--port {port}: not a port number")
    workers = args.workers or settings.api.workers
    if workers < 1:
        raise CliError(f"--workers {workers}: at least 1")
    # uvicorn's own start-up lines are detail on a quiet console (ours says where it serves)
    level = settings.logging.logging_level.lower()
    if ctx.quiet_console and level == "info":
        level = "warning"
    log.info("api: serving on http://%s:%d/ (API under /api/v1, %d process(es))", host, port,
             workers, extra=CONSOLE)
    if workers == 1:
        uvicorn.run(create_app(settings, ctx.session_factory()), host=host, port=port,
                    log_level=level, access_log=False)
        return 0
    if args.config:  # the server processes load the settings themselves
        os.environ["SQUALL_CONFIG"] = str(args.config)
    settings.secret_key()  # made once here, not raced by the processes
    uvicorn.run("squall.api.app:app_from_settings", factory=True, host=host, port=port,
                workers=workers, log_level=level, access_log=False)
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CliError("--password-stdin: standard input held no password; nothing created")
        return line
    if not sys.stdin.isatty():
        raise CliError("--password is required when there is no terminal to ask on")
    first = getpass.getpass(f"Password for {args.username}: ")
    if getpass.getpass("Repeat it: ") != first:
        raise CliError("the passwords differ; nothing created")
    return first


def create(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.api.users import create_user
    from squall.common.db import session_scope

    password = _password(args)
    with session_scope(ctx.session_factory()) as session:
        try:
            create_user(session, args.username, args.role, password)
        except UserError as exc:
            raise CliError(str(exc)) from None
    print(f"User {args.username} created ({args.role})")
    return 0


def list_users(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import User

    with session_scope(ctx.session_factory()) as session:
        rows = [{"username": u.username, "role": u.role,
                 "created_at": u.created_at.isoformat(),
                 "last_login": u.last_login.isoformat() if u.last_login else None}
                for u in session.scalars(select(User).order_by(User.username))]
    print_rows(rows, ["username", "role", "created_at", "last_login"], args.output)
    return 0


def delete(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.api.users import delete_user
    from squall.common.db import session_scope

    with session_scope(ctx.session_factory()) as session:
        try:
            delete_user(session, args.username)
        except UserError as exc:
            raise CliError(str(exc)) from None
    print(f"User {args.username} deleted")
    return 0
