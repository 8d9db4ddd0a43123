"""The DAG processor: keeps the ``dag`` / ``serialized_dag`` / ``import_error`` tables current.

Every ``[scheduler] min_file_process_interval`` seconds (or as soon as somebody asks with
:meth:`DagProcessor.request_parse`) it parses the DAG files, those of ``[core] dags_folder``
and the examples with ``[core] load_examples``, each in a child process with
``[core] dagbag_import_timeout`` (:meth:`DagBag.parse_isolated`), and syncs the result to the
database. With an interval of 0 it parses whenever the scheduler asks, which the scheduler
does once per loop. Which files there are is found by listing the folders (a walk that reads
every ``.py`` file), every ``[scheduler] dag_dir_list_interval`` seconds and on a request: a
file added meanwhile is parsed at the listing that finds it; a known file that has gone is
dropped at its next parse (its DAGs become inactive).

After each pass, and every couple of seconds while it waits, it also runs the pending
callback requests (``callback_request``: zombie and dead-task-process task callbacks,
DAG-level run callbacks), each in a child process with ``[scheduler] callback_timeout``
(:mod:`squall.scheduler.callback_runner`): user callbacks run here, where DAG files are
imported anyway, and never in the scheduler. With ``[core] check_slas`` it records the tasks
that missed their ``sla`` and runs the DAGs' ``sla_miss_callback`` (:mod:`squall.scheduler.sla`)
at the same moments, at most every few seconds.

Why a long-lived child process of its own, and not a thread of the scheduler: the scheduler
runs threads (the executor publishes in parallel), and the isolated parse forks a child per
DAG file. Forking a multi-threaded process copies locks other threads may hold at that
instant (stdout, logging handlers, the broker client's) into a child that then runs user
code and may deadlock on one of them until it is killed as "timed out": a spurious import
error. The processor is started with the ``spawn`` method, so it is a fresh single-threaded
interpreter that forks its parse children safely, builds its own database engine from the
settings, and takes the parse's CPU and memory (JSON, hashing, a leaking DAG file) out of the
scheduler's process. The cost is one more process, which the scheduler starts and stops.

Stopping: :meth:`DagProcessor.stop` sets an event; the processor finishes the pass it is in
(bounded by the import timeout) and exits; after a grace period it gets SIGTERM (which exits
it and, through multiprocessing's exit handler, kills its parse children) and then SIGKILL.
A processor whose parent died exits by itself.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType

from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.models import utcnow
from squall.common.procutil import stop_child
from squall.common.settings import Settings
from squall.common.wakeup import notify_scheduler
from squall.dag_processing.dagbag import DagBag, ParseResult
from squall.dag_processing.sync import sync_to_db
from squall.scheduler.callback_runner import run_pending_callbacks
from squall.scheduler.sla import SlaChecker

log = logging.getLogger(__name__)

#: How long a stopping processor may take to finish its pass, on top of the import timeout.
STOP_GRACE_SECONDS = 10.0
#: How often an idle processor checks that its parent is still alive.
_PARENT_CHECK_SECONDS = 2.0


DagFiles = list[tuple[Path, Path]]


def parse_and_sync_once(settings: Settings, session_factory: SessionFactory, *,
                        examples_folder: Path | None = None, files: DagFiles | None = None,
                        known: DagFiles | None = None) -> ParseResult:
    """Parse DAG files (in child processes) and record the result; one pass.

    ``files`` are the ``(file, folder)`` pairs to parse (default: list the folders and parse
    them all); ``known`` every DAG file there is (default: ``files``), whose DAGs are kept
    active. Files of either that no longer exist are left out. When the DAG folder does not
    exist (an unmounted volume) nothing is deactivated: the pass is logged and skipped
    rather than taken for "every DAG file is gone".
    """
    bag = DagBag.from_settings(settings, examples_folder=examples_folder)
    if not bag.dag_folder.exists():
        log.warning("DAG folder %s does not exist; nothing parsed", bag.dag_folder)
        return ParseResult()
    started = time.monotonic()
    if files is None:
        files = bag.files()
    files = [(path, root) for path, root in files if path.is_file()]
    known_files = [str(path) for path, _ in (files if known is None else known)
                   if path.is_file()]
    result = bag.parse_isolated(files=files)
    with session_scope(session_factory) as session:
        sync_to_db(session, result, paused_at_creation=settings.core.dags_are_paused_at_creation,
                   now=utcnow(), known_files=known_files)
        # a new or changed DAG may have a run due now: an idle scheduler looks at once
        notify_scheduler(session, "dags parsed")
    log.debug("DAG processor: parsed %d file(s) in %.2f s: %d DAG(s), %d import error(s)",
              len(result.files_parsed), time.monotonic() - started, len(result.serialized),
              len(result.import_errors))
    return result


class DagProcessor:
    """The scheduler's handle on the DAG processor process (see the module docstring)."""

    def __init__(self, settings: Settings, *, examples_folder: Path | None = None) -> None:
        self._settings = settings
        self._examples_folder = examples_folder
        self._ctx: SpawnContext = multiprocessing.get_context("spawn")
        self._process: SpawnProcess | None = None
        self._wake: Event | None = None
        self._relist: Event | None = None
        self._stop: Event | None = None
        self._passes: Synchronized[int] | None = None

    @property
    def passes(self) -> int:
        """How many parse passes the processor has completed (0 before it started)."""
        return int(self._passes.value) if self._passes is not None else 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> None:
        """Start the processor process (it parses at once)."""
        if self.is_alive():
            return
        self._wake = self._ctx.Event()
        self._relist = self._ctx.Event()
        self._stop = self._ctx.Event()
        if self._passes is None:
            self._passes = self._ctx.Value("i", 0)
        self._process = self._ctx.Process(
            target=_processor_main, name="squall-dag-processor",
            args=(self._settings, self._examples_folder, self._wake, self._relist,
                  self._stop, self._passes, os.getpid()),
        )
        self._process.start()
        log.info("DAG processor: started (pid %s, files parsed every %g s, folder %s listed "
                 "every %g s)", self._process.pid,
                 self._settings.scheduler.min_file_process_interval,
                 self._settings.dags_folder, self._settings.scheduler.dag_dir_list_interval)

    def request_parse(self) -> None:
        """Ask for a pass now, the folders listed first (coalesced with any pass already
        asked for)."""
        if self._relist is not None:
            self._relist.set()
        if self._wake is not None:
            self._wake.set()

    def tick(self) -> None:
        """Called by the scheduler every loop: restart the processor if it died; with
        ``min_file_process_interval = 0``, ask for a pass."""
        if self._process is None or (self._stop is not None and self._stop.is_set()):
            return
        if self._process.is_alive():
            if self._settings.scheduler.min_file_process_interval <= 0 and self._wake is not None:
                self._wake.set()  # a pass of the files known: listing keeps its own interval
            return
        log.error("DAG processor: exited unexpectedly with code %s; restarting it",
                  self._process.exitcode)
        self._process.close()
        self._process = None
        self.start()

    def stop(self, grace: float | None = None) -> None:
        """Stop the processor: finish the current pass, then SIGTERM, then SIGKILL."""
        process = self._process
        if process is None:
            return
        if grace is None:
            grace = self._settings.core.dagbag_import_timeout + STOP_GRACE_SECONDS
        if self._stop is not None:
            self._stop.set()
        if self._wake is not None:
            self._wake.set()
        process.join(grace)
        if process.is_alive():
            log.warning("DAG processor: still busy after %.0f s; terminating it", grace)
            stop_child(process, 0, terminate_grace=STOP_GRACE_SECONDS)
        log.info("DAG processor: stopped (exit code %s)", process.exitcode)
        process.close()
        self._process = None


# --------------------------------------------------------------------------- the child


class _Terminated(BaseException):
    """Raised by the processor's SIGTERM handler."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


class _Listing:
    """The DAG files as last listed; listed again every ``dag_dir_list_interval`` seconds
    (with 0, at every pass) or when asked."""

    def __init__(self, bag: DagBag, interval: float) -> None:
        self._bag = bag
        self._interval = interval
        self.files: DagFiles = []
        self._listed_at = -math.inf

    def refresh(self, now: float, *, force: bool = False) -> DagFiles:
        """List the folders if that is due (or ``force``); the files new since last time."""
        if not force and now - self._listed_at < self._interval:
            return []
        if not self._bag.dag_folder.exists():
            # an unmounted volume is not "every DAG file is gone": keep the last listing
            # (the pass skips the sync) and list again next time
            return []
        before = {path for path, _ in self.files}
        self.files = self._bag.files()
        self._listed_at = now
        return [(path, root) for path, root in self.files if path not in before]

    @property
    def deadline(self) -> float | None:
        """When the next listing is due (None: at the next pass, whenever that is)."""
        return self._listed_at + self._interval if self._interval > 0 else None


def _processor_main(settings: Settings, examples_folder: Path | None, wake: Event,
                    relist: Event, stop: Event, passes: Synchronized[int],
                    parent_pid: int) -> None:
    """The processor process: list when due, parse and sync when due (new files at once),
    wait for the next of those or a wake-up; repeat."""
    # A terminal's Ctrl-C reaches the whole process group: the scheduler decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(level=settings.logging.logging_level, stream=sys.stderr,
                        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    db = settings.database
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=1,
                         pool_recycle=db.sql_alchemy_pool_recycle,
                         pool_pre_ping=db.sql_alchemy_pool_pre_ping)
    factory = make_session_factory(engine)
    interval = settings.scheduler.min_file_process_interval
    listing = _Listing(DagBag.from_settings(settings, examples_folder=examples_folder),
                       settings.scheduler.dag_dir_list_interval)
    parsed_at = -math.inf
    slas = SlaChecker(settings, factory) if settings.core.check_slas else None
    last: tuple[int, int, int, list[str]] | None = None
    try:
        while not stop.is_set():
            started = time.monotonic()
            asked = wake.is_set()
            wake.clear()
            force_list = relist.is_set()
            relist.clear()
            try:
                added = listing.refresh(started, force=force_list)
                due = asked or started - parsed_at >= interval
                if due or added:
                    if due:
                        parsed_at = started
                    result = parse_and_sync_once(
                        settings, factory, examples_folder=examples_folder,
                        files=listing.files if due else added, known=listing.files)
                    summary = (len(result.files_parsed), len(result.serialized),
                               len(result.import_errors), sorted(result.import_errors))
                    if not due:
                        log.info("DAG processor: new file(s) %s: %d DAG(s), %d import "
                                 "error(s)", ", ".join(str(p) for p, _ in added),
                                 *summary[1:3])
                    elif summary != last:  # say so when something changed, not every pass
                        log.info("DAG processor: %d file(s), %d DAG(s), %d import error(s)%s",
                                 *summary[:3],
                                 f" ({', '.join(summary[3])})" if summary[3] else "")
                        last = summary
                    with passes.get_lock():
                        passes.value += 1
            except Exception:
                log.exception("DAG processor: the pass failed; trying again next time")
            _run_callbacks(settings, factory, slas)
            deadlines = [d for d in (parsed_at + interval if interval > 0 else None,
                                     listing.deadline) if d is not None]
            _wait(wake, stop, min(deadlines, default=None), parent_pid,
                  idle=lambda: _run_callbacks(settings, factory, slas))
    except _Terminated:
        log.info("DAG processor: terminated")
    finally:
        engine.dispose()


def _run_callbacks(settings: Settings, factory: SessionFactory,
                   slas: SlaChecker | None = None) -> None:
    """Run the pending callback requests, and the SLA check when it is due (never raises:
    a failure is logged)."""
    try:
        run_pending_callbacks(settings, factory)
    except Exception:
        log.exception("DAG processor: running callback requests failed; trying again later")
    if slas is not None:
        try:
            slas.check_if_due()
        except Exception:
            log.exception("DAG processor: the SLA check failed; trying again later")


def _wait(wake: Event, stop: Event, deadline: float | None, parent_pid: int,
          idle: Callable[[], None] | None = None) -> None:
    """Until ``deadline`` (None: until woken), a wake-up, a stop, or the parent's death;
    ``idle`` is called every ``_PARENT_CHECK_SECONDS`` meanwhile."""
    first = True
    while not stop.is_set():
        if idle is not None and not first:
            idle()
        first = False
        if os.getppid() != parent_pid:
            log.warning("DAG processor: the scheduler (pid %d) is gone; exiting", parent_pid)
            stop.set()
            return
        timeout = _PARENT_CHECK_SECONDS
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            timeout = min(timeout, remaining)
        if wake.wait(timeout):
            return
