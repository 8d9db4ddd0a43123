"""The ``job`` row of a ``squall celery worker`` process, so that a worker can be seen to be
alive (``squall jobs check --job-type worker``, a container's health check).

:class:`WorkerJob` runs a daemon thread in the worker's main process. Its first beat inserts
a ``job`` row (:data:`JOB_TYPE`, the worker's Celery node name as ``hostname``, its pid,
state ``running``); every ``[scheduler] job_heartbeat_sec`` after that it moves
``latest_heartbeat`` forward; :meth:`WorkerJob.stop` ends the thread, which marks the row
``success`` with an ``end_date``. A database that does not answer never stops the worker:
the outage is logged once (:class:`~squall.common.outage.Outage`) and the next beat tries
again (inserting the row then, when the first beat could not).

The thread opens its own engine, closes its connection after each beat and disposes of the
engine when it ends. Pool processes forked from the worker do not run the thread (threads do
not survive a fork), and the worker's ``worker_process_init`` hook drops the connection pool
of every engine a pool process inherited (:func:`squall.worker.tasks.dispose_inherited_engines`),
this one included.

A fork never happens in the middle of a beat. A child inherits every lock as it was at the
fork, and a beat takes library-wide ones (SQLAlchemy's mapper configuration mutex on the
first ORM use, libpq's while connecting); a pool process forked while the thread held one
hung at its first database call, its task instance left QUEUED. So a beat holds
:data:`_BEAT_LOCK`, and a fork of the worker's main process (Celery forking a pool process)
first waits for it, up to :data:`FORK_WAIT` seconds (a beat hung on an unreachable database
must not stop the pool from being refilled; the mappers are configured before the thread
starts, so what such a late fork risks is only the connection's own locks).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import update

from squall.common.console import CONSOLE
from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.metrics import WORKER_OUTAGE, Metrics, metrics_from_settings
from squall.common.models import Job, utcnow
from squall.common.outage import Outage
from squall.common.state import JobState

if TYPE_CHECKING:
    from squall.common.settings import Settings

log = logging.getLogger(__name__)

JOB_TYPE = "CeleryWorkerJob"
#: how long :meth:`WorkerJob.stop` waits for the thread to mark the row ended
STOP_TIMEOUT = 10.0
#: how long a fork of the worker's main process waits for a beat in progress to end
FORK_WAIT = 5.0

#: held by the thread during each beat; a fork waits for it (module docstring)
_BEAT_LOCK = threading.Lock()
_fork_guard_installed = False
_held_for_fork = False


def _before_fork() -> None:
    global _held_for_fork
    _held_for_fork = _BEAT_LOCK.acquire(timeout=FORK_WAIT)
    if not _held_for_fork:
        log.warning("Worker: forking while the job heartbeat has been in progress for over "
                    "%.0f s (the database does not answer)", FORK_WAIT)


def _after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _BEAT_LOCK.release()


def _after_fork_in_child() -> None:
    global _BEAT_LOCK, _held_for_fork
    _BEAT_LOCK = threading.Lock()  # the child runs no beat; start it with a free lock
    _held_for_fork = False


def install_fork_guard() -> None:
    """Make forks of this process wait for a beat in progress (idempotent)."""
    global _fork_guard_installed
    if not _fork_guard_installed:
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork_in_child)
        _fork_guard_installed = True


def worker_node_name(name: str | None) -> str:
    """The node name Celery gives a worker started with ``-n name`` (or none): ``w1@%h``
    becomes ``w1@<this host>``, no name is ``celery@<this host>``."""
    from celery.utils.nodenames import default_nodename, host_format

    return str(host_format(default_nodename(name or "")))


class WorkerJob:
    """The heartbeating ``job`` row of the worker named ``hostname``; :meth:`start` it, and
    :meth:`stop` it when the worker stops."""

    def __init__(self, settings: Settings, hostname: str, *,
                 interval: float | None = None, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._settings = settings
        self.hostname = hostname
        self.interval = interval or settings.scheduler.job_heartbeat_sec
        self._metrics = metrics if metrics is not None else metrics_from_settings(settings)
        self._clock = clock
        self._outage = Outage(f"Worker {hostname}", self._metrics, WORKER_OUTAGE, logger=log,
                              level=logging.WARNING)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.job_id: int | None = None

    def start(self) -> WorkerJob:
        from sqlalchemy.orm import configure_mappers

        # the thread's first ORM use must not be what configures the mappers (module
        # docstring): configure them here, before any thread runs
        configure_mappers()
        install_fork_guard()
        self._thread = threading.Thread(target=self._run, name="squall-worker-job",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop heartbeating and mark the row ended (waits up to ``timeout`` seconds)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("Worker %s: job row not marked ended within %.0f s", self.hostname,
                        timeout)
        self._thread = None

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        db = self._settings.database
        engine = make_engine(self._settings.sql_alchemy_conn, pool_size=1, max_overflow=0,
                             pool_recycle=db.sql_alchemy_pool_recycle,
                             pool_pre_ping=db.sql_alchemy_pool_pre_ping)
        try:
            factory = make_session_factory(engine)
            while True:
                with _BEAT_LOCK:
                    self._beat(factory)
                    # hold no connection between beats: a pool process forked meanwhile
                    # then inherits none
                    engine.dispose()
                if self._stopping.wait(self.interval):
                    break
            with _BEAT_LOCK:
                self._end(factory)
        except Exception:  # never let the thread die with a traceback on stderr only
            log.exception("Worker %s: job heartbeat thread failed", self.hostname)
        finally:
            engine.dispose()

    def _beat(self, factory: SessionFactory) -> None:
        now = self._clock()
        try:
            with session_scope(factory) as session:
                updated = 0
                if self.job_id is not None:
                    updated = session.execute(
                        update(Job).where(Job.id == self.job_id)
                        .values(latest_heartbeat=now, state=JobState.RUNNING.value)
                    ).rowcount  # type: ignore[attr-defined]
                if not updated:
                    job = Job(job_type=JOB_TYPE, state=JobState.RUNNING.value,
                              hostname=self.hostname, pid=os.getpid(), start_date=now,
                              latest_heartbeat=now)
                    session.add(job)
                    session.flush()
                    job_id = job.id
            if not updated:
                self.job_id = job_id
                log.info("Worker %s: job %d started (pid %d)", self.hostname, job_id,
                         os.getpid(), extra=CONSOLE)
        except Exception as exc:
            self._outage.failed("cannot heartbeat its job row (trying again in %.0f s): %s",
                                self.interval, _one_line(exc))
            return
        self._outage.ok()

    def _end(self, factory: SessionFactory) -> None:
        if self.job_id is None:
            return
        try:
            with session_scope(factory) as session:
                session.execute(update(Job).where(Job.id == self.job_id).values(
                    state=JobState.SUCCESS.value, end_date=self._clock()))
        except Exception as exc:
            log.error("Worker %s: could not mark job %d ended: %s", self.hostname,
                      self.job_id, _one_line(exc))
            return
        log.info("Worker %s: job %d ended", self.hostname, self.job_id, extra=CONSOLE)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
