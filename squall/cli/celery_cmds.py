"""``squall celery worker`` and ``squall celery flower``."""

from __future__ import annotations

import argparse
import logging
import os
import warnings

from squall.cli.common import CliContext, CliError
from squall.common.console import CONSOLE

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FLOWER_API_ENV = "FLOWER_UNAUTHENTICATED_API"


def register(sub: argparse._SubParsersAction) -> None:
    celery = sub.add_parser("celery", help="run a Celery worker, or Flower to watch workers")
    csub = celery.add_subparsers(dest="celery_command", required=True, metavar="COMMAND")

    p = csub.add_parser(
        "worker", help="consume task-run commands from queues and run them",
        description="Starts a Celery worker (prefork pool, task events on) on [celery] "
        "broker_url. For each command it forks a LocalTaskJob supervisor that runs the task "
        "in a child process and records its state in the metadata database. Same as "
        "`celery -A squall.worker worker -Q QUEUES -c N -n NAME -E`.")
    p.add_argument("-q", "--queues",
                   help="queues to consume, comma-separated (default: [celery] default_queue)")
    p.add_argument("-c", "--concurrency", type=int, metavar="N",
                   help="task slots: pool processes (default: [celery] worker_concurrency)")
    p.add_argument("-n", "--name", metavar="NODENAME",
                   help="the worker's node name, e.g. w1@%%h (%%h: this host's name; "
                   "default: celery@%%h). Recorded as the task instances' hostname")
    p.add_argument("--loglevel", type=str.upper, choices=LOG_LEVELS,
                   help="log level (default: [logging] logging_level)")
    p.set_defaults(func=run_worker, service=True, quiet_console=True)

    p = csub.add_parser(
        "flower", help="start Flower, the Celery monitoring web UI, on the same broker",
        description=f"Starts Flower in the foreground on [celery] broker_url. Unless Flower "
        f"authentication is configured (FLOWER_BASIC_AUTH, FLOWER_AUTH) or {FLOWER_API_ENV} "
        f"is set, sets {FLOWER_API_ENV}=true for its process so that its HTTP API "
        "(/api/workers, /api/tasks, ...) answers without authentication: bind it to a "
        "trusted address.")
    p.add_argument("--port", type=int, default=5555, help="HTTP port (default: 5555)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--require-auth", action="store_true",
                   help="refuse to start unless FLOWER_BASIC_AUTH or FLOWER_AUTH is set "
                   "(docker-compose.yml's Flower: its profile is the only one that needs it)")
    p.set_defaults(func=run_flower, service=True)


def run_worker(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.worker import build_worker_app

    settings = ctx.settings
    queues = args.queues or settings.celery.default_queue
    names = [q.strip() for q in queues.split(",")]
    if not all(names):
        raise CliError(f"--queues {queues!r}: expected comma-separated queue names")
    concurrency = args.concurrency or settings.celery.worker_concurrency
    if concurrency < 1:
        raise CliError(f"--concurrency {concurrency}: must be at least 1")
    # Refuse a database at the wrong schema now rather than on every task; the engine is
    # disposed of before the pool forks.
    ctx.session_factory(auto_migrate=False)
    ctx.engine.dispose()

    app = build_worker_app(settings)
    argv = ["worker", f"--queues={','.join(names)}", f"--concurrency={concurrency}",
            "--task-events", f"--loglevel={args.loglevel or settings.logging.logging_level}"]
    if args.name:
        argv.append(f"--hostname={args.name}")
    if ctx.quiet_console:
        # Celery's banner, and its warning that a worker runs as root (every container):
        # detail, shown with -v (ADR 34); tasks are JSON, never pickle, so it is harmless
        from celery.exceptions import SecurityWarning

        argv.insert(0, "--quiet")
        warnings.filterwarnings("ignore", category=SecurityWarning)
    log.info("Worker: starting on queues %s with %d process(es)", ",".join(names), concurrency,
             extra=CONSOLE)
    from squall.worker.log_server import start_log_server
    from squall.worker.worker_job import WorkerJob, worker_node_name

    log_server = start_log_server(settings)
    worker_job = WorkerJob(settings, worker_node_name(args.name)).start()
    try:
        return int(app.start(argv) or 0)
    finally:
        worker_job.stop()
        if log_server is not None:
            log_server.stop()


def run_flower(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.celery_app import create_celery_app
    from squall.worker import register_tasks

    authenticated = bool(os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH"))
    if args.require_auth and not authenticated:
        raise CliError("--require-auth: Flower's authentication is not set; set "
                       "FLOWER_BASIC_AUTH to user:password (docker-compose: in .env) or "
                       "FLOWER_AUTH")
    try:
        import flower  # noqa: F401
    except ImportError:
        raise CliError("Flower is not installed (pip install flower)") from None
    if not authenticated:
        os.environ.setdefault(FLOWER_API_ENV, "true")
    else:
        _protect_flower_metrics()
    # Flower's task API (/api/task/apply/...) looks the task up in its app
    app = register_tasks(create_celery_app(ctx.settings))
    log.info("Flower: starting on http://%s:%d", args.address, args.port, extra=CONSOLE)
    return int(app.start(["flower", f"--port={args.port}", f"--address={args.address}"]) or 0)


def _protect_flower_metrics() -> None:
    """Make Flower's ``/metrics`` ask for the same authentication as its pages.

    Flower 2.2 serves its Prometheus metrics (worker names, task names and counts) to
    anyone, even with ``FLOWER_BASIC_AUTH`` set. Its handler table is a module-level list that
    its application reads when it starts: the entry is replaced, in place, by a subclass whose
    ``get`` needs a logged-in user (a Basic-auth header, or Flower's OAuth cookie)."""
    import tornado.web
    from flower import urls
    from flower.views.monitor import Metrics

    class AuthenticatedMetrics(Metrics):
        @tornado.web.authenticated
        async def get(self) -> None:
            await super().get()

    for index, handler in enumerate(urls.handlers):
        if isinstance(handler, tuple) and handler[0] == r"/metrics":
            urls.handlers[index] = (r"/metrics", AuthenticatedMetrics, *handler[2:])
            return
    raise CliError("this Flower has no /metrics route to protect; "
                   "check the installed Flower version (2.2 is tested)")
