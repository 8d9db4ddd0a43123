"""The triggerer's event loop: many triggers, one asyncio loop on a thread of its own.

:class:`TriggerRunner` runs each trigger it is given as an asyncio task: it iterates the
trigger's ``run()`` and takes the first :class:`~squall.sdk.triggers.TriggerEvent` (later
ones are ignored: the generator is closed), then calls ``cleanup()``. What happened goes
out on :attr:`TriggerRunner.outcomes`, a thread-safe queue the database thread reads:

* :class:`Fired` -- the first event's payload;
* :class:`Failed` -- ``run()`` raised (the exception), or ended without an event (Airflow
  fails those too: ``TriggerRunner.cleanup_finished_triggers``);
* nothing when the trigger was cancelled (its row went away, the triggerer lost its lease
  or is stopping).

The loop never touches the database: the triggerer's main thread claims, renews and writes
(:mod:`squall.triggerer.job`), and hands triggers in with :meth:`TriggerRunner.add` and
:meth:`TriggerRunner.cancel`, which are safe to call from any thread.

A trigger that blocks the loop (a ``time.sleep`` or a synchronous call instead of an
``await``) holds up every other trigger. :class:`LoopWatchdog`, a thread of its own, sees
the loop's tick stop (Airflow's ``block_watchdog``: more than 0.2 s late), looks at what
the loop's thread is executing, and logs a WARNING naming the trigger and its task instance
while it blocks, and how long it blocked once it yields; the others run on afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from squall.common.metrics import TRIGGERS_BLOCKED, LogMetrics, Metrics
from squall.sdk.triggers import BaseTrigger, TriggerEvent
from squall.triggerer.trigger_rows import HeldTrigger

log = logging.getLogger(__name__)

#: how often the loop ticks for the watchdog (seconds)
TICK_SECONDS = 0.1
#: a tick this late means the loop was blocked (Airflow's 0.2 s)
BLOCKED_AFTER = 0.2
#: how long ``cleanup()`` may take before it is given up on
CLEANUP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Fired:
    trigger_id: int
    payload: Any
    #: monotonic time of the event
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Failed:
    trigger_id: int
    #: None: ``run()`` ended without an event
    exc: BaseException | None
    at: float = field(default_factory=time.monotonic)


Outcome = Fired | Failed


class TriggerRunner:
    """The asyncio loop and its triggers (see the module docstring)."""

    def __init__(self, *, metrics: Metrics | None = None,
                 on_outcome: Callable[[], None] | None = None,
                 cleanup_timeout: float = CLEANUP_TIMEOUT) -> None:
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self._cleanup_timeout = cleanup_timeout
        #: called (from the loop's thread) after each outcome is queued
        self._on_outcome = on_outcome
        self._metrics: Metrics = metrics if metrics is not None else LogMetrics()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        #: id -> (its task, what it is): touched in the loop's thread only
        self._tasks: dict[int, tuple[asyncio.Task[None], HeldTrigger]] = {}
        #: the ids running, for other threads (guarded by _lock)
        self._running: set[int] = set()
        #: the ids with an outcome not yet written (guarded by _lock): not to be started
        #: again meanwhile
        self._unsettled: set[int] = set()
        self._lock = threading.Lock()
        #: monotonic time of the loop's last tick
        self.last_tick = time.monotonic()
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------------ any thread

    def start(self) -> TriggerRunner:
        self._thread = threading.Thread(target=self._main, name="squall-triggers",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def thread_id(self) -> int | None:
        return self._thread.ident if self._thread is not None else None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def running(self) -> set[int]:
        """The ids of the triggers running now (started and not yet ended)."""
        with self._lock:
            return set(self._running)

    def known(self) -> set[int]:
        """The ids running, or ended with an outcome not yet written (:meth:`settled`)."""
        with self._lock:
            return self._running | self._unsettled

    def known_outcome(self, trigger_id: int) -> None:
        """An outcome of ``trigger_id`` decided outside the loop (it could not be built)."""
        with self._lock:
            self._unsettled.add(trigger_id)

    def settled(self, trigger_id: int) -> None:
        """The outcome of ``trigger_id`` is written (or was not this triggerer's to write)."""
        with self._lock:
            self._unsettled.discard(trigger_id)

    def add(self, held: HeldTrigger, trigger: BaseTrigger) -> None:
        """Start ``trigger`` (built from ``held``) unless it runs already."""
        trigger.trigger_id = held.id
        trigger.task_instance = held.task_instance
        with self._lock:
            if held.id in self._running:
                return
            self._running.add(held.id)
        self._call(self._start, held, trigger)

    def cancel(self, ids: set[int] | None = None, reason: str = "") -> None:
        """Cancel the triggers ``ids`` (all when None); each one's ``cleanup()`` runs."""
        self._call(self._cancel, ids, reason)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every trigger, wait for their cleanup, and end the loop."""
        if self._loop is None or self._thread is None:
            return
        self._call(self._shutdown)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("Triggerer: the event loop did not stop within %.0f s", timeout)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop just closed
            loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ the loop's thread

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception:
            log.exception("Triggerer: the event loop failed")
        finally:
            with self._lock:
                self._running.clear()
            loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        self._ready.set()
        while not self._stopped.is_set():
            self.last_tick = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), TICK_SECONDS)

    def _start(self, held: HeldTrigger, trigger: BaseTrigger) -> None:
        if held.id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._run_one(held, trigger),
                                                      name=f"trigger-{held.id}")
        self._tasks[held.id] = (task, held)
        # a task cancelled before its first step never runs its coroutine (nor its
        # finally): the bookkeeping is done when the task is done, whichever way
        task.add_done_callback(lambda _task: self._forget(held.id))

    def _forget(self, trigger_id: int) -> None:
        self._tasks.pop(trigger_id, None)
        with self._lock:
            self._running.discard(trigger_id)

    def _cancel(self, ids: set[int] | None, reason: str) -> None:
        for trigger_id, (task, held) in list(self._tasks.items()):
            if (ids is None or trigger_id in ids) and not task.done():
                log.info("Triggerer: cancelling %s%s", held.name,
                         f" ({reason})" if reason else "")
                task.cancel()

    def _shutdown(self) -> None:
        async def finish() -> None:
            tasks = [task for task, _ in self._tasks.values()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=self._cleanup_timeout * 2 + 1)
            if self._stopped is not None:
                self._stopped.set()

        asyncio.get_running_loop().create_task(finish())

    def _emit(self, outcome: Outcome) -> None:
        with self._lock:
            self._unsettled.add(outcome.trigger_id)
        self.outcomes.put(outcome)
        if self._on_outcome is not None:
            self._on_outcome()

    async def _run_one(self, held: HeldTrigger, trigger: BaseTrigger) -> None:
        """Run one trigger to its first event (see the module docstring). Its frame is
        what :class:`LoopWatchdog` looks for (the local ``held``)."""
        log.info("Triggerer: %s starting", held.name)
        events: Any = None
        try:
            events = trigger.run()
            got = False
            async for event in events:
                got = True
                if not isinstance(event, TriggerEvent):
                    raise TypeError(f"run() yielded {event!r}, not a TriggerEvent")
                log.info("Triggerer: %s fired: %r", held.name, event)
                self._emit(Fired(held.id, event.payload))
                break
            if not got:
                log.error("Triggerer: %s exited without sending an event; its task "
                          "instance will be failed", held.name)
                self._emit(Failed(held.id, None))
        except asyncio.CancelledError:
            timeout = held.task_instance.trigger_timeout
            if timeout is not None and timeout.timestamp() < time.time():
                log.info("Triggerer: %s cancelled: its timeout passed", held.name)
            raise
        except Exception as exc:
            log.error("Triggerer: %s failed: %s: %s", held.name, type(exc).__name__, exc,
                      exc_info=exc)
            self._emit(Failed(held.id, exc))
        finally:
            await self._close(held, trigger, events)

    async def _close(self, held: HeldTrigger, trigger: BaseTrigger, events: Any) -> None:
        try:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(aclose(), self._cleanup_timeout)
            elif asyncio.iscoroutine(events):
                events.close()  # run() was a coroutine, not an async generator
            try:
                await asyncio.wait_for(trigger.cleanup(), self._cleanup_timeout)
            except Exception as exc:  # Airflow ignores them too; say so
                log.warning("Triggerer: cleanup() of %s failed: %s: %s", held.name,
                            type(exc).__name__, exc)
        finally:
            log.info("Triggerer: %s completed", held.name)


class LoopWatchdog:
    """A thread that notices the loop blocked and names the trigger blocking it (see the
    module docstring); ``on_tick`` (every tick of this thread) is where the triggerer
    checks its lease, so a blocked loop or a hung database call cannot delay that."""

    def __init__(self, runner: TriggerRunner, *, metrics: Metrics | None = None,
                 on_tick: Callable[[], None] | None = None,
                 blocked_after: float = BLOCKED_AFTER) -> None:
        self._runner = runner
        self._metrics: Metrics = metrics if metrics is not None else LogMetrics()
        self._on_tick = on_tick
        self._blocked_after = blocked_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: the current blocking episode: when it began (monotonic) and who blocks
        self._blocked_since: float | None = None
        self._culprit: str | None = None

    def start(self) -> LoopWatchdog:
        self._thread = threading.Thread(target=self._watch, name="squall-trigger-watchdog",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.wait(TICK_SECONDS / 2):
            try:
                self.check()
                if self._on_tick is not None:
                    self._on_tick()
            except Exception:  # the watchdog must outlive its own bugs
                log.exception("Triggerer: watchdog check failed")

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        last = self._runner.last_tick
        late = now - last - TICK_SECONDS
        if late > self._blocked_after:
            if self._blocked_since is None:
                self._blocked_since = last + TICK_SECONDS
                self._culprit = self.blocking_trigger()
                log.warning("Triggerer: the event loop is blocked (%.2f s so far) by %s; "
                            "a trigger must await, never block: every other trigger waits "
                            "meanwhile", late, self._culprit or "code outside any trigger")
            return
        if self._blocked_since is not None:
            blocked = last - self._blocked_since
            log.warning("Triggerer: the event loop was blocked for %.2f s by %s", blocked,
                        self._culprit or "code outside any trigger")
            self._metrics.incr(TRIGGERS_BLOCKED)
            self._blocked_since = None
            self._culprit = None

    def blocking_trigger(self) -> str | None:
        """The trigger the loop's thread is executing now, named with its task instance."""
        ident = self._runner.thread_id
        frame: FrameType | None = sys._current_frames().get(ident) if ident else None
        code = TriggerRunner._run_one.__code__
        while frame is not None:
            if frame.f_code is code:
                held = frame.f_locals.get("held")
                if isinstance(held, HeldTrigger):
                    return held.name
            frame = frame.f_back
        return None
