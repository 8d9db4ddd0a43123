"""TriggererJob: ``squall triggerer``'s process.

Three threads:

* the **main thread** does every database call (so the event loop never waits on the
  database): every ``[triggerer] job_heartbeat_sec`` one transaction heartbeats the ``job``
  row (``TriggererJob``, as Airflow's), renews the lease of every trigger row it holds and
  claims free ones up to ``--capacity`` (:func:`~squall.triggerer.trigger_rows.renew_and_claim`);
  then it starts the triggers it holds that do not run yet (building each from its row:
  ``import(classpath)(**kwargs)``) and cancels the running ones whose row is gone or whose
  task instance is no longer DEFERRED (cleared, marked, timed out), and clears out unused
  trigger rows (:func:`~squall.triggerer.trigger_rows.clean_unused`). Between beats it
  waits for the triggers' outcomes and writes each as soon as it comes
  (:func:`~squall.triggerer.trigger_rows.fire` / ``fail``), waking the scheduler.
* the **event loop** (:class:`~squall.triggerer.runner.TriggerRunner`) runs the triggers.
* the **watchdog** (:class:`~squall.triggerer.runner.LoopWatchdog`) reports a blocked loop
  and keeps the lease: when ``lease`` seconds
  (:func:`~squall.common.lease_terms.trigger_lease_terms`) have passed since the last
  successful renewal was sent, it cancels every trigger itself,
  whatever the main thread is doing (a call to an unreachable database hangs rather than
  fails), and if the loop has not stopped them ``kill_grace`` seconds later (a trigger
  blocking it) it ends the process: no trigger of this triggerer may still run once another
  triggerer may claim it. After the next successful renewal the triggers it still holds are
  started again.

SIGTERM / SIGINT stop it cleanly: the triggers are cancelled (their ``cleanup()`` runs), the
outcomes already received are written, the rows it held are released for another triggerer
to claim at once, and the job row is marked ended.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from squall.common.console import CONSOLE
from squall.common.db import SessionFactory, session_scope
from squall.common.errors import SerializationError, TriggerLoadError
from squall.common.lease_terms import HeartbeatLease, LeaseTerms, trigger_lease_terms
from squall.common.metrics import (
    TRIGGERER_HEARTBEAT,
    TRIGGERER_LEASE_LOST,
    TRIGGERER_OUTAGE,
    TRIGGERS_FAILED,
    TRIGGERS_RUNNING,
    TRIGGERS_SUCCEEDED,
    LogMetrics,
    Metrics,
)
from squall.common.models import Job, utcnow
from squall.common.outage import Outage
from squall.common.settings import Settings
from squall.common.state import JobState
from squall.runs.jobs import TRIGGERER_JOB_TYPE
from squall.sdk.triggers import BaseTrigger, serde
from squall.sdk.triggers.metadata import install_session_factory
from squall.triggerer import trigger_rows
from squall.triggerer.runner import Failed, Fired, LoopWatchdog, Outcome, TriggerRunner
from squall.triggerer.trigger_rows import HeldTrigger

log = logging.getLogger(__name__)

JOB_TYPE = TRIGGERER_JOB_TYPE
#: the exit code of a triggerer that lost its lease and could not stop its triggers in time
EXIT_LEASE_LOST = 70
#: most outcomes written in one transaction
OUTCOMES_PER_TRANSACTION = 200
_SIGNAL_POLL_SECONDS = 0.1


class TriggererJob:
    """The triggerer (see the module docstring)."""

    def __init__(self, settings: Settings, session_factory: SessionFactory, *,
                 capacity: int | None = None, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 exit_process: Callable[[int], Any] = os._exit) -> None:
        cfg = settings.triggerer
        self._settings = settings
        self._factory = session_factory
        self.capacity = capacity if capacity is not None else cfg.default_capacity
        self.heartbeat = cfg.job_heartbeat_sec
        self.take_over_after = cfg.triggerer_health_check_threshold
        self.terms: LeaseTerms = trigger_lease_terms(self.take_over_after, self.heartbeat)
        self._metrics: Metrics = metrics if metrics is not None else LogMetrics()
        self._clock = clock
        self._exit_process = exit_process
        self._wake = threading.Event()
        self.runner = TriggerRunner(metrics=self._metrics, on_outcome=self._wake.set,
                                    cleanup_timeout=self.terms.kill_grace * 0.8)
        self._watchdog = LoopWatchdog(self.runner, metrics=self._metrics,
                                      on_tick=self._keep_lease)
        self.lease = HeartbeatLease(self.terms.lease)
        self._outage = Outage("Triggerer", self._metrics, TRIGGERER_OUTAGE, logger=log)
        #: outcomes received and not yet written (the database did not answer)
        self._pending: list[Outcome] = []
        #: the trigger classes already imported, by class path
        self._classes: dict[str, type[BaseTrigger]] = {}
        self._stop = threading.Event()
        self._signalled = False
        self._cancel_requested_at: float | None = None
        self.job_id: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask :meth:`run` to stop (from any thread)."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._signalled or self._stop.is_set()

    def run(self, *, max_seconds: float | None = None) -> bool:
        """Run until :meth:`stop`, SIGTERM / SIGINT (or ``max_seconds``); False when it
        stopped because its event loop died."""
        previous = self._install_signal_handlers()
        self._import_paths()
        # the triggers that read the metadata database (WorkflowTrigger, DagStateTrigger...)
        # reach it through the process's factory, in a thread (ADR 31)
        install_session_factory(self._factory)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        final = JobState.FAILED
        log.info("Triggerer: capacity %d, heartbeat %g s, lease %g s, taken over after %g s",
                 self.capacity, self.heartbeat, self.terms.lease, self.take_over_after)
        self.runner.start()
        self._watchdog.start()
        next_beat = 0.0
        try:
            while not self.stopping:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if not self.runner.alive():
                    log.error("Triggerer: the event loop thread died; stopping")
                    return False
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat
                    self.beat()
                # cleared before the outcomes are read: one that comes meanwhile sets it
                # again, and the wait below returns at once
                self._wake.clear()
                self.write_outcomes()
                self._wake.wait(max(0.0, min(next_beat - time.monotonic(),
                                             _SIGNAL_POLL_SECONDS)))
            final = JobState.SUCCESS
            return True
        finally:
            self._shutdown(final)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _shutdown(self, final: JobState) -> None:
        self.runner.stop(timeout=self.terms.kill_grace + 5)
        self._watchdog.stop()
        self.write_outcomes()
        if self.job_id is None:
            return
        try:
            with session_scope(self._factory) as session:
                released = 0
                if not self.runner.alive():  # every trigger has stopped: let others take them
                    released = trigger_rows.release(session, triggerer_id=self.job_id)
                session.execute(update(Job).where(Job.id == self.job_id).values(
                    state=final.value, end_date=self._clock()))
            log.info("Triggerer: job %d stopped (%s); %d trigger(s) released", self.job_id,
                     final.value, released, extra=CONSOLE)
        except SQLAlchemyError as exc:
            log.error("Triggerer: could not mark job %d ended: %s", self.job_id,
                      _one_line(exc))

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # only a flag (no locks in a signal handler): the main loop polls it
            self._signalled = True
            log.info("Triggerer: got %s; stopping", signal.Signals(signum).name, extra=CONSOLE)

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _import_paths(self) -> None:
        """Triggers may live in the DAG folder or the plugins folder, as in Airflow; with
        ``[core] airflow_compat`` their ``airflow.*`` imports resolve."""
        for folder in (self._settings.dags_folder, self._settings.plugins_folder):
            path = str(folder)
            if path not in sys.path:
                sys.path.append(path)
        if self._settings.core.airflow_compat:
            from squall.compat import airflow as airflow_compat

            airflow_compat.install()

    # ------------------------------------------------------------------ the lease

    def _keep_lease(self) -> None:
        """On the watchdog's thread: stop every trigger once the lease is lost (module
        docstring)."""
        if not self.lease.lost():
            self._cancel_requested_at = None
            return
        running = self.runner.running()
        if not running:
            return
        now = time.monotonic()
        if self._cancel_requested_at is None:
            self._cancel_requested_at = now
            log.error("Triggerer: lease lost: no renewal for %.1f s (lease %g s); cancelling "
                      "its %d trigger(s) before another triggerer may take them",
                      self.lease.since_renewed(), self.terms.lease, len(running))
            self._metrics.incr(TRIGGERER_LEASE_LOST)
            self.runner.cancel(None, "lease lost")
        elif now - self._cancel_requested_at > self.terms.kill_grace:
            log.critical("Triggerer: lease lost and %d trigger(s) still not stopped %.1f s "
                         "after their cancellation (the event loop is blocked); exiting so "
                         "that none runs once another triggerer may take it", len(running),
                         now - self._cancel_requested_at)
            logging.shutdown()
            self._exit_process(EXIT_LEASE_LOST)

    # ------------------------------------------------------------------ the beat

    def beat(self) -> None:
        """Heartbeat, renew and claim, then start and cancel triggers to match."""
        sent_at = time.monotonic()
        try:
            with session_scope(self._factory) as session:
                job_id, new_job = self._heartbeat_job(session)
                beat = trigger_rows.renew_and_claim(
                    session, triggerer_id=job_id, capacity=self.capacity,
                    take_over_after=self.take_over_after)
                known = self.runner.known()
                to_load = beat.runnable - known
                loaded = trigger_rows.load_triggers(session, to_load, triggerer_id=job_id)
        except SQLAlchemyError as exc:
            self._outage.failed("cannot renew its triggers' lease (lease %g s, %.1f s "
                                "since the last renewal): %s", self.terms.lease,
                                self.lease.since_renewed(), _one_line(exc))
            return
        if new_job:  # committed: only now is the row there to heartbeat
            self.job_id = job_id
            log.info("Triggerer: job %d started (pid %d)", job_id, os.getpid(), extra=CONSOLE)
        self.lease.renew(sent_at)
        self._outage.ok()
        self._metrics.incr(TRIGGERER_HEARTBEAT)
        if beat.claimed:
            log.info("Triggerer: claimed %d trigger(s) (holding %d)", len(beat.claimed),
                     len(beat.held))
        if self.lease.lost():
            return  # renewed too late: the watchdog cancels; the next beat starts them
        running = self.runner.running()
        gone = running - beat.runnable
        if gone:
            self.runner.cancel(gone, "its task instance is no longer deferred on it, or "
                               "the trigger row is gone")
        for held in loaded:
            self._start(held)
        self._metrics.gauge(TRIGGERS_RUNNING, len(self.runner.running()))
        self._clean_unused()

    def _heartbeat_job(self, session: Any) -> tuple[int, bool]:
        """This triggerer's job id (the row inserted at the first beat), and whether the
        row is new in this transaction."""
        now = self._clock()
        if self.job_id is not None:
            session.execute(update(Job).where(Job.id == self.job_id).values(
                latest_heartbeat=now, state=JobState.RUNNING.value))
            return self.job_id, False
        job = Job(job_type=JOB_TYPE, state=JobState.RUNNING.value, hostname=socket.getfqdn(),
                  pid=os.getpid(), start_date=now, latest_heartbeat=now)
        session.add(job)
        session.flush()
        return job.id, True

    def _clean_unused(self) -> None:
        try:
            with session_scope(self._factory) as session:
                deleted = trigger_rows.clean_unused(session)
        except SQLAlchemyError as exc:  # two triggerers cleaning at once may deadlock
            log.debug("Triggerer: cleaning unused triggers failed (next beat retries): %s",
                      _one_line(exc))
            return
        if deleted:
            log.info("Triggerer: deleted %d trigger(s) no task instance waits on", deleted)

    def _start(self, held: HeldTrigger) -> None:
        try:
            trigger = self.build(held)
        except Exception as exc:
            log.error("Triggerer: cannot build %s: %s", held.name, exc)
            self.runner.known_outcome(held.id)
            self._pending.append(Failed(held.id, exc))
            self._wake.set()
            return
        self.runner.add(held, trigger)

    def build(self, held: HeldTrigger) -> BaseTrigger:
        """The trigger of a row: ``import(classpath)(**kwargs)``."""
        cls = self._classes.get(held.classpath)
        if cls is None:
            module_name, _, name = held.classpath.rpartition(".")
            if not module_name:
                raise TriggerLoadError(f"class path {held.classpath!r} names no module")
            try:
                cls = getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError) as exc:
                raise TriggerLoadError(f"cannot import {held.classpath}: {exc}") from exc
            if not (isinstance(cls, type) and issubclass(cls, BaseTrigger)):
                raise TriggerLoadError(f"{held.classpath} is not a BaseTrigger subclass")
            self._classes[held.classpath] = cls
        kwargs = serde.loads(held.kwargs)
        if not isinstance(kwargs, dict):
            raise TriggerLoadError(f"the kwargs of trigger {held.id} are not a mapping")
        return cls(**kwargs)

    # ------------------------------------------------------------------ outcomes

    def write_outcomes(self) -> None:
        """Write every outcome received (and any left from a failed attempt)."""
        while True:
            try:
                self._pending.append(self.runner.outcomes.get_nowait())
            except Exception:  # queue.Empty
                break
        while self._pending and self.job_id is not None:
            batch = self._pending[:OUTCOMES_PER_TRANSACTION]
            prepared = [self._prepare(o) for o in batch]
            fired = {o.trigger_id: o.payload for o in prepared if isinstance(o, Fired)}
            failed = {o.trigger_id: o.exc for o in prepared if isinstance(o, Failed)}
            try:
                with session_scope(self._factory) as session:
                    results = trigger_rows.resolve(session, triggerer_id=self.job_id,
                                                   fired=fired, failed=failed)
            except SQLAlchemyError as exc:
                self._outage.failed("cannot write %d trigger outcome(s) (kept, retried): %s",
                                    len(batch), _one_line(exc))
                return
            del self._pending[:len(batch)]
            for outcome in prepared:
                self._report(outcome, results.get(outcome.trigger_id))
                self.runner.settled(outcome.trigger_id)

    @staticmethod
    def _prepare(outcome: Outcome) -> Outcome:
        """An event whose payload cannot be stored fails its trigger instead."""
        if isinstance(outcome, Fired):
            try:
                serde.to_json(outcome.payload)
            except SerializationError as exc:
                return Failed(outcome.trigger_id, exc, outcome.at)
        return outcome

    def _report(self, outcome: Outcome, moved: list[Any] | None) -> None:
        kind = "fired" if isinstance(outcome, Fired) else "failed"
        if moved is None:
            log.warning("Triggerer: trigger %d %s, but this triggerer no longer holds it "
                        "(taken over or deleted): nothing written", outcome.trigger_id, kind)
            return
        self._metrics.incr(TRIGGERS_SUCCEEDED if kind == "fired" else TRIGGERS_FAILED)
        latency = (time.monotonic() - outcome.at) * 1000
        for key in moved:
            log.info("Triggerer: trigger %d %s: %s deferred -> scheduled%s (%.1f ms)",
                     outcome.trigger_id, kind, key,
                     "" if kind == "fired" else " to fail (__fail__)", latency)
        if not moved:
            log.info("Triggerer: trigger %d %s; no deferred task instance waited on it",
                     outcome.trigger_id, kind)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
