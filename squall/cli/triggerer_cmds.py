"""``squall triggerer``: run the triggers of deferred task instances until SIGTERM / Ctrl-C."""

from __future__ import annotations

import argparse
import logging

from squall.cli.common import CliContext, CliError
from squall.common.console import CONSOLE

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "triggerer", help="run the triggers of deferred tasks (deferrable operators and "
        "async sensors)",
        description="Runs the triggers of deferred task instances (a task that called "
        "self.defer(trigger=...) waits here without a worker slot) on one asyncio event "
        "loop. Every [triggerer] job_heartbeat_sec it heartbeats its job row, renews the "
        "lease of the triggers it holds and claims free ones up to --capacity; when a "
        "trigger fires, its task instance is scheduled again (in the same transaction that "
        "deletes the trigger) and resumes on a worker with the event. A trigger that "
        "raises, or ends without an event, fails its task instance; one that blocks the "
        "event loop is reported by name. Several triggerers may run at once (PostgreSQL): "
        "each trigger is held by one at a time, and the triggers of one that died are taken "
        "over within [triggerer] triggerer_health_check_threshold seconds; one that cannot "
        "reach the database stops its triggers itself before then. `squall jobs check "
        "--job-type triggerer` tells whether one is alive. Stops cleanly on SIGTERM or "
        "Ctrl-C, handing its triggers back at once.")
    p.add_argument("--capacity", type=int, default=None, metavar="N",
                   help="the most triggers to run at once (default: [triggerer] "
                   "default_capacity, 1000)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log at DEBUG level")
    p.set_defaults(func=run_triggerer, service=True, quiet_console=True)


def run_triggerer(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.metrics import metrics_from_settings
    from squall.triggerer.job import TriggererJob

    if args.capacity is not None and args.capacity < 1:
        raise CliError(f"--capacity {args.capacity}: must be at least 1")
    factory = ctx.session_factory()
    log.info("triggerer: database %s", ctx.engine.url.render_as_string(hide_password=True),
             extra=CONSOLE)
    job = TriggererJob(ctx.settings, factory, capacity=args.capacity,
                       metrics=metrics_from_settings(ctx.settings))
    if not job.run():
        raise CliError("the triggerer's event loop died (see the log above)")
    return 0
