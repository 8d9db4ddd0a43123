"""The worker side: the Celery task, the LocalTaskJob supervisor, the task process.

``celery -A squall.worker worker -Q default,etl`` finds its app here: the module attribute
``app`` is built on first access (settings loaded from the environment then, never at import),
with the same hooks ``squall celery worker`` installs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from squall.common.settings import Settings

_app: Celery | None = None


def register_tasks(app: Celery) -> Celery:
    """Register Squall's one task, :func:`~squall.worker.tasks.run_task`, on ``app`` as
    :data:`~squall.common.celery_app.RUN_TASK_NAME`; returns ``app``.

    No result is stored when a try ends normally (the database holds its outcome, and the
    scheduler stops tracking a try once the database says it is over); a failure Celery
    sees (a pool process that died, a hard time limit, an exception out of the task) is
    still stored (``store_errors_even_if_ignored``): the scheduler reads it to fail or retry
    a try that was still QUEUED (ADR 22)."""
    from squall.common.celery_app import RUN_TASK_NAME
    from squall.worker.tasks import run_task

    app.task(name=RUN_TASK_NAME, bind=True, acks_late=True, ignore_result=True,
             store_errors_even_if_ignored=True)(run_task)
    return app


def build_worker_app(settings: Settings) -> Celery:
    """The Celery app a worker runs: Squall's app with its task registered, its
    :class:`~squall.worker.tasks.WorkerRuntime` (``app.squall_runtime``), the worker
    process hooks, and for a ``redis://`` broker a transport that drops undecodable messages
    instead of stopping (:class:`~squall.common.transports.redis_guard.RedisTransport`)."""
    from squall.common.celery_app import broker_url, create_celery_app
    from squall.common.transports import REDIS_TRANSPORT
    from squall.worker.tasks import WorkerRuntime, install_worker_hooks

    app = register_tasks(create_celery_app(settings))
    # the worker's one runtime (its try launcher, chosen now): where the task and the
    # worker signal handlers find it
    app.squall_runtime = WorkerRuntime(settings)
    if broker_url(settings).startswith("redis://"):
        app.conf.broker_transport = REDIS_TRANSPORT
    install_worker_hooks()
    return app


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            from squall.common.settings import Settings

            _app = build_worker_app(Settings.load())
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
