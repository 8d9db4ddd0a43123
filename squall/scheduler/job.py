"""SchedulerJob: the scheduler's loop.

Each loop (:meth:`SchedulerJob.run_once`), every step in a transaction of its own:

a. create the due scheduled runs (QUEUED) and move each DAG's ``next_dagrun`` on
   (:func:`~squall.scheduler.dag_runs.create_due_dag_runs`); create the dataset-triggered
   runs of the DAGs whose queued datasets meet their condition
   (:func:`~squall.scheduler.dag_runs.create_dataset_dag_runs`; an event recorded wakes
   the loop); create the next runs of each active backfill and end the finished backfills
   (:func:`~squall.scheduler.backfill_driver.drive_backfills`). Once that step found no
   active backfill, and while the waker hands over what was notified (PostgreSQL), it is
   skipped until a backfill's notification (:func:`~squall.common.wakeup.notify_backfill`,
   sent when one is created) or ``BACKFILL_RECHECK_SECONDS`` later;
b. start QUEUED runs with room under ``max_active_runs``, decide every RUNNING run (trigger
   rules, run state) and move ready task instances to SCHEDULED
   (:func:`~squall.scheduler.dag_runs.schedule_dag_runs`); the tries the executor tracks
   that the decided runs' task instances show over stop being tracked (a try that ends
   normally stores no Celery result: ADR 22);
c. the critical section (:func:`~squall.scheduler.critical_section.queue_scheduled_tis`):
   SCHEDULED -> QUEUED within every limit, **commit**, then ``executor.publish``; task
   instances whose publish failed go back to SCHEDULED;
d. ``executor.sync()`` and its events: a Celery failure of a try still QUEUED (the worker
   died before starting it) fails or retries that try with
   :func:`~squall.execution.outcome.fail_try`, as the watchdog ends a zombie (the reason
   recorded, ``scheduler.tasks.killed_externally`` counted, the task's callback requested);
   anything else the worker has recorded itself;
e. the watch (:mod:`squall.scheduler.watchdog`): every ``[scheduler]
   zombie_detection_interval`` zombies and task instances stuck in QUEUED past
   ``task_queued_timeout`` are failed or retried; at the first loop and every
   ``[scheduler] orphaned_tasks_check_interval`` (at most ``scheduler_health_check_threshold``)
   the in-flight task instances of dead schedulers are adopted; adopted ones still PENDING
   past ``[celery] task_adoption_timeout`` go back to SCHEDULED; tracked tries over in the
   database that step b did not let go of stop being tracked; every ``[scheduler]
   trigger_timeout_check_interval`` timed-out deferred tries are scheduled to fail (ADR 30);
f. heartbeat the ``job`` row every ``[scheduler] scheduler_heartbeat_sec``.

A database outage (``OperationalError``, or a ``DBAPIError`` that invalidated its connection)
never ends :meth:`SchedulerJob.run`: the transaction is rolled back, the outage logged once at
ERROR (``scheduler.outage``) and once when over, and the loop retries with an exponential
backoff up to ``MAX_OUTAGE_BACKOFF`` seconds.

:meth:`SchedulerJob.run` repeats that until :meth:`SchedulerJob.stop` or SIGTERM / SIGINT
(a flag: the loop finishes its transaction and exits, its job row ``success``), sleeping
``[scheduler] scheduler_idle_sleep_time`` after a loop that did nothing; it runs the DAG
processor when it has one. No user code runs here: DAGs come from ``serialized_dag``;
callbacks are ``callback_request`` rows the DAG processor runs (ADR 8).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from squall.common.console import CONSOLE
from squall.common.db import SessionFactory, session_scope
from squall.common.metrics import (
    DATASET_TRIGGERED_DAGRUNS,
    SCHEDULER_HEARTBEAT,
    SCHEDULER_OUTAGE,
    TASKS_KILLED_EXTERNALLY,
    LogMetrics,
    Metrics,
)
from squall.common.models import (
    DagModel,
    Job,
    TaskInstance,
    TaskInstanceKey,
    utcnow,
)
from squall.common.outage import Outage
from squall.common.settings import Settings
from squall.common.state import ADOPTABLE_STATES, JobState, TaskInstanceState
from squall.common.wakeup import BACKFILL_NOTICE, SleepWaker, Waker
from squall.execution.outcome import fail_try
from squall.runs.jobs import SCHEDULER_JOB_TYPE
from squall.scheduler.backfill_driver import RangeCache, drive_backfills
from squall.scheduler.critical_section import queue_scheduled_tis, requeue_failed_publishes
from squall.scheduler.dag_processor import DagProcessor
from squall.scheduler.dag_runs import (
    MAX_RUNS_PER_LOOP,
    RunDecisionMemo,
    RunStepStats,
    SerializedDagCache,
    create_dataset_dag_runs,
    create_due_dag_runs,
    in_flight_by_run,
    schedule_dag_runs,
)
from squall.scheduler.executor import EventKind, ExecutorEvent, PublishOutcome, QueuedTask
from squall.scheduler.watchdog import (
    adopt_orphans,
    clean_unused_triggers,
    end_stale_restarting,
    fail_stuck_queued,
    fail_zombies,
    reset_adopted,
    time_out_deferred,
    tries_over,
)
from squall.sdk.examples import EXAMPLES_FOLDER

log = logging.getLogger(__name__)

TI = TaskInstanceState
JOB_TYPE = SCHEDULER_JOB_TYPE


FAILED_BEFORE_START = "celery task failed before the task started"
#: After a wake-up with several tries in flight, how long the loop waits for more changes
#: (finished tries) to handle them together. A lone try (a chain) is not held up.
WAKE_COALESCE_SECONDS = 0.01
_SIGNAL_POLL_SECONDS = 0.1
#: the longest wait between two loops while the database is unreachable
MAX_OUTAGE_BACKOFF = 5.0
_FIRST_OUTAGE_BACKOFF = 0.1
#: While no backfill is active, how often the loop looks for one all the same (seconds):
#: a backfill's notification makes it look in the next loop; this bounds the wait should
#: a notification be lost
BACKFILL_RECHECK_SECONDS = 10.0


#: statements of the loop with nothing to bind, built once
_SCHEDULED_DAG_IDS = (select(TaskInstance.dag_id)
                      .where(TaskInstance.state == TI.SCHEDULED.value).distinct())
_IN_FLIGHT_DAG_IDS = (select(TaskInstance.dag_id)
                      .where(TaskInstance.state.in_(sorted(s.value for s in ADOPTABLE_STATES)))
                      .distinct())
_NEXT_DUE = (select(func.min(DagModel.next_dagrun_create_after))
             .where(DagModel.is_active.is_(True), DagModel.is_paused.is_(False)))


class ExecutorLike(Protocol):
    """What the scheduler uses of :class:`~squall.scheduler.executor.CeleryExecutor`."""

    @property
    def running(self) -> MutableMapping[str, tuple[TaskInstanceKey, int]]:
        """The tries in flight, by Celery task id (counted against ``[core] parallelism``;
        the scheduler removes those whose try is over in the database)."""

    def publish(self, tasks: list[QueuedTask]) -> list[PublishOutcome]: ...
    def sync(self) -> None: ...
    def get_event_buffer(self) -> Sequence[ExecutorEvent]: ...
    def end(self) -> None: ...
    def track(self, key: TaskInstanceKey, try_number: int, external_executor_id: str,
              *, adopted: bool = False) -> None: ...
    def revoke(self, external_executor_ids: Sequence[str]) -> None: ...


@dataclass
class LoopStats:
    """What one loop did."""

    runs_created: int = 0
    runs_started: int = 0
    runs_finished: int = 0
    tis_scheduled: int = 0
    tis_queued: int = 0
    publish_failed: int = 0
    events: int = 0
    tis_failed_by_events: int = 0
    zombies: int = 0
    queued_timeouts: int = 0
    adopted: int = 0
    adoption_resets: int = 0
    trigger_timeouts: int = 0  # deferred task instances scheduled to fail (timed out)
    active_runs: int = 0  # QUEUED + RUNNING runs of unpaused DAGs

    @property
    def did_work(self) -> bool:
        return any((self.runs_created, self.runs_started, self.runs_finished,
                    self.tis_scheduled, self.tis_queued, self.publish_failed, self.events,
                    self.zombies, self.queued_timeouts, self.adopted, self.adoption_resets,
                    self.trigger_timeouts))


class SchedulerJob:
    """The scheduler loop (see the module docstring)."""

    def __init__(self, settings: Settings, session_factory: SessionFactory,
                 executor: ExecutorLike, *, dag_processor: DagProcessor | None = None,
                 clock: Callable[[], datetime] = utcnow, metrics: Metrics | None = None,
                 waker: Waker | None = None, max_runs_per_loop: int = MAX_RUNS_PER_LOOP,
                 only_backfill_id: int | None = None,
                 backfill_recheck_seconds: float = BACKFILL_RECHECK_SECONDS) -> None:
        self._settings = settings
        self._factory = session_factory
        self._executor = executor
        self._processor = dag_processor
        self._clock = clock
        #: most QUEUED and most RUNNING runs looked at in one loop
        self._max_runs_per_loop = max_runs_per_loop
        #: ``squall dags backfill --local``: this loop drives, decides and queues only that
        #: backfill's runs (it creates no scheduled runs; its watchdog steps are everyone's)
        self._only_backfill_id = only_backfill_id
        self._examples_folder = EXAMPLES_FOLDER
        self._stop = threading.Event()
        #: set by the signal handlers, which must not take locks (Event.set does)
        self._signalled = False
        self._dags = SerializedDagCache()
        self._run_memo = RunDecisionMemo()
        self._backfill_ranges = RangeCache()
        self._warned_pools: set[str] = set()
        self._parse_requested_for: set[str] = set()
        self._last_heartbeat = 0.0
        self._metrics: Metrics = metrics if metrics is not None else LogMetrics()
        #: cuts the idle sleep short when a try finishes (None: plain sleep)
        self._waker = waker
        #: monotonic times of the last watch steps (0: at the first loop)
        self._last_zombie_check = 0.0
        self._last_adoption_check = 0.0
        self._last_trigger_check = 0.0
        #: monotonic time of the last backfill step that found no active backfill (None:
        #: one was found, or not looked yet: the step runs every loop)
        self._no_backfill_since: float | None = None
        self._backfill_recheck = backfill_recheck_seconds
        self._outage = Outage("scheduler", self._metrics, SCHEDULER_OUTAGE, logger=log)
        self._outage_backoff = _FIRST_OUTAGE_BACKOFF
        self.job_id: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask :meth:`run` to finish its current loop and return (from any thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._signalled or self._stop.is_set()

    def idle(self, seconds: float, *, wake_on_change: bool = False,
             relaxed: bool = False) -> None:
        """Sleep ``seconds`` unless stopped (a signal is noticed within a tenth of a second),
        or, with ``wake_on_change``, until the waker reports a finished try."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            step = min(remaining, _SIGNAL_POLL_SECONDS)
            if wake_on_change and self._waker is not None:
                if self._waker.wait(step, relaxed=relaxed):
                    if len(self._executor.running) > 1:
                        # with several tries in flight, more finish within milliseconds of
                        # this one: one loop for all of them costs less than a loop each
                        self._stop.wait(WAKE_COALESCE_SECONDS)
                    return
            else:
                self._stop.wait(step)

    def run(self, *, num_runs: int | None = None) -> None:
        """Loop until :meth:`stop`, SIGTERM / SIGINT, or ``num_runs`` loops."""
        previous = self._install_signal_handlers()
        final = JobState.FAILED
        loops = 0
        try:
            if self._processor is not None:
                self._processor.start()
            while not self.stopping:
                stats = self._run_once_guarded()
                loops += 1
                if num_runs is not None and loops >= num_runs:
                    break
                if stats is None:
                    self.idle(self._outage_backoff)
                    self._outage_backoff = min(self._outage_backoff * 2, MAX_OUTAGE_BACKOFF)
                elif not stats.did_work:
                    seconds = self.idle_seconds(stats)
                    self.idle(seconds, wake_on_change=True,
                              relaxed=seconds > self._settings.scheduler.scheduler_idle_sleep_time)
            final = JobState.SUCCESS
        finally:
            try:
                if self._processor is not None:
                    self._processor.stop()
                self._executor.end()
                if self._waker is not None:
                    self._waker.close()
            finally:
                self._end_job(final)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        log.info("scheduler: job %s stopped after %d loop(s)", self.job_id, loops, extra=CONSOLE)

    def idle_seconds(self, stats: LoopStats) -> float:
        """How long to sleep after a loop that did nothing: ``scheduler_idle_sleep_time``;
        when nothing is active at all (no queued or running run, nothing in flight) and a
        waker reports changes, until the next scheduled run is due, at most
        ``scheduler_heartbeat_sec`` (the heartbeat and the watchdog's intervals are kept).
        Triggers, unpausing, finished tries and DAG processor passes wake it earlier."""
        cfg = self._settings.scheduler
        idle = cfg.scheduler_idle_sleep_time
        if (self._waker is None or isinstance(self._waker, SleepWaker)
                or stats.active_runs or len(self._executor.running)
                or cfg.scheduler_heartbeat_sec <= idle):
            return idle
        try:
            with session_scope(self._factory) as session:
                due = session.scalar(_NEXT_DUE)
        except SQLAlchemyError:
            return idle  # the next loop meets the outage and backs off
        longest = cfg.scheduler_heartbeat_sec
        if due is not None:
            due = due if due.tzinfo is not None else due.replace(tzinfo=UTC)
            longest = min(longest, (due - self._clock()).total_seconds())
        return max(idle, longest)

    def _run_once_guarded(self) -> LoopStats | None:
        """One loop; None when the database could not be used (the caller backs off)."""
        try:
            stats = self.run_once()
        except DBAPIError as exc:
            if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
                raise
            # the database went away or timed out: this loop's transaction is rolled back;
            # the next loop starts afresh
            self._outage.failed("%s; retrying with backoff (up to %.0f s)", exc,
                                MAX_OUTAGE_BACKOFF)
            return None
        if self._outage.ok() is not None:
            self._outage_backoff = _FIRST_OUTAGE_BACKOFF
        return stats

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # only a flag: the loop finishes the transaction it is in, then returns
            self._signalled = True
            log.info("scheduler: got %s; stopping", signal.Signals(signum).name, extra=CONSOLE)

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _ensure_job(self) -> int:
        if self.job_id is None:
            now = self._clock()
            with session_scope(self._factory) as session:
                job = Job(job_type=JOB_TYPE, state=JobState.RUNNING.value,
                          hostname=socket.getfqdn(), pid=os.getpid(), start_date=now,
                          latest_heartbeat=now)
                session.add(job)
                session.flush()
                job_id = job.id
            self.job_id = job_id
            self._last_heartbeat = time.monotonic()
            log.info("scheduler: job %d started (pid %d)", job_id, os.getpid(), extra=CONSOLE)
        return self.job_id

    def _end_job(self, state: JobState) -> None:
        if self.job_id is None:
            return
        try:
            with session_scope(self._factory) as session:
                session.execute(update(Job).where(Job.id == self.job_id).values(
                    state=state.value, end_date=self._clock()))
        except Exception as exc:
            log.error("scheduler: could not mark job %d %s: %s", self.job_id, state.value,
                      exc)

    # ------------------------------------------------------------------ one loop

    def run_once(self) -> LoopStats:
        """One loop of steps a-e; returns what it did."""
        job_id = self._ensure_job()
        # first: every notification handed over was committed before this loop's reads
        notices = self._waker.notices() if self._waker is not None else None
        if self._processor is not None:
            self._processor.tick()
        stats = LoopStats()
        self._dags.new_loop()
        now = self._clock()
        only = self._only_backfill_id
        if only is None:
            with session_scope(self._factory) as session:
                self._count(stats, create_due_dag_runs(
                    session, self._dags, now=now,
                    default_queue=self._settings.celery.default_queue))
            with session_scope(self._factory) as session:
                triggered = create_dataset_dag_runs(
                    session, self._dags, now=now,
                    default_queue=self._settings.celery.default_queue)
            self._count(stats, triggered)
            if triggered.created:
                self._metrics.incr(DATASET_TRIGGERED_DAGRUNS, triggered.created)
        if self._backfills_to_drive(notices):
            # only a waker that hands over what was notified lets the step be skipped:
            # then, and only then, it is worth asking whether another scheduler holds one
            may_skip = notices is not None and only is None
            with session_scope(self._factory) as session:
                driven = drive_backfills(
                    session, self._dags, now=now,
                    default_queue=self._settings.celery.default_queue, only_backfill_id=only,
                    ranges=self._backfill_ranges, look_for_held=may_skip)
            self._count(stats, driven)
            self._no_backfill_since = (time.monotonic()
                                       if may_skip and not driven.backfills_active else None)
        running = self._executor.running
        with session_scope(self._factory) as session:
            step = schedule_dag_runs(session, self._dags, now=now, memo=self._run_memo,
                                     max_runs=self._max_runs_per_loop,
                                     only_backfill_id=only,
                                     in_flight=in_flight_by_run(running) if running else None)
        self._count(stats, step)
        if step.tries_over:
            # the rows the decisions read show these tries over: no Celery result comes for
            # one that ended normally (ADR 22), and a late failure finds nothing to act on
            for ext_id in step.tries_over:
                running.pop(ext_id, None)
            log.debug("scheduler: %d tr(ies) over; no longer tracked", len(step.tries_over))
        self._queue_and_publish(job_id, now, stats)
        self._executor.sync()
        self._process_events(self._executor.get_event_buffer(), stats)
        self._watch(job_id, stats)
        self._heartbeat()
        if stats.did_work:
            log.debug("scheduler: loop %s", stats)
        return stats

    def _backfills_to_drive(self, notices: Sequence[str] | None) -> bool:
        """Whether this loop runs the backfill step: always, unless the last one found no
        active backfill and the waker's ``notices`` since show none created (the waker
        must hand them over: None means anything may have been), for at most
        ``backfill_recheck_seconds`` (:data:`BACKFILL_RECHECK_SECONDS`)."""
        if (notices is None or self._no_backfill_since is None
                or self._only_backfill_id is not None):
            return True
        if any(n.startswith(BACKFILL_NOTICE) for n in notices):
            log.debug("scheduler: a backfill was notified; looking for backfills")
            return True
        return time.monotonic() - self._no_backfill_since >= self._backfill_recheck

    def _count(self, stats: LoopStats, step: RunStepStats) -> None:
        stats.runs_created += step.created
        stats.runs_started += step.started
        stats.runs_finished += step.finished
        stats.tis_scheduled += step.tis_scheduled
        stats.active_runs += step.active_runs
        new_missing = step.missing_dags - self._parse_requested_for
        if new_missing and self._processor is not None:
            # once per dag_id: a DAG whose file is gone must not make it parse every loop
            log.info("scheduler: no serialized DAG for %s; asking for a parse",
                     ", ".join(sorted(new_missing)))
            self._parse_requested_for |= new_missing
            self._processor.request_parse()

    def _queue_and_publish(self, job_id: int, now: datetime, stats: LoopStats) -> None:
        slots = self._settings.core.parallelism - len(self._executor.running)
        if slots <= 0:
            log.debug("scheduler: executor full (%d in flight)", len(self._executor.running))
            return
        with session_scope(self._factory) as session:
            dag_ids = session.scalars(_SCHEDULED_DAG_IDS).all()
            if not dag_ids:
                return
            queued = queue_scheduled_tis(
                session, executor_slots=slots,
                max_tis=self._settings.scheduler.max_tis_per_query, job_id=job_id,
                dags=self._dags.get_many(session, dag_ids),
                dags_folder=self._settings.dags_folder,
                examples_folder=self._examples_folder, now=now,
                warned_pools=self._warned_pools, only_backfill_id=self._only_backfill_id,
            )
        # committed: only now may a worker see the messages
        if not queued:
            return
        stats.tis_queued += len(queued)
        outcomes = self._executor.publish(queued)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            with session_scope(self._factory) as session:
                stats.publish_failed += requeue_failed_publishes(session, failed)

    def _process_events(self, events: Sequence[ExecutorEvent], stats: LoopStats) -> None:
        stats.events += len(events)
        failed: list[ExecutorEvent] = []
        timed_out: list[ExecutorEvent] = []
        for event in events:
            if event.kind == EventKind.FAILED:
                failed.append(event)
            elif event.kind == EventKind.ADOPTION_TIMED_OUT:
                timed_out.append(event)
            else:
                log.debug("%s try %d: executor event %s", event.key, event.try_number,
                          event.kind)
        if timed_out:
            with session_scope(self._factory) as session:
                stats.adoption_resets += reset_adopted(
                    session, [(e.key, e.try_number, e.external_executor_id) for e in timed_out],
                    timeout=self._settings.celery.task_adoption_timeout,
                    metrics=self._metrics)
        if not failed:
            return
        now = self._clock()
        with session_scope(self._factory) as session:
            rows = self._load_tis(session, failed)
            dags = self._dags.get_many(session, {e.key.dag_id for e in failed})
            for event in failed:
                ti = rows.get(event.key)
                if (ti is None or ti.state != TI.QUEUED or ti.try_number != event.try_number
                        or ti.external_executor_id != event.external_executor_id):
                    log.debug("%s try %d: celery failure for a try that left QUEUED (now %s "
                              "try %s); the worker recorded it", event.key, event.try_number,
                              ti.state if ti else "gone", ti.try_number if ti else "-")
                    continue
                reason = f"{FAILED_BEFORE_START}: {event.info or 'no details'}"
                if fail_try(session, ti, dags, reason=reason, metric=TASKS_KILLED_EXTERNALLY,
                            now=now, metrics=self._metrics) is not None:
                    stats.tis_failed_by_events += 1

    @staticmethod
    def _load_tis(session: Session, events: Sequence[ExecutorEvent]
                  ) -> dict[TaskInstanceKey, TaskInstance]:
        keys = sorted({(e.key.dag_id, e.key.task_id, e.key.run_id, e.key.map_index)
                       for e in events})
        found = session.scalars(
            select(TaskInstance).where(
                tuple_(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
                       TaskInstance.map_index).in_(keys))
            .execution_options(populate_existing=True)
        ).all()
        return {t.key: t for t in found}

    def _watch(self, job_id: int, stats: LoopStats) -> None:
        """Step e: zombies, stuck in QUEUED, adoption (each on its own interval)."""
        sched = self._settings.scheduler
        mono = time.monotonic()
        # a scheduler that died just before this one started is adoptable one health-check
        # threshold later: look at least that often (one indexed query)
        every = min(sched.orphaned_tasks_check_interval, sched.scheduler_health_check_threshold)
        if not self._last_adoption_check or mono - self._last_adoption_check >= every:
            with session_scope(self._factory) as session:
                adopted = adopt_orphans(session, job_id=job_id, now=self._clock(),
                                        threshold=sched.scheduler_health_check_threshold,
                                        metrics=self._metrics)
            # committed: only now are they ours to track
            for a in adopted:
                self._executor.track(a.key, a.try_number, a.external_executor_id,
                                     adopted=True)
            stats.adopted += len(adopted)
            self._last_adoption_check = mono
        if (not self._last_trigger_check
                or mono - self._last_trigger_check >= sched.trigger_timeout_check_interval):
            with session_scope(self._factory) as session:
                stats.trigger_timeouts += time_out_deferred(session, now=self._clock())
                clean_unused_triggers(session)
            self._last_trigger_check = mono
        if self._last_zombie_check and (
                mono - self._last_zombie_check < sched.zombie_detection_interval):
            return
        now = self._clock()
        with session_scope(self._factory) as session:
            dags = self._dags.get_many(session, session.scalars(_IN_FLIGHT_DAG_IDS).all())
            stats.zombies += fail_zombies(session, dags, now=now,
                                          threshold=sched.zombie_threshold,
                                          metrics=self._metrics)
            end_stale_restarting(session, now=now, threshold=sched.zombie_threshold)
            revoke = fail_stuck_queued(session, dags, now=now,
                                       timeout=sched.task_queued_timeout,
                                       metrics=self._metrics)
            over = tries_over(session, dict(self._executor.running))
        stats.queued_timeouts += len(revoke)
        if revoke:
            self._executor.revoke(revoke)
        self._forget(over)
        self._last_zombie_check = mono

    def _forget(self, over: Sequence[str]) -> None:
        """Stop tracking tries the watch found over in the database (see
        :func:`~squall.scheduler.watchdog.tries_over`): the ones the run decisions did not
        let go of already (runs not decided: a paused DAG's, one finished by hand). A try
        over in the database needs no Celery result: a late one finds nothing to act on."""
        running = self._executor.running
        gone = [ext_id for ext_id in over if running.pop(ext_id, None) is not None]
        if gone:
            log.info("scheduler: %d tracked Celery task(s) whose try is over in the database "
                     "no longer tracked (first: %s)", len(gone), gone[0])

    def _heartbeat(self) -> None:
        every = self._settings.scheduler.scheduler_heartbeat_sec
        if time.monotonic() - self._last_heartbeat < every:
            return
        with session_scope(self._factory) as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(
                latest_heartbeat=self._clock()))
        self._last_heartbeat = time.monotonic()
        self._metrics.incr(SCHEDULER_HEARTBEAT)
