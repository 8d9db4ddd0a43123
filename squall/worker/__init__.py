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


#: kombu's Redis transport with a guard against undecodable messages (see ``transport.py``)
REDIS_TRANSPORT = "squall.worker.transport:RedisTransport"


def build_worker_app(settings: Settings) -> Celery:
    """The Celery app a worker runs: Squall's app plus the worker process hooks, and for a
    ``redis://`` broker a transport that drops undecodable messages instead of stopping."""
    from squall.common.celery_app import broker_url, create_celery_app
    from squall.worker.tasks import install_worker_hooks

    app = create_celery_app(settings)
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
