"""Outage bookkeeping: the one home of "a dependency stopped answering".

A dependency (the metadata database, a Celery result backend) that fails is an outage from
its first failure to the next success. Each outage is counted once (a metric such as
``scheduler.outage`` or ``worker.outage``), logged once when it begins, logged once when it
is over with how long it lasted, and every failure in between is logged at DEBUG only: a
loop that retries every second does not fill the log.

One :class:`Outage` per dependency and role, made where the role starts and kept for its
life: the scheduler loop, the executor's result-backend sync, a worker's supervisor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from squall.common.metrics import Metrics

log = logging.getLogger(__name__)


class Outage:
    """The outages of one dependency, as one component sees them.

    Lines read ``"<subject>: <what> unreachable: <detail>"`` when an outage begins and
    ``"<subject>: <what> reachable again after 1.5 s<detail>"`` when it is over, at
    ``level``, on ``logger`` (the caller's, so that a line names its component); failures in
    between are ``"<subject>: <what> still unreachable: <detail>"`` at DEBUG.
    """

    def __init__(self, subject: str, metrics: Metrics, metric: str, *,
                 what: str = "database", logger: logging.Logger | None = None,
                 level: int = logging.ERROR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.subject = subject
        self.what = what
        self._metrics = metrics
        self._metric = metric
        self._log = logger if logger is not None else log
        self._level = level
        self._clock = clock
        self._since: float | None = None

    @property
    def down(self) -> bool:
        """Whether an outage is going on (a failure not followed by a success yet)."""
        return self._since is not None

    def failed(self, detail: str | None = None, *args: object, notice: bool = False) -> bool:
        """Note a failed use of the dependency; True when this failure began an outage.

        The first failure of an outage is counted and, with a ``detail`` (a %-format of
        ``args``), logged at the outage's level; without one nothing is logged (the caller's
        failure was logged where it happened). A later failure is logged at DEBUG, or at the
        outage's level as well when ``notice`` (a new consequence of the outage that deserves
        one line of its own, such as an outcome that cannot be written).
        """
        began = self._since is None
        if began:
            self._since = self._clock()
            self._metrics.incr(self._metric)
        if detail is None:
            return began
        if began or notice:
            self._log.log(self._level, "%s: %s unreachable: " + detail, self.subject,
                          self.what, *args)
        else:
            self._log.debug("%s: %s still unreachable: " + detail, self.subject, self.what,
                            *args)
        return began

    def ok(self, detail: str = "", *args: object) -> float | None:
        """Note a successful use; when it ends an outage, log that once (``detail``, a
        %-format of ``args``, ends the line) and return how many seconds the outage lasted.
        None, and nothing logged, when there was no outage."""
        if self._since is None:
            return None
        lasted = self._clock() - self._since
        self._since = None
        self._log.log(self._level, "%s: %s reachable again after %.1f s" + detail,
                      self.subject, self.what, lasted, *args)
        return lasted
