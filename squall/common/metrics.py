"""Metrics: counters, gauges and timers, sent to StatsD or written to the log.

One :class:`Metrics` object is built at each entry point with :func:`metrics_from_settings`
and passed down as a constructor argument (scheduler, executor, supervisor). Names follow
Airflow's where it has one; :class:`StatsdMetrics` prepends ``[metrics] statsd_prefix``.

Names in use (see ``docs/guarantees.md``):

``scheduler.heartbeat``, ``scheduler.tasks.killed_externally`` (a supervisor killed its task
because the row changed, or the scheduler failed a try whose Celery task failed while it was
still QUEUED: its worker died before starting it), ``zombies_killed``,
``scheduler.tasks.queued_timeout``,
``celery.task_timeout_error`` (a publish attempt timed out), ``celery.publish_failed`` (a
publish failed after every retry), ``scheduler.tasks.adopted``,
``scheduler.tasks.adoption_reset``, ``scheduler.orphaned_tasks.cleared``,
``scheduler.outage`` / ``worker.outage`` (the metadata database became unreachable),
``celery.result_backend_outage``, ``dataset.triggered_dagruns`` (runs created because a
DAG's dataset condition held); the triggerer's (as Airflow names them):
``triggerer_heartbeat``, ``triggers.succeeded``, ``triggers.failed``,
``triggers.blocked_main_thread``, ``triggers.running`` (a gauge), and ``triggerer.outage`` /
``triggerer.lease_lost`` (it stopped its triggers: no renewal within its lease).

Sending a metric never raises and never blocks: a StatsD datagram is one non-blocking
``sendto`` on a UDP socket; whatever goes wrong is logged at DEBUG and dropped.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from squall.common.settings import Settings

log = logging.getLogger(__name__)

SCHEDULER_HEARTBEAT = "scheduler.heartbeat"
TASKS_KILLED_EXTERNALLY = "scheduler.tasks.killed_externally"
ZOMBIES_KILLED = "zombies_killed"
QUEUED_TIMEOUT = "scheduler.tasks.queued_timeout"
PUBLISH_TIMEOUT = "celery.task_timeout_error"
PUBLISH_FAILED = "celery.publish_failed"
TASKS_ADOPTED = "scheduler.tasks.adopted"
ADOPTION_RESET = "scheduler.tasks.adoption_reset"
ORPHANS_CLEARED = "scheduler.orphaned_tasks.cleared"
SCHEDULER_OUTAGE = "scheduler.outage"
WORKER_OUTAGE = "worker.outage"
WORKER_LEASE_LOST = "worker.lease_lost"
RESULT_BACKEND_OUTAGE = "celery.result_backend_outage"
#: dataset-triggered runs the scheduler created (Airflow's name)
DATASET_TRIGGERED_DAGRUNS = "dataset.triggered_dagruns"
TRIGGERER_HEARTBEAT = "triggerer_heartbeat"
TRIGGERS_SUCCEEDED = "triggers.succeeded"
TRIGGERS_FAILED = "triggers.failed"
TRIGGERS_BLOCKED = "triggers.blocked_main_thread"
TRIGGERS_RUNNING = "triggers.running"
TRIGGERER_OUTAGE = "triggerer.outage"
TRIGGERER_LEASE_LOST = "triggerer.lease_lost"


class Metrics(Protocol):
    """What Squall's components report to."""

    def incr(self, name: str, count: int = 1) -> None: ...
    def gauge(self, name: str, value: float) -> None: ...
    def timing(self, name: str, ms: float) -> None: ...


#: Counts that tick on every healthy loop: logged at DEBUG, not INFO, to keep logs readable.
ROUTINE_COUNTS = frozenset({"scheduler.heartbeat", "triggerer_heartbeat"})


class LogMetrics:
    """``[metrics] statsd_on = false``: each count of an event is a log line (INFO); routine
    counts, gauges and timings DEBUG; so an event is visible without a StatsD server."""

    def incr(self, name: str, count: int = 1) -> None:
        level = logging.DEBUG if name in ROUTINE_COUNTS else logging.INFO
        log.log(level, "metric %s: +%d", name, count)

    def gauge(self, name: str, value: float) -> None:
        log.debug("metric %s = %s", name, value)

    def timing(self, name: str, ms: float) -> None:
        log.debug("metric %s: %.1f ms", name, ms)


class StatsdMetrics:
    """The StatsD line protocol (``prefix.name:1|c``, ``|g``, ``|ms``) over UDP."""

    def __init__(self, host: str, port: int, prefix: str = "squall") -> None:
        self._address = (host, port)
        self._prefix = prefix.rstrip(".")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    def incr(self, name: str, count: int = 1) -> None:
        self._send(f"{self._name(name)}:{count}|c")

    def gauge(self, name: str, value: float) -> None:
        self._send(f"{self._name(name)}:{value:g}|g")

    def timing(self, name: str, ms: float) -> None:
        self._send(f"{self._name(name)}:{ms:g}|ms")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _name(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def _send(self, line: str) -> None:
        try:
            with self._lock:
                if self._sock is None:
                    family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
                    self._sock = socket.socket(family, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                sock = self._sock
            sock.sendto(line.encode("ascii", "replace"), self._address)
        except Exception as exc:  # a metric must never break the caller
            if not self._warned:
                self._warned = True
                log.warning("StatsdMetrics %s:%d: cannot send (further failures at DEBUG): "
                            "%s", self._address[0], self._address[1], exc)
            else:
                log.debug("StatsdMetrics %s:%d: cannot send %s: %s", self._address[0],
                          self._address[1], line, exc)


def metrics_from_settings(settings: Settings) -> Metrics:
    """StatsD when ``[metrics] statsd_on``, else :class:`LogMetrics`."""
    m = settings.metrics
    if m.statsd_on:
        return StatsdMetrics(m.statsd_host, m.statsd_port, m.statsd_prefix)
    return LogMetrics()
