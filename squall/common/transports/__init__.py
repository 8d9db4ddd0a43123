"""The broker transports Squall selects with Celery's ``broker_transport`` setting, by name.

:data:`EMBEDDED_TRANSPORT` (:mod:`~squall.common.transports.embedded`)
    The embedded broker (ADR 0006), for every process when ``[celery] broker_url`` is empty:
    kombu's filesystem transport with atomic publish and claim.
:data:`REDIS_TRANSPORT` (:mod:`~squall.common.transports.redis_guard`)
    A worker's transport for a ``redis://`` broker: kombu's, dropping an undecodable message
    instead of stopping the worker.

Each lives in a module of its own, imported only by a process that uses it (kombu resolves
the name), so nothing here imports kombu.
"""

from __future__ import annotations

#: the embedded broker's transport (:class:`~.embedded.EmbeddedBrokerTransport`)
EMBEDDED_TRANSPORT = "squall.common.transports.embedded:EmbeddedBrokerTransport"
#: kombu's Redis transport with a guard against undecodable messages
#: (:class:`~.redis_guard.RedisTransport`)
REDIS_TRANSPORT = "squall.common.transports.redis_guard:RedisTransport"
