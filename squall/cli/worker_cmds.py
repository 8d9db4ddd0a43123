"""``squall tasks logs`` and the internal ``squall tasks run ... --raw`` (the task process in a
new interpreter, started by a worker's supervisor)."""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from squall.cli.common import CliContext, CliError

if TYPE_CHECKING:
    from squall.common.models import TaskInstanceKey

log = logging.getLogger(__name__)

_ATTEMPT = re.compile(r"attempt=(\d+)\.log")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``logs`` and ``run`` to the ``tasks`` command (created if it is not there yet)."""
    tasks = sub.choices.get("tasks")
    if tasks is None:
        tasks = sub.add_parser("tasks", help="run or inspect single tasks")
        tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")
    tsub = next(a for a in tasks._actions if isinstance(a, argparse._SubParsersAction))

    p = tsub.add_parser(
        "logs", help="print the log of one try of a task instance",
        description="Prints the log file a worker wrote for try N of the task instance "
        "(DAG_ID, TASK_ID, RUN_ID), from [logging] base_log_folder. Without --try, the "
        "latest try that has a log.")
    p.add_argument("dag_id")
    p.add_argument("task_id")
    p.add_argument("run_id")
    p.add_argument("--try", dest="try_number", type=int, metavar="N",
                   help="the try number (default: the latest one with a log)")
    p.add_argument("--map-index", type=int, default=-1,
                   help="the instance of a mapped task (-1: not mapped)")
    p.set_defaults(func=print_task_log)

    # Internal, so not listed in `squall tasks --help` (no help=).
    p = tsub.add_parser(
        "run", description="Internal: the task process of a worker's supervisor in a new "
        "interpreter ([core] execute_tasks_new_python_interpreter). Runs try N of a task "
        "instance that the supervisor's job J has moved to running; does nothing otherwise.")
    p.add_argument("dag_id")
    p.add_argument("task_id")
    p.add_argument("run_id")
    p.add_argument("--try", dest="try_number", type=int, required=True, metavar="N")
    p.add_argument("--map-index", type=int, default=-1,
                   help="the instance of a mapped task (-1: not mapped)")
    p.add_argument("--job-id", type=int, required=True, metavar="J")
    p.add_argument("--dag-file", required=True,
                   help="the DAG file as the task-run command names it (DAGS_FOLDER/...)")
    p.add_argument("--hostname", help="the worker's node name (default: this host's name)")
    p.add_argument("--status-fd", type=int, metavar="FD",
                   help="a pipe to the supervisor, told when the outcome is being recorded")
    p.add_argument("--raw", action="store_true",
                   help="run the task in this process (the only mode there is)")
    p.set_defaults(func=run_raw, service=True, quiet_console=True)


def _key(args: argparse.Namespace) -> TaskInstanceKey:
    from squall.common.models import TaskInstanceKey

    for name in ("dag_id", "task_id", "run_id"):
        value = getattr(args, name)
        if not value or "/" in value or "\x00" in value or value in (".", ".."):
            raise CliError(f"{name} {value!r} is not a valid identifier")
    if args.map_index < -1:
        raise CliError(f"--map-index {args.map_index} is not a map index (-1, 0, 1, ...)")
    return TaskInstanceKey(args.dag_id, args.task_id, args.run_id, args.map_index)


def print_task_log(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.execution.runner import task_log_path

    key = _key(args)
    folder = task_log_path(ctx.settings.log_folder, key, 1).parent
    tries = sorted(int(m.group(1)) for p in (folder.glob("attempt=*.log")
                                             if folder.is_dir() else [])
                   if (m := _ATTEMPT.fullmatch(p.name)))
    if args.try_number is None:
        if not tries:
            raise CliError(f"no log for task instance {key}: nothing in {folder}")
        try_number = tries[-1]
    else:
        try_number = args.try_number
    path: Path = task_log_path(ctx.settings.log_folder, key, try_number)
    if not path.is_file():
        known = f" (tries with a log: {', '.join(map(str, tries))})" if tries else ""
        raise CliError(f"no log for try {try_number} of task instance {key}: {path} does not "
                       f"exist{known}")
    sys.stdout.flush()
    with path.open("rb") as handle:
        shutil.copyfileobj(handle, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def run_raw(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.worker.task_process import TaskProcessSpec, run_task_process

    if not args.raw:
        raise CliError("`squall tasks run` is internal and needs --raw; task instances are run "
                       "by workers (`squall tasks test` runs one here)")
    spec = TaskProcessSpec(key=_key(args), try_number=args.try_number, job_id=args.job_id,
                           dag_file=args.dag_file,
                           hostname=args.hostname or socket.gethostname(),
                           status_fd=args.status_fd)
    return run_task_process(ctx.settings, spec)
