"""The DAG processor: keeps the ``dag`` / ``serialized_dag`` / ``import_error`` tables current.

Which files there are is found by listing the folders, those of ``[core] dags_folder`` and
the examples with ``[core] load_examples`` (a walk that reads every ``.py`` file), every
``[scheduler] dag_dir_list_interval`` seconds, on a request, and whenever the watch of the
DAG folder (:class:`~squall.dag_processing.watch.FolderChanges`: file-system notifications,
or a scan every ``[scheduler] dag_dir_poll_interval`` where there are none) reports a
``.py`` file, an ignore file or a folder that appeared, changed or went; a known file it
reports changed or gone is parsed at once (ADR 32). A file the listing finds is parsed as
soon as it is found. Every ``[scheduler] file_check_interval`` seconds
the processor ``stat``\\ s each listed file (modification time, size, inode): a file that
changed, or has gone, is parsed at once, together with the others changed since, and the
DAGs of a file that has gone become inactive (ADR 20). Besides, each file is parsed again
``[scheduler] min_file_process_interval`` seconds after its own last parse, whether it
changed or not (a DAG file's shape may depend on more than its source): files are due one by
one, so the work is spread over the interval rather than a pass over every file at once. A
parse gives the fingerprint of each file's last answer to :meth:`DagBag.parse_isolated`
(kept in this process's memory), so a file that answers as before is neither decoded nor
written to the database again. Changed files are parsed in a batch of their own, as soon as
they are seen; otherwise at most ``_BATCH_FILES`` files are parsed and synced at a time
(files never parsed first, then the longest due), so a change is seen between two batches
of a long first pass and the serialized DAGs of only one batch are held in memory. With
``min_file_process_interval = 0`` every file is parsed whenever the scheduler asks, which it
does once per loop. :meth:`DagProcessor.request_parse` lists the
folders and parses every file without fingerprints (everything decoded and synced).

Each file is parsed in a child process with ``[core] dagbag_import_timeout``
(:meth:`DagBag.parse_isolated`) and the result synced to the database
(:func:`~squall.dag_processing.sync.sync_to_db`), every listed file passed as
``known_files``.

After each batch, and every couple of seconds while it waits, it also runs the pending
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
error. The processor is a fresh interpreter (``python -m squall.scheduler.dag_processor_child``,
started with :class:`subprocess.Popen`, not ``multiprocessing``: no resource tracker process,
no semaphores), single-threaded, that forks its parse children safely, builds its own
database engine from the settings, and takes the parse's CPU and memory (JSON, hashing, a
leaking DAG file) out of the scheduler's process. The cost is one more process, which the
scheduler starts and stops.

The two talk over a ``SOCK_SEQPACKET`` socket pair (one message per datagram, and an end of
file when the other side is gone): the scheduler first sends the pickled
``(Settings, examples folder, its pid)`` (the very settings it runs with, ``--config``,
``--set`` and environment included), then commands: ``parse`` (:meth:`request_parse`),
``wake`` (a pass of every file, ``min_file_process_interval = 0``) and ``stop``. The
processor answers ``pass N`` after each batch (N counted from its start), which the
scheduler reads without blocking (:attr:`DagProcessor.passes`, :meth:`DagProcessor.tick`).

Stopping: :meth:`DagProcessor.stop` sends ``stop``; the processor finishes the batch it is in
(bounded by the import timeout) and exits; after a grace period it gets SIGTERM (which exits
it and, through multiprocessing's exit handler, kills its parse children) and then SIGKILL.
A processor whose parent died (its socket at end of file, or a new parent pid) exits by
itself; :meth:`DagProcessor.tick` starts a new one when the processor died.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from squall.common.db import SessionFactory, session_scope
from squall.common.models import utcnow
from squall.common.settings import Settings
from squall.common.wakeup import notify_scheduler
from squall.dag_processing.dagbag import DagBag, ParseResult
from squall.dag_processing.sync import sync_to_db

#: the module the processor process runs (``python -m``)
_MODULE = "squall.scheduler.dag_processor_child"
log = logging.getLogger(__name__)

#: How long a stopping processor may take to finish its batch, on top of the import timeout.
STOP_GRACE_SECONDS = 10.0
#: How often an idle processor checks that its parent is still alive and runs callbacks.
_PARENT_CHECK_SECONDS = 2.0
#: At most this many files are parsed and synced at a time (see the module docstring).
_BATCH_FILES = 64
#: A file modified less than this long before it was ``stat``\ ed may change again without
#: its modification time or size changing: it is parsed once more at the next check.
_RACY_NANOSECONDS = 2_000_000_000
#: The largest message either side sends (the pickled settings are far smaller).
_MESSAGE_BYTES = 1 << 20


DagFiles = list[tuple[Path, Path]]


def parse_and_sync_once(settings: Settings, session_factory: SessionFactory, *,
                        examples_folder: Path | None = None, files: DagFiles | None = None,
                        known: DagFiles | None = None,
                        previous: Mapping[str, str] | None = None) -> ParseResult:
    """Parse DAG files (in child processes) and record the result; one batch.

    ``files`` are the ``(file, folder)`` pairs to parse (default: list the folders and parse
    them all); ``known`` every DAG file there is (default: ``files``), whose DAGs are kept
    active. Files of either that no longer exist are left out. ``previous`` maps files to
    the fingerprint of their last answer (:meth:`DagBag.parse_isolated`): a file that
    answers the same is in ``result.unchanged`` and costs no decode and no write. When the
    DAG folder does not exist (an unmounted volume) nothing is deactivated: the batch is
    logged and skipped rather than taken for "every DAG file is gone".
    """
    bag = DagBag.from_settings(settings, examples_folder=examples_folder)
    if not bag.dag_folder.exists():
        log.warning("DAG folder %s does not exist; nothing parsed", bag.dag_folder)
        return ParseResult()
    started = time.monotonic()
    if files is None:
        files = bag.files()
    listed = len(files)
    files = [(path, root) for path, root in files if path.is_file()]
    known_files = [str(path) for path, _ in (files if known is None else known)
                   if path.is_file()]
    result = bag.parse_isolated(files=files, previous=previous)
    paused = settings.core.dags_are_paused_at_creation
    with session_scope(session_factory) as session:
        stale = sync_to_db(session, result, paused_at_creation=paused, now=utcnow(),
                           known_files=known_files)
        if stale:
            # unchanged files whose recorded answer lost a DAG row (see sync_to_db): parsed
            # again in full, in the same transaction
            again = bag.parse_isolated(files=[(p, r) for p, r in files if str(p) in stale])
            sync_to_db(session, again, paused_at_creation=paused, now=utcnow(),
                       known_files=known_files)
            result.unchanged = [name for name in result.unchanged if name not in stale]
            result.file_stats.update(again.file_stats)
            result.serialized.update(again.serialized)
            result.import_errors.update(again.import_errors)
            result.files_parsed.extend(again.files_parsed)
        if result.files_parsed or len(files) < listed:
            # a new or changed DAG may have a run due now: an idle scheduler looks at once
            notify_scheduler(session, "dags parsed")
    log.debug("DAG processor: parsed %d file(s) in %.2f s: %d unchanged, %d DAG(s), %d "
              "import error(s)", len(files), time.monotonic() - started,
              len(result.unchanged), len(result.serialized), len(result.import_errors))
    return result


def _child_environment() -> dict[str, str]:
    """The processor's environment: the scheduler's, with the folder this ``squall``
    package was imported from first on ``PYTHONPATH`` (so the child runs the same code)."""
    import squall

    env = dict(os.environ)
    root = str(Path(squall.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


class DagProcessor:
    """The scheduler's handle on the DAG processor process (see the module docstring)."""

    def __init__(self, settings: Settings, *, examples_folder: Path | None = None) -> None:
        self._settings = settings
        self._examples_folder = examples_folder
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._stopping = False
        self._lock = threading.Lock()
        #: passes of the processes that came before the current one
        self._passes_before = 0
        #: passes the current process reported
        self._passes_now = 0

    @property
    def passes(self) -> int:
        """How many batches the processor has parsed and synced (0 before it started),
        over its restarts too."""
        self._drain()
        return self._passes_before + self._passes_now

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the processor process (it lists and parses at once)."""
        if self.is_alive():
            return
        if self._process is not None:  # died, and tick() has not seen it yet
            self._forget()
        self._stopping = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", _MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                env=_child_environment())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            ours.send(pickle.dumps((self._settings, self._examples_folder, os.getpid())))
        except OSError as exc:  # it died at once: tick() restarts it
            log.error("DAG processor: cannot hand it its settings: %s", exc)
        ours.setblocking(False)
        self._process, self._sock = process, ours
        scheduler = self._settings.scheduler
        log.info("DAG processor: started (pid %s, folder %s %s, listed in full every %g s; "
                 "files checked every %g s and parsed every %g s)", process.pid,
                 self._settings.dags_folder,
                 "watched" if scheduler.dag_dir_watch
                 else f"scanned every {scheduler.dag_dir_poll_interval:g} s",
                 scheduler.dag_dir_list_interval, scheduler.file_check_interval,
                 scheduler.min_file_process_interval)

    def _send(self, command: bytes) -> None:
        """Send a command without blocking; one that does not fit is dropped (commands are
        idempotent, and a processor that reads none is restarted or killed anyway)."""
        if self._sock is None:
            return
        try:
            self._sock.send(command)
        except (BlockingIOError, OSError):
            pass

    def _drain(self) -> None:
        """Read what the processor reported, without blocking."""
        with self._lock:
            sock = self._sock
            while sock is not None:
                try:
                    message = sock.recv(256)
                except (BlockingIOError, OSError):
                    return
                if not message:  # the processor is gone
                    return
                kind, _, value = message.partition(b" ")
                if kind == b"pass":
                    self._passes_now = max(self._passes_now, int(value))

    def request_parse(self) -> None:
        """Ask for the folders to be listed and every file parsed and synced now, without
        fingerprints (coalesced with any request not yet served)."""
        self._send(b"parse")

    def tick(self) -> None:
        """Called by the scheduler every loop: read the processor's reports; restart it if it
        died; with ``min_file_process_interval = 0``, ask for a pass of every file."""
        if self._process is None or self._stopping:
            return
        self._drain()
        if self._process.poll() is None:
            if self._settings.scheduler.min_file_process_interval <= 0:
                self._send(b"wake")  # listing keeps its own interval
            return
        log.error("DAG processor: exited unexpectedly with code %s; restarting it",
                  self._process.returncode)
        self._forget()
        self.start()

    def _forget(self) -> None:
        self._drain()
        if self._sock is not None:
            self._sock.close()
        self._passes_before += self._passes_now
        self._passes_now = 0
        self._process = self._sock = None

    def stop(self, grace: float | None = None) -> None:
        """Stop the processor: finish the current batch, then SIGTERM, then SIGKILL."""
        process = self._process
        if process is None:
            return
        self._stopping = True
        if grace is None:
            grace = self._settings.core.dagbag_import_timeout + STOP_GRACE_SECONDS
        self._send(b"stop")
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("DAG processor: still busy after %.0f s; terminating it", grace)
            process.terminate()
            try:
                process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("DAG processor: stopped (exit code %s)", process.returncode)
        self._forget()
