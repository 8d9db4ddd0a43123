"""The ``squall`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from squall.cli import (
    api_cmds,
    backfill_cmds,
    celery_cmds,
    clear_cmds,
    config_cmds,
    connections_cmds,
    dags_cmds,
    datasets_cmds,
    db_cmds,
    jobs_cmds,
    plugins_cmds,
    pools_cmds,
    runs_cmds,
    scheduler_cmds,
    standalone_cmds,
    triggerer_cmds,
    variables_cmds,
    worker_cmds,
)
from squall.cli.common import CliContext, CliError
from squall.common.console import make_quiet, pass_on
from squall.common.errors import SettingsError, SquallError
from squall.secrets.masking import RedactingFilter

if TYPE_CHECKING:
    from squall.common.settings import Settings

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="squall",
        description="Squall: a distributed, Celery-based workflow executor. Settings come "
        "from defaults, $SQUALL_HOME/squall.toml (or $SQUALL_CONFIG) and SQUALL__SECTION__KEY "
        "environment variables; $SQUALL_HOME defaults to ~/squall.",
    )
    parser.add_argument("--config", help="a squall.toml settings file to use")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db_cmds.register(sub)
    dags_cmds.register(sub)
    dags_cmds.register_tasks(sub)
    worker_cmds.register(sub)
    celery_cmds.register(sub)
    runs_cmds.register(sub)
    backfill_cmds.register(sub)
    backfill_cmds.register_backfills(sub)
    clear_cmds.register(sub)
    scheduler_cmds.register(sub)
    triggerer_cmds.register(sub)
    config_cmds.register(sub)
    pools_cmds.register(sub)
    plugins_cmds.register(sub)
    standalone_cmds.register(sub)
    api_cmds.register(sub)
    jobs_cmds.register(sub)
    variables_cmds.register(sub)
    connections_cmds.register(sub)
    datasets_cmds.register(sub)
    p = sub.add_parser("version", help="print Squall's version")
    p.set_defaults(func=_print_version)
    _describe_subcommands(parser)
    return parser


def _describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Use each subcommand's one-line help as its ``--help`` description when it has none."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, child in action.choices.items():
            if child.description is None:
                child.description = helps.get(name)
            _describe_subcommands(child)


def _print_version(ctx: CliContext, args: argparse.Namespace) -> int:
    print(_version())
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("squall")
    except PackageNotFoundError:
        return "unknown"


def log_level(configured: str, *, verbose: bool, service: bool) -> str:
    """``-v``: DEBUG. The services (scheduler, worker, Flower, standalone, a task's raw run,
    ``dags test`` / ``tasks test``) log at ``[logging] logging_level``; a one-shot command
    prints its result and stays quiet below WARNING unless asked (``-v``)."""
    if verbose:
        return "DEBUG"
    if service:
        return configured
    return configured if logging.getLevelName(configured) >= logging.WARNING else "WARNING"


def quiet_console(args: argparse.Namespace, settings: Settings, level: str) -> bool:
    """Whether a service's console shows only what a person needs there (ADR 34): the
    services that ask for it (``quiet_console``), unless ``[logging] quiet_console`` is
    false or ``-v`` (or a DEBUG logging level) asks for the detail."""
    return (bool(getattr(args, "quiet_console", False)) and settings.logging.quiet_console
            and level != "DEBUG")


def configure_logging(level: str, *, quiet: bool = False) -> None:
    """A console handler on standard error; ``quiet``: it shows only warnings, errors and
    the records meant for the console, and no try's records (:mod:`squall.common.console`)."""
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
    )
    for handler in root.handlers:  # secrets a task read never reach stderr
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if quiet and handler not in before:
            make_quiet(handler)
    if root.handlers != before:  # our console (not a host's, such as a test runner's)
        pass_on(quiet)
    if level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # imported once the command is known: `squall --help` needs neither (issue 26)
    from squall.common.settings import Settings
    from squall.secrets import backend as secrets_backend

    try:
        settings = Settings.load(config_file=args.config)
    except SettingsError as exc:
        print(f"squall: {exc}", file=sys.stderr)
        return 2
    level = log_level(settings.logging.logging_level, verbose=args.verbose,
                      service=getattr(args, "service", False))
    quiet = quiet_console(args, settings, level)
    configure_logging(level, quiet=quiet)
    ctx = CliContext(settings=settings, quiet_console=quiet)
    try:
        # Variable.get / BaseHook.get_connection in DAG files and tasks read through it
        secrets_backend.configure(secrets_backend.from_settings(settings))
        code = int(args.func(ctx, args) or 0)
        sys.stdout.flush()  # here, where a closed pipe can still be answered quietly
        return code
    except CliError as exc:
        print(f"squall: {exc}", file=sys.stderr)
        return 1
    except SquallError as exc:
        print(f"squall: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("squall: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # another pipe or socket: a real error, with its traceback
        return 128 + signal.SIGPIPE


def _stdout_closed() -> bool:
    """Whether the reader of our standard output went away (``squall dags report -o json |
    head``). If so, the command stops quietly, as one killed by SIGPIPE would, with no
    traceback: standard output is pointed at /dev/null so the interpreter's last flush at
    exit does not fail again."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = dict(poller.poll(0)).get(fd, 0)
    except (OSError, ValueError):
        return False
    if not events & select.POLLERR:
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return True


if __name__ == "__main__":
    sys.exit(main())
