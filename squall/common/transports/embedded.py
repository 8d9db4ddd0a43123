"""The embedded broker (ADR 0006): kombu's filesystem transport, made safe for several
publishers and consumers.

Used by every process when ``[celery] broker_url`` is empty
(:func:`squall.common.celery_app.celery_config` selects it): message files in
``$SQUALL_HOME/celery_broker/``, published and claimed by atomic rename, polled every 0.1 s.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

EMBEDDED_BROKER_URL = "filesystem://"
EMBEDDED_BROKER_DIR = "celery_broker"
#: How often an idle worker looks for a message in the embedded broker (kombu's default is
#: 1 s). Also bounds its throughput: a worker whose prefetch window is full sleeps this long
#: before it looks again, so about ``concurrency / interval`` short tasks a second.
EMBEDDED_POLLING_INTERVAL = 0.1


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
    """The embedded broker's transport (``broker_transport``: see
    :data:`squall.common.transports.EMBEDDED_TRANSPORT`)."""

    Channel = _EmbeddedChannel
    polling_interval = EMBEDDED_POLLING_INTERVAL

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # folders, no host: kombu's default `localhost` only made every connection warn
        # "No hostname was supplied. Reverting to default 'localhost'"
        return {"port": self.default_port}


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
