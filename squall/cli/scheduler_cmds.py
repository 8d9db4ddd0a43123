"""``squall scheduler``: run the scheduler loop (with its DAG processor) until SIGTERM / Ctrl-C."""

from __future__ import annotations

import argparse
import logging

from squall.cli.common import CliContext, CliError
from squall.common.console import CONSOLE

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scheduler", help="run the scheduler: create runs, queue ready tasks on Celery",
        description="Runs the scheduler loop: creates the due DAG runs, decides which task "
        "instances are ready, queues them on their Celery queues within pool and concurrency "
        "limits, and reacts to tasks that died before starting. A DAG processor child "
        "process watches [core] dags_folder and parses a new, changed or removed DAG file "
        "within seconds ([scheduler] dag_dir_watch; [scheduler] dag_dir_poll_interval where "
        "it cannot watch), every file again every [scheduler] min_file_process_interval "
        "seconds, and lists the whole folder every [scheduler] dag_dir_list_interval seconds "
        "(`squall dags report` shows each file's last parse). Stops cleanly on SIGTERM or "
        "Ctrl-C. Several schedulers may run at once on PostgreSQL.")
    p.add_argument("-n", "--num-runs", type=int, default=None, metavar="N",
                   help="stop after N loops (default: run until stopped)")
    p.add_argument("--no-dag-processor", action="store_true",
                   help="do not parse DAG files here (another process keeps them synced)")
    p.set_defaults(func=run_scheduler, service=True, quiet_console=True)


def _hide_password(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def run_scheduler(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.celery_app import create_celery_app
    from squall.common.metrics import metrics_from_settings
    from squall.common.wakeup import waker_for
    from squall.scheduler.dag_processor import DagProcessor
    from squall.scheduler.executor import CeleryExecutor
    from squall.scheduler.job import SchedulerJob

    if args.num_runs is not None and args.num_runs < 1:
        raise CliError("--num-runs must be at least 1")
    settings = ctx.settings
    factory = ctx.session_factory()
    app = create_celery_app(settings)
    log.info("scheduler: database %s, broker %s, result backend %s, DAG folder %s",
             ctx.engine.url.render_as_string(hide_password=True),
             _hide_password(str(app.conf.broker_url)),
             _hide_password(str(app.conf.result_backend)), settings.dags_folder, extra=CONSOLE)
    metrics = metrics_from_settings(settings)
    executor = CeleryExecutor.from_settings(app, settings, metrics)
    processor = None if args.no_dag_processor else DagProcessor(settings)
    job = SchedulerJob(settings, factory, executor, dag_processor=processor, metrics=metrics,
                       waker=waker_for(ctx.engine))
    job.run(num_runs=args.num_runs)
    return 0
