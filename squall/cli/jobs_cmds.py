"""``squall jobs check``: is a scheduler (or a worker, or a triggerer) alive? For health
checks."""

from __future__ import annotations

import argparse
import logging
import socket

from squall.cli.common import CliContext, CliError

log = logging.getLogger(__name__)

JOB_KINDS = ("scheduler", "worker", "triggerer")


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="check the processes that heartbeat (health checks)")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    p = jsub.add_parser(
        "check", help="exit 0 when a job of a type is alive, else 1",
        description="Looks for running jobs of a type (a scheduler's job row, a Celery "
        "worker's or a triggerer's) whose latest heartbeat is within [scheduler] "
        "scheduler_health_check_threshold seconds ([triggerer] "
        "triggerer_health_check_threshold for a triggerer), newest first. Prints 'Found one alive "
        "job.' or 'Found N alive jobs.' and exits 0; exits 1 when none is alive, or when "
        "more than one is and --allow-multiple is not given. Meant for health checks, as "
        "`airflow jobs check`.")
    p.add_argument("--job-type", required=True, choices=JOB_KINDS,
                   help="the kind of process to look for")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--hostname", metavar="H",
                       help="only jobs recorded with this hostname (a worker's node name such "
                       "as w1@host, or for workers the host part alone)")
    where.add_argument("--local", action="store_true",
                       help="only jobs of this machine (its fully qualified name or host "
                       "name; for a worker, the part of its node name after '@')")
    p.add_argument("--limit", type=int, default=1, metavar="N",
                   help="look at no more than N alive jobs, 0 for all (default: 1)")
    p.add_argument("--allow-multiple", action="store_true",
                   help="succeed when more than one job is alive (needs --limit other than 1)")
    p.set_defaults(func=run_check)


def run_check(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from squall.common.db import session_scope
    from squall.common.models import utcnow
    from squall.runs.jobs import SCHEDULER_JOB_TYPE, TRIGGERER_JOB_TYPE, alive_job_hostnames

    if args.limit < 0:
        raise CliError(f"--limit {args.limit}: must be 0 (no limit) or more")
    if args.allow_multiple and args.limit == 1:
        raise CliError("--allow-multiple needs --limit above 1 (or 0, no limit)")
    # imported here: the other commands do not need the worker's modules
    from squall.worker.worker_job import JOB_TYPE as WORKER_JOB

    worker = args.job_type == "worker"
    job_type = {"worker": WORKER_JOB, "triggerer": TRIGGERER_JOB_TYPE}.get(
        args.job_type, SCHEDULER_JOB_TYPE)
    threshold = ctx.settings.scheduler.scheduler_health_check_threshold
    if args.job_type == "triggerer":
        threshold = ctx.settings.triggerer.triggerer_health_check_threshold
    hosts: set[str] | None = None
    if args.hostname:
        hosts = {args.hostname}
    elif args.local:
        hosts = {socket.getfqdn(), socket.gethostname()}
    try:
        factory = ctx.session_factory(auto_migrate=False)
        with session_scope(factory) as session:
            names = alive_job_hostnames(session, job_type, now=utcnow(), threshold=threshold)
    except SQLAlchemyError as exc:
        lines = str(exc).strip().splitlines()
        raise CliError(f"cannot read the jobs: {lines[0] if lines else type(exc).__name__}"
                       ) from None
    alive = [name for name in names
             if hosts is None or _on_host(name, hosts, worker=worker)]
    if args.limit:
        alive = alive[:args.limit]
    log.debug("jobs check: %d alive %s job(s) within %.0f s", len(alive), job_type, threshold)
    if not alive:
        raise CliError("No alive jobs found.")
    if len(alive) > 1 and not args.allow_multiple:
        raise CliError(f"Found {len(alive)} alive jobs. Expected only one.")
    print("Found one alive job." if len(alive) == 1 else f"Found {len(alive)} alive jobs.")
    return 0


def _on_host(recorded: str | None, hosts: set[str], *, worker: bool) -> bool:
    if recorded is None:
        return False
    if recorded in hosts:
        return True
    return worker and recorded.partition("@")[2] in hosts
