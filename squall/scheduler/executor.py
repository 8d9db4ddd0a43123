"""CeleryExecutor: publish task-run commands, bounded in time, and sync their Celery states.

Publishing (:meth:`CeleryExecutor.publish`)
    Every send is ``app.send_task(RUN_TASK_NAME, args=[command.to_message()],
    task_id=external_executor_id, queue=command.queue, retry=False)`` on a thread of a pool of
    ``sync_parallelism`` threads, so many sends are in flight at once. The caller waits for
    each attempt at most ``operation_timeout`` seconds from the moment the attempt starts; an
    attempt that fails or times out is retried up to ``publish_max_retries`` more times after
    a short backoff. Every attempt first connects with no retries of its own (kombu would
    otherwise retry a refused connection for seconds inside the thread), so a dead broker
    fails each attempt at once. :meth:`publish` returns within about
    ``(publish_max_retries + 1) * operation_timeout`` plus the backoffs whatever the broker
    does: past that deadline whatever has not finished is reported as failed.

    A send that is still hanging when its time is up is *abandoned*, not stopped: a thread
    cannot be interrupted, so the kombu producer call may still complete later and deliver a
    message the scheduler counts as not sent (or deliver a second copy next to a retry). That
    is safe: the worker moves a task instance QUEUED -> RUNNING only by compare-and-set on its
    state, try number and Celery task id, so a stale or duplicate message is refused.

    Sends go through a publishing copy of the app: the same configuration, with the result
    backend disabled. Celery's ``send_task`` calls the result backend's ``on_task_call``, which
    for a Redis backend subscribes to the task's result channel (two more round trips per
    send, and 20 retries a second apart when Redis is down): a publish must depend on the
    broker alone. Its producers come from a producer pool of the executor's own (a kombu
    resource pool: a thread holds its own producer and connection while it sends, so no
    connection is used by two threads at once; there are never more threads than producers).
    The pool is not kombu's process-wide one (``kombu.pools``, shared by every app with the same
    broker URL): :meth:`CeleryExecutor.end` closes its connections, so no other executor in the
    process is handed a connection this one left behind (after a broker restart, say).

Syncing (:meth:`CeleryExecutor.sync`)
    One :meth:`BulkStateFetcher.get_many` for every task in ``running``: FAILURE and REVOKED
    become a FAILED event (with the failure text), SUCCESS a SUCCESS event, and those tasks
    leave ``running``; PENDING, RECEIVED, STARTED, RETRY and unread ones stay. A worker
    stores no result for a try that ends normally (ADR 22): such a try stays PENDING here,
    and the scheduler removes it from ``running`` once the database shows it over.

Adoption (:meth:`CeleryExecutor.track` with ``adopted=True``)
    A try taken over from a dead scheduler is tracked with the time it was adopted. Every
    sync looks at *all* adopted ids (no order assumed): one read in any state but PENDING is
    no longer watched for the timeout; one still PENDING ``task_adoption_timeout`` seconds
    after adoption leaves ``running`` as an ``ADOPTION_TIMED_OUT`` event, which the
    scheduler turns into SCHEDULED when the task instance is still QUEUED.

Revoking (:meth:`CeleryExecutor.revoke`)
    Forgets the ids and asks the workers to revoke them with ``app.control.revoke`` on a
    thread of its own, best effort: never waited for, skipped when earlier revokes are still
    hanging (a dead broker).

Metrics: ``celery.task_timeout_error`` for each publish attempt that timed out,
``celery.publish_failed`` for each task not published after its retries,
``celery.result_backend_outage`` once per result-backend outage.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from celery import Celery, states
from kombu.pools import ProducerPool

from squall.common.celery_app import RUN_TASK_NAME
from squall.common.metrics import (
    PUBLISH_FAILED,
    PUBLISH_TIMEOUT,
    RESULT_BACKEND_OUTAGE,
    LogMetrics,
    Metrics,
)
from squall.common.models import TaskInstanceKey
from squall.common.outage import Outage
from squall.common.payload import TaskRunCommand
from squall.scheduler.state_fetcher import FAILED_STATES, BulkStateFetcher

if TYPE_CHECKING:
    from squall.common.settings import Settings

log = logging.getLogger(__name__)

#: Backoff before retry n (1-based) of a send: 0.05, 0.1, 0.2, ... capped.
BACKOFF_BASE = 0.05
BACKOFF_MAX = 0.5
#: revokes still waiting or hanging past which further revokes are skipped
MAX_PENDING_REVOKES = 4


def backoff(retry: int) -> float:
    return float(min(BACKOFF_BASE * 2 ** (retry - 1), BACKOFF_MAX))


def default_sync_parallelism() -> int:
    """``[celery] sync_parallelism = 0``: one thread fewer than there are CPUs (at least 1)."""
    return max(1, (os.cpu_count() or 1) - 1)


@dataclass(frozen=True)
class QueuedTask:
    """A task instance try moved to QUEUED, to be published with this Celery task id."""

    key: TaskInstanceKey
    try_number: int
    external_executor_id: str
    command: TaskRunCommand


@dataclass(frozen=True)
class PublishOutcome:
    task: QueuedTask
    ok: bool
    attempts: int
    error: str | None


class EventKind(StrEnum):
    QUEUED = "queued"
    SUCCESS = "success"
    FAILED = "failed"
    #: an adopted task whose Celery state stayed PENDING past task_adoption_timeout
    ADOPTION_TIMED_OUT = "adoption_timed_out"


@dataclass(frozen=True)
class ExecutorEvent:
    key: TaskInstanceKey
    try_number: int
    external_executor_id: str
    kind: EventKind
    info: str | None


class _Attempt:
    """One send of one task on the pool; ``started`` is set by the thread that runs it."""

    __slots__ = ("future", "number", "started", "task")

    def __init__(self, task: QueuedTask, number: int) -> None:
        self.task = task
        self.number = number
        self.started: float | None = None
        self.future: Future[None] | None = None


class CeleryExecutor:
    """Publishes commands onto Celery queues and turns Celery states into events."""

    def __init__(self, app: Celery, fetcher: BulkStateFetcher, *, operation_timeout: float,
                 publish_max_retries: int, sync_parallelism: int,
                 task_adoption_timeout: float = 600.0, metrics: Metrics | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if operation_timeout <= 0:
            raise ValueError(f"operation_timeout must be > 0, got {operation_timeout}")
        if publish_max_retries < 0:
            raise ValueError(f"publish_max_retries must be >= 0, got {publish_max_retries}")
        if sync_parallelism < 1:
            raise ValueError(f"sync_parallelism must be >= 1, got {sync_parallelism}")
        self._app = app
        self._fetcher = fetcher
        self._operation_timeout = operation_timeout
        self._max_retries = publish_max_retries
        self._parallelism = sync_parallelism
        self._pool: ThreadPoolExecutor | None = None
        self._publisher: Celery | None = None
        self._producers: ProducerPool | None = None
        self._pool_lock = threading.Lock()
        self._events: list[ExecutorEvent] = []
        #: external_executor_id -> (key, try number) of every task in flight
        self.running: dict[str, tuple[TaskInstanceKey, int]] = {}
        self.publish_timeouts = 0
        self.publish_failures = 0
        self._adoption_timeout = task_adoption_timeout
        self._metrics: Metrics = metrics if metrics is not None else LogMetrics()
        self._monotonic = monotonic
        #: external_executor_id -> monotonic time of adoption, for adopted tasks not yet
        #: seen in any state but PENDING
        self.adopted: dict[str, float] = {}
        self._revoker: ThreadPoolExecutor | None = None
        self._pending_revokes: set[Future[None]] = set()
        self._backend_outage = Outage("CeleryExecutor", self._metrics, RESULT_BACKEND_OUTAGE,
                                      what="result backend", logger=log, level=logging.INFO)

    @classmethod
    def from_settings(cls, app: Celery, settings: Settings,
                      metrics: Metrics | None = None) -> CeleryExecutor:
        cel = settings.celery
        parallelism = cel.sync_parallelism or default_sync_parallelism()
        fetcher = BulkStateFetcher(app, sync_parallelism=parallelism)
        return cls(app, fetcher, operation_timeout=cel.operation_timeout,
                   publish_max_retries=cel.task_publish_max_retries,
                   sync_parallelism=parallelism,
                   task_adoption_timeout=cel.task_adoption_timeout, metrics=metrics)

    # ------------------------------------------------------------------ publishing

    def publish(self, tasks: Sequence[QueuedTask]) -> list[PublishOutcome]:
        """Send each task (in parallel); one outcome per task, in the order given."""
        if not tasks:
            return []
        timeout = self._operation_timeout
        attempts_max = self._max_retries + 1
        deadline = time.monotonic() + attempts_max * timeout + sum(
            backoff(n) for n in range(1, attempts_max)) + timeout / 2
        outcomes: dict[int, PublishOutcome] = {}
        errors: dict[int, str] = {}
        in_flight: dict[int, _Attempt] = {}
        retry_at: dict[int, tuple[float, int]] = {}  # index -> (when, attempt number)
        for index, task in enumerate(tasks):
            in_flight[index] = self._submit(task, 1)

        while in_flight or retry_at:
            now = time.monotonic()
            for index, (when, number) in list(retry_at.items()):
                if when <= now:
                    del retry_at[index]
                    in_flight[index] = self._submit(tasks[index], number)
            futures = {a.future for a in in_flight.values() if a.future is not None}
            wake = [deadline] + [when for when, _ in retry_at.values()] + [
                a.started + timeout for a in in_flight.values() if a.started is not None]
            if futures:
                wait(futures, timeout=max(0.0, min(wake) - time.monotonic()),
                     return_when=FIRST_COMPLETED)
            else:
                time.sleep(max(0.0, min(wake) - time.monotonic()))
            now = time.monotonic()
            for index, attempt in list(in_flight.items()):
                future = attempt.future
                assert future is not None
                error: str | None
                if future.done():
                    exc = future.exception()
                    if exc is None:
                        del in_flight[index]
                        outcomes[index] = PublishOutcome(attempt.task, True, attempt.number, None)
                        continue
                    error = f"{type(exc).__name__}: {exc}"
                elif attempt.started is None and now >= deadline:
                    future.cancel()  # never started: every thread is busy with hung sends
                    error = "not sent before the publish deadline (every thread busy)"
                elif attempt.started is not None and (
                        now - attempt.started >= timeout or now >= deadline):
                    self.publish_timeouts += 1  # abandoned: see the module docstring
                    self._metrics.incr(PUBLISH_TIMEOUT)
                    error = f"no answer from the broker within {timeout} s"
                else:
                    continue
                del in_flight[index]
                errors[index] = error
                log.debug("TaskInstance %s try %d: publish attempt %d of %d failed: %s",
                          attempt.task.key, attempt.task.try_number, attempt.number,
                          attempts_max, error)
                if attempt.number < attempts_max and now < deadline:
                    retry_at[index] = (now + backoff(attempt.number), attempt.number + 1)
                else:
                    self.publish_failures += 1
                    self._metrics.incr(PUBLISH_FAILED)
                    outcomes[index] = PublishOutcome(attempt.task, False, attempt.number, error)
            if now >= deadline:
                for index, (_, number) in retry_at.items():
                    self.publish_failures += 1
                    self._metrics.incr(PUBLISH_FAILED)
                    outcomes[index] = PublishOutcome(tasks[index], False, number - 1,
                                                     errors.get(index))
                retry_at.clear()
        result = [outcomes[index] for index in range(len(tasks))]
        for outcome in result:
            if outcome.ok:
                self._sent(outcome.task)
        failed = [o for o in result if not o.ok]
        for outcome in failed:
            log.debug("TaskInstance %s try %d: not published after %d attempts: %s",
                      outcome.task.key, outcome.task.try_number, outcome.attempts,
                      outcome.error)
        if failed:
            log.error("CeleryExecutor: %d of %d tasks not published after up to %d attempts "
                      "each (first: %s try %d: %s)", len(failed), len(result), attempts_max,
                      failed[0].task.key, failed[0].task.try_number, failed[0].error)
        log.debug("CeleryExecutor: published %d of %d tasks", len(result) - len(failed),
                  len(result))
        return result

    def _submit(self, task: QueuedTask, number: int) -> _Attempt:
        attempt = _Attempt(task, number)
        pool, publisher, producers = self._thread_pool()
        attempt.future = pool.submit(self._send, publisher, producers, attempt)
        return attempt

    def _send(self, publisher: Celery, producers: ProducerPool, attempt: _Attempt) -> None:
        attempt.started = time.monotonic()
        task = attempt.task
        producer = producers.acquire(block=True, timeout=self._operation_timeout)
        try:
            # connect without kombu's own retry loop; the retries are ours
            producer.connection.ensure_connection(max_retries=0)
            publisher.send_task(
                RUN_TASK_NAME, args=[task.command.to_message()],
                task_id=task.external_executor_id, queue=task.command.queue,
                producer=producer, retry=False,
            )
        finally:
            producer.release()

    def _sent(self, task: QueuedTask) -> None:
        self.running[task.external_executor_id] = (task.key, task.try_number)
        self._events.append(ExecutorEvent(task.key, task.try_number, task.external_executor_id,
                                          EventKind.QUEUED, None))

    def _thread_pool(self) -> tuple[ThreadPoolExecutor, Celery, ProducerPool]:
        with self._pool_lock:
            if self._pool is None or self._publisher is None or self._producers is None:
                publisher = Celery(self._app.main, set_as_current=False)
                publisher.conf.update(self._app.conf.table(with_defaults=False, censored=False))
                publisher.conf.result_backend = "disabled"
                # Build the producer pool here, once, not racing in the threads; more threads
                # than it holds producers would only wait for one.
                limit = publisher.conf.broker_pool_limit or 0
                connections = publisher.connection_for_write().Pool(limit or None)
                self._producers = ProducerPool(connections, limit=limit or None)
                threads = min(self._parallelism, limit) if limit else self._parallelism
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="squall-publish")
                self._publisher = publisher
            return self._pool, self._publisher, self._producers

    # ------------------------------------------------------------------ tracking

    def track(self, key: TaskInstanceKey, try_number: int, external_executor_id: str,
              *, adopted: bool = False) -> None:
        """Watch a task already in flight (published by another scheduler, or before a
        restart) as if this executor had published it; ``adopted``: and reset it when it
        stays PENDING past ``task_adoption_timeout``."""
        self.running[external_executor_id] = (key, try_number)
        if adopted:
            self.adopted[external_executor_id] = self._monotonic()

    def revoke(self, external_executor_ids: Sequence[str]) -> None:
        """Stop tracking these tasks and revoke them, best effort, never blocking."""
        ids = list(external_executor_ids)
        for task_id in ids:
            self.running.pop(task_id, None)
            self.adopted.pop(task_id, None)
        if not ids:
            return
        self._pending_revokes = {f for f in self._pending_revokes if not f.done()}
        if len(self._pending_revokes) >= MAX_PENDING_REVOKES:
            log.warning("CeleryExecutor: %d earlier revokes still pending; not revoking %s",
                        len(self._pending_revokes), ", ".join(ids))
            return
        with self._pool_lock:
            if self._revoker is None:
                self._revoker = ThreadPoolExecutor(1, thread_name_prefix="squall-revoke")
            revoker = self._revoker
        self._pending_revokes.add(revoker.submit(self._revoke, ids))

    def _revoke(self, ids: list[str]) -> None:
        try:
            self._app.control.revoke(ids)
            log.info("CeleryExecutor: revoked %s", ", ".join(ids))
        except Exception as exc:
            log.warning("CeleryExecutor: could not revoke %s: %s", ", ".join(ids), exc)

    def sync(self) -> None:
        """Read the Celery state of everything running; finished tasks become events."""
        if not self.running:
            return
        found = self._fetcher.get_many(list(self.running))
        down = len(found) < len(self.running)
        if down:
            self._backend_outage.failed()  # the fetcher logged the failed read
        else:
            self._backend_outage.ok()
        self._fetcher.quiet = down
        now = self._monotonic()
        for task_id, adopted_at in list(self.adopted.items()):  # every one: no order assumed
            celery_state = found.get(task_id)
            entry = self.running.get(task_id)
            if celery_state is None or entry is None:
                if entry is None:
                    del self.adopted[task_id]
                continue
            if celery_state.state != states.PENDING:
                del self.adopted[task_id]  # seen alive (or finished): handled below
            elif now - adopted_at > self._adoption_timeout:
                del self.adopted[task_id]
                del self.running[task_id]
                key, try_number = entry
                log.info("TaskInstance %s try %d: adopted Celery task %s still PENDING after "
                         "%.0f s", key, try_number, task_id, now - adopted_at)
                self._events.append(ExecutorEvent(key, try_number, task_id,
                                                  EventKind.ADOPTION_TIMED_OUT, None))
        for task_id, celery_state in found.items():
            entry = self.running.get(task_id)
            if entry is None:
                continue
            key, try_number = entry
            if celery_state.state == states.SUCCESS:
                kind = EventKind.SUCCESS
            elif celery_state.state in FAILED_STATES:
                kind = EventKind.FAILED
                log.info("TaskInstance %s try %d: Celery task %s ended %s: %s", key, try_number,
                         task_id, celery_state.state, celery_state.info)
            else:
                continue
            del self.running[task_id]
            self._events.append(ExecutorEvent(key, try_number, task_id, kind, celery_state.info))

    def get_event_buffer(self) -> list[ExecutorEvent]:
        """The events since the last call (and forget them)."""
        events, self._events = self._events, []
        return events

    def end(self) -> None:
        """Shut the thread pools down; hung sends are abandoned, not waited for."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            if self._producers is not None:
                # abandoned sends still hold theirs; those close when their thread lets go
                self._producers.force_close_all()
                self._producers.connections.force_close_all()
                self._producers = None
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None
        with self._pool_lock:
            if self._revoker is not None:
                self._revoker.shutdown(wait=False, cancel_futures=True)
                self._revoker = None
        self._fetcher.end()
