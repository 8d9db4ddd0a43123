"""The one Celery configuration: broker, result backend, queues, acks, events, from settings.

Nothing is built at import time. Each entry point (scheduler, worker, flower, CLI) calls
:func:`create_celery_app` with its :class:`Settings`; the settings ride along on the app as
``app.squall_settings`` so the worker's task code can reach them. The app registers no task:
the scheduler sends :data:`RUN_TASK_NAME` by name, and the worker's app builder
(:func:`squall.worker.build_worker_app`) registers the task itself.

Without ``[celery] broker_url`` the broker is embedded (ADR 0006): kombu's filesystem
transport in ``$SQUALL_HOME/celery_broker/``, through
:class:`~squall.common.transports.embedded.EmbeddedBrokerTransport` (publish and claim by atomic
rename, a 0.1 s polling interval).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery

from squall.common.db import normalise_url
from squall.common.errors import SettingsError
from squall.common.settings import Settings
from squall.common.transports import EMBEDDED_TRANSPORT
from squall.common.transports.embedded import EMBEDDED_BROKER_URL, embedded_broker_options

log = logging.getLogger(__name__)

#: The name of the one Celery task Squall defines.
RUN_TASK_NAME = "squall.run_task"

EMBEDDED_RESULTS_FILE = "celery_results.db"


def broker_url(settings: Settings) -> str:
    """``[celery] broker_url``, or the embedded broker (folders under $SQUALL_HOME)."""
    if settings.celery.broker_url:
        return settings.celery.broker_url
    return EMBEDDED_BROKER_URL


def result_backend_url(settings: Settings) -> str:
    """``[celery] result_backend``, or a database backend in a SQLite file under
    $SQUALL_HOME. ``db+postgresql://`` is pinned to psycopg2 like the metadata database."""
    url = settings.celery.result_backend or (
        f"db+sqlite:///{settings.home / EMBEDDED_RESULTS_FILE}"
    )
    if url.startswith("db+"):
        return "db+" + normalise_url(url[3:])
    return url


def is_embedded(settings: Settings) -> bool:
    return not settings.celery.broker_url


def _check_url(name: str, url: str, allowed: tuple[str, ...]) -> None:
    scheme = url.split("://", 1)[0]
    if "://" not in url or not scheme.startswith(allowed):
        raise SettingsError(
            f"[celery] {name} = {url!r}: expected a URL starting with one of "
            f"{', '.join(a + '://' for a in allowed)}"
        )


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration Squall runs with (also shown by ``squall config``)."""
    cel = settings.celery
    broker = broker_url(settings)
    backend = result_backend_url(settings)
    _check_url("broker_url", broker, ("redis", "rediss", "amqp", "pyamqp", "sqla+", "filesystem"))
    _check_url("result_backend", backend, ("redis", "rediss", "db+", "rpc"))
    transport_options: dict[str, Any] = {"visibility_timeout": cel.visibility_timeout}
    extra: dict[str, Any] = {}
    if is_embedded(settings):
        transport_options = embedded_broker_options(settings.home)
        extra["broker_transport"] = EMBEDDED_TRANSPORT
    elif broker.startswith("sqla+"):
        # kombu's SQLAlchemy transport hands its transport options to create_engine as is.
        transport_options = {}
        Path(settings.home).mkdir(parents=True, exist_ok=True)
    if broker.startswith("redis"):
        transport_options.update(socket_timeout=max(cel.operation_timeout, 1.0),
                                 socket_connect_timeout=max(cel.operation_timeout, 1.0))
    if backend.startswith("redis"):
        # Celery's defaults (120 s, none) would let a hung Redis stall the scheduler's sync
        extra.update(redis_socket_timeout=max(cel.operation_timeout, 1.0),
                     redis_socket_connect_timeout=max(cel.operation_timeout, 1.0))
    return {
        "broker_url": broker,
        "result_backend": backend,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": cel.default_queue,
        "task_create_missing_queues": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # STARTED would cost every try a result-backend read and write before it starts; the
        # database already says RUNNING, and adoption only resets tries still QUEUED
        "task_track_started": False,
        "task_send_sent_event": cel.worker_send_task_events,
        "worker_send_task_events": cel.worker_send_task_events,
        "result_expires": cel.result_expires,
        "result_extended": True,
        "worker_concurrency": cel.worker_concurrency,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "database_table_names": {"task": "celery_taskmeta", "group": "celery_tasksetmeta"},
        **extra,
    }


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app configured for ``settings``, with no task registered (a worker's app gets
    its task from :func:`squall.worker.build_worker_app`)."""
    app = Celery("squall", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.squall_settings = settings
    return app
