"""The one Celery app factory: broker, result backend, queues, acks, events, from settings.

Nothing is built at import time. Each entry point (scheduler, worker, flower, CLI) calls
:func:`create_celery_app` with its :class:`Settings`; the settings ride along on the app as
``app.squall_settings`` so the worker's task code can reach them.

Without ``[celery] broker_url`` the broker is embedded (ADR 0006): kombu's filesystem
transport in ``$SQUALL_HOME/celery_broker/``, through :class:`EmbeddedBrokerTransport`
(publish and claim by atomic rename, a 0.1 s polling interval).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from squall.common.db import normalise_url
from squall.common.errors import SettingsError
from squall.common.settings import Settings

log = logging.getLogger(__name__)

#: The name of the one Celery task Squall defines.
RUN_TASK_NAME = "squall.run_task"

EMBEDDED_BROKER_URL = "filesystem://"
EMBEDDED_BROKER_DIR = "celery_broker"
EMBEDDED_RESULTS_FILE = "celery_results.db"
#: How often an idle worker looks for a message in the embedded broker (kombu's default is
#: 1 s). Also bounds its throughput: a worker whose prefetch window is full sleeps this long
#: before it looks again, so about ``concurrency / interval`` short tasks a second.
EMBEDDED_POLLING_INTERVAL = 0.1
EMBEDDED_TRANSPORT = "squall.common.celery_app:EmbeddedBrokerTransport"


class _EmbeddedChannel(filesystem.Channel):
    """kombu's filesystem channel, made safe for several publishers and consumers.

    kombu writes a message file in place (a consumer may read it half written) and claims
    one by moving it to the system temporary directory (a copy, if that is another file
    system). Here a message is written under a ``.part`` name and renamed into the queue
    folder, and claimed by renaming it into ``processed_folder`` (next to the queue folder):
    both renames are atomic, so a message is read whole, by exactly one consumer.
    """

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        options = connection.client.transport_options
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if options.get(key):
                Path(options[key]).mkdir(parents=True, exist_ok=True)
        super().__init__(connection, **kwargs)

    # kombu's own base classes disagree on this parameter's name (message / payload)
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # CLOCK_MONOTONIC is system-wide on Linux: the names sort in publish order
        name = f"{int(time.monotonic() * 1000):015d}_{uuid.uuid4().hex}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"  # not "<queue>.msg": never picked up by _get
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(message)))
            os.rename(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Embedded broker: cannot add message {final}: {exc}") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        suffix = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != suffix:
                continue
            claimed = os.path.join(self.processed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except OSError:
                continue  # another consumer took it
            try:
                with open(claimed, "rb") as file:
                    payload = file.read()
                if not self.store_processed:
                    os.unlink(claimed)
            except OSError as exc:
                raise ChannelError(
                    f"Embedded broker: cannot read message {claimed}: {exc}") from exc
            try:
                return loads(bytes_to_str(payload))
            except ValueError as exc:
                log.error("Embedded broker: dropping undecodable message %s: %s", name, exc)
        raise Empty()


class EmbeddedBrokerTransport(filesystem.Transport):
    """The embedded broker's transport (``broker_transport``; see :data:`EMBEDDED_TRANSPORT`)."""

    Channel = _EmbeddedChannel
    polling_interval = EMBEDDED_POLLING_INTERVAL


def embedded_broker_options(home: Path) -> dict[str, Any]:
    """Transport options of the embedded broker: its folders under ``home``."""
    root = Path(home) / EMBEDDED_BROKER_DIR
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "processed_folder": str(root / "claimed"),
        "store_processed": False,
        "control_folder": str(root / "control"),
        "polling_interval": EMBEDDED_POLLING_INTERVAL,
    }


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
    """A Celery app for ``settings`` with Squall's task registered."""
    app = Celery("squall", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.squall_settings = settings

    from squall.worker.tasks import run_task

    app.task(name=RUN_TASK_NAME, bind=True, acks_late=True, ignore_result=False)(run_task)
    return app
