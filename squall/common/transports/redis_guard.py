"""kombu's Redis transport, made to drop an undecodable message instead of dying on it.

Stock kombu decodes each item it pops off a Redis queue list as a JSON envelope inside the
consumer's event loop; an item that is not JSON, or not an envelope, raises there and the
Celery worker stops with "Unrecoverable error". Anything that can write to the broker could
so stop every worker of a queue. Workers use :class:`RedisTransport` instead (for
``redis://`` brokers; ``squall.worker.build_worker_app`` sets ``broker_transport``): such an
item is logged and dropped (it is already off the list), and the worker goes on. Messages
that are envelopes are untouched: Celery itself refuses bodies it cannot decode and tasks it
does not know, and Squall's task refuses payloads it does not accept.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

#: the longest excerpt of a dropped message that is logged
EXCERPT = 200


class _GuardedRedisChannel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.error("Broker: dropped a message that is not a JSON envelope: %s", exc)
            return True

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        result = super().basic_consume(queue, *args, **kwargs)
        deliver = self.connection._callbacks[queue]

        def checked(raw_message: Any) -> Any:
            try:
                self.Message(raw_message, channel=self)
            except Exception as exc:
                log.error("Broker: dropped a malformed message envelope from queue %s (%s: "
                          "%s): %.*s", queue, type(exc).__name__, exc, EXCERPT,
                          repr(raw_message))
                return None
            return deliver(raw_message)

        self.connection._callbacks[queue] = checked
        return result


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with the guard (``broker_transport``: see
    :data:`squall.common.transports.REDIS_TRANSPORT`)."""

    Channel = _GuardedRedisChannel
