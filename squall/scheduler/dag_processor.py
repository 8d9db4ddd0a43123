"""The DAG processor: keeps the ``dag`` / ``serialized_dag`` / ``import_error`` tables current.

Which files there are is found by listing the folders, those of ``[core] dags_folder`` and
the examples with ``[core] load_examples`` (a walk that reads every ``.py`` file), every
``[scheduler] dag_dir_list_interval`` seconds and on a request: a file added meanwhile is
parsed as soon as the listing finds it. Every ``[scheduler] file_check_interval`` seconds
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
error. The processor is a fresh interpreter (``python -m squall.scheduler.dag_processor``,
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
import math
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.models import utcnow
from squall.common.settings import Settings
from squall.common.wakeup import notify_scheduler
from squall.dag_processing.dagbag import DagBag, ParseResult
from squall.dag_processing.sync import sync_to_db
from squall.scheduler.callback_runner import run_pending_callbacks
from squall.scheduler.sla import SlaChecker

_MODULE = "squall.scheduler.dag_processor"
#: (run as ``python -m``, this module is ``__main__``: its log records keep their name)
log = logging.getLogger(_MODULE if __name__ == "__main__" else __name__)

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
        log.info("DAG processor: started (pid %s, files checked every %g s and parsed every "
                 "%g s, folder %s listed every %g s)", process.pid,
                 self._settings.scheduler.file_check_interval,
                 self._settings.scheduler.min_file_process_interval,
                 self._settings.dags_folder, self._settings.scheduler.dag_dir_list_interval)

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


# --------------------------------------------------------------------------- the child


class _Terminated(BaseException):
    """Raised by the processor's SIGTERM handler."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


class _Listing:
    """The DAG files as last listed; listed again every ``dag_dir_list_interval`` seconds
    (with 0, at every batch) or when asked."""

    def __init__(self, bag: DagBag, interval: float) -> None:
        self._bag = bag
        self._interval = interval
        self.files: DagFiles = []
        self._listed_at = -math.inf

    def refresh(self, now: float, *, force: bool = False) -> bool:
        """List the folders if that is due (or ``force``); whether it did."""
        if not force and now - self._listed_at < self._interval:
            return False
        if not self._bag.dag_folder.exists():
            # an unmounted volume is not "every DAG file is gone": keep the last listing
            # (the batch skips the sync) and list again next time
            return False
        self.files = self._bag.files()
        self._listed_at = now
        return True

    @property
    def deadline(self) -> float | None:
        """When the next listing is due (None: at the next batch, whenever that is)."""
        return self._listed_at + self._interval if self._interval > 0 else None


#: what ``stat`` says of a file: (mtime_ns, size, inode); None: it does not exist
_FileStat = tuple[int, int, int] | None
#: recorded for a file modified just before it was looked at: never equal to a real stat
_RACY: _FileStat = (-1, -1, -1)


def _stat(path: Path) -> _FileStat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if 0 <= time.time_ns() - st.st_mtime_ns < _RACY_NANOSECONDS:
        return _RACY
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class _FileState:
    """What the processor remembers of the files it parsed (all keyed by path)."""

    #: ``stat`` of each file just before its last parse
    stats: dict[Path, _FileStat] = field(default_factory=dict)
    #: when each file was last parsed (monotonic)
    parsed_at: dict[Path, float] = field(default_factory=dict)
    #: the fingerprint of each file's last answer, as synced (absolute path strings)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def forget_except(self, files: DagFiles) -> None:
        """Drop the files no longer listed."""
        keep = {path for path, _ in files}
        for table in (self.stats, self.parsed_at):
            for path in [p for p in table if p not in keep]:
                del table[path]
        names = {str(path) for path in keep}
        for name in [n for n in self.fingerprints if n not in names]:
            del self.fingerprints[name]


class _Commands:
    """The scheduler's end of the socket, as the processor sees it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parse = False
        self.wake = False
        self.stop = False
        self._unsent: bytes | None = None

    def read(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a command, then read all there are."""
        if timeout > 0:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return
        while True:
            try:
                message = self.sock.recv(256, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                log.warning("DAG processor: the scheduler closed its end; exiting")
                self.stop = True
                return
            if message == b"parse":
                self.parse = True
            elif message == b"wake":
                self.wake = True
            elif message == b"stop":
                self.stop = True

    def report(self, message: bytes | None = None) -> None:
        """Send ``message`` (the latest report replaces one not sent yet) without blocking."""
        if message is not None:
            self._unsent = message
        if self._unsent is None:
            return
        try:
            self.sock.send(self._unsent, socket.MSG_DONTWAIT)
            self._unsent = None
        except BlockingIOError:
            pass  # the scheduler has not read for a while: sent with the next report
        except OSError:
            self.stop = True


class _Processor:
    """The processor process's loop (see the module docstring)."""

    def __init__(self, settings: Settings, examples_folder: Path | None,
                 commands: _Commands, parent_pid: int, factory: SessionFactory) -> None:
        self.settings = settings
        self.examples_folder = examples_folder
        self.commands = commands
        self.parent_pid = parent_pid
        self.factory = factory
        scheduler = settings.scheduler
        self.interval = scheduler.min_file_process_interval
        self.check_interval = scheduler.file_check_interval
        self.listing = _Listing(DagBag.from_settings(settings, examples_folder=examples_folder),
                                scheduler.dag_dir_list_interval)
        self.state = _FileState()
        self.slas = SlaChecker(settings, factory) if settings.core.check_slas else None
        self.passes = 0
        self.checked_at = -math.inf
        self.callbacks_at = -math.inf
        self.changed: set[Path] = set()
        #: after a failed batch, no other before this (monotonic)
        self.retry_at = -math.inf

    def run(self) -> None:
        self.commands.read(0)
        while not self.commands.stop:
            now = time.monotonic()
            force = self.commands.parse
            wake = self.commands.wake
            self.commands.parse = self.commands.wake = False
            did = False
            try:
                if self.listing.refresh(now, force=force):
                    self.state.forget_except(self.listing.files)
                    self.changed &= {path for path, _ in self.listing.files}
                if force:
                    self.state.fingerprints.clear()
                    self.state.parsed_at.clear()
                if force or now - self.checked_at >= self.check_interval:
                    self._check(now)
                batch = self._batch(now, all_due=wake) if now >= self.retry_at else []
                if batch:
                    self._parse(batch)
                    did = True
            except Exception:
                log.exception("DAG processor: the batch failed; trying again next time")
                did = True
                self.retry_at = time.monotonic() + _PARENT_CHECK_SECONDS  # do not spin
            if did or time.monotonic() - self.callbacks_at >= _PARENT_CHECK_SECONDS:
                self._run_callbacks()
            self.commands.report()
            self._wait()

    def _check(self, now: float) -> None:
        """``stat`` every listed file: the ones that changed or went since their last parse
        are parsed next."""
        self.checked_at = now
        stats = self.state.stats
        for path, _ in self.listing.files:
            if path in stats and _stat(path) != stats[path]:
                self.changed.add(path)

    def _due_at(self, path: Path) -> float:
        parsed = self.state.parsed_at.get(path)
        if parsed is None:
            return -math.inf
        return parsed + self.interval if self.interval > 0 else math.inf

    def _batch(self, now: float, *, all_due: bool) -> DagFiles:
        """The files to parse now: with ``all_due`` every file; else the changed ones alone
        (nothing else delays them), or else at most ``_BATCH_FILES`` of the files never
        parsed and then of the longest due."""
        listed = self.listing.files
        if all_due:
            return list(listed)
        changed = [(p, r) for p, r in listed if p in self.changed]
        if changed:
            return changed
        due = sorted((due_at, i) for i, (p, _) in enumerate(listed)
                     if (due_at := self._due_at(p)) <= now)
        return [listed[i] for _, i in due[:_BATCH_FILES]]

    def _parse(self, batch: DagFiles) -> None:
        state = self.state
        stats = {path: _stat(path) for path, _ in batch}
        started = time.monotonic()
        previous = {str(path): state.fingerprints[str(path)] for path, _ in batch
                    if str(path) in state.fingerprints}
        result = parse_and_sync_once(self.settings, self.factory,
                                     examples_folder=self.examples_folder, files=batch,
                                     known=self.listing.files, previous=previous)
        # recorded once the sync committed: a failed one leaves the files to parse again
        for path, _ in batch:
            state.stats[path] = stats[path]
            state.parsed_at[path] = started
            self.changed.discard(path)
            if stats[path] is None:
                state.fingerprints.pop(str(path), None)
        for name, stat in result.file_stats.items():
            state.fingerprints[name] = stat.fingerprint
        self.passes += 1
        self.commands.report(b"pass %d" % self.passes)
        gone = [str(path) for path, _ in batch if stats[path] is None]
        if result.files_parsed or gone:
            log.info("DAG processor: parsed %d file(s) (%d unchanged): %d DAG(s), %d import "
                     "error(s)%s%s", len(batch) - len(gone), len(result.unchanged),
                     len(result.serialized), len(result.import_errors),
                     f" ({', '.join(sorted(result.import_errors))})"
                     if result.import_errors else "",
                     f"; gone: {', '.join(gone)}" if gone else "")

    def _run_callbacks(self) -> None:
        self.callbacks_at = time.monotonic()
        _run_callbacks(self.settings, self.factory, self.slas)

    def _wait(self) -> None:
        """Until the next thing due (a check, a file, a listing, the callbacks), a command,
        or the parent's death."""
        if os.getppid() != self.parent_pid:
            log.warning("DAG processor: the scheduler (pid %d) is gone; exiting",
                        self.parent_pid)
            self.commands.stop = True
            return
        now = time.monotonic()
        deadlines = [self.checked_at + self.check_interval,
                     self.callbacks_at + _PARENT_CHECK_SECONDS]
        if self.listing.deadline is not None:
            deadlines.append(self.listing.deadline)
        files = self.listing.files
        if self.changed or any(p not in self.state.parsed_at for p, _ in files):
            deadlines.append(now)
        elif self.interval > 0 and files:
            deadlines.append(min(self._due_at(p) for p, _ in files))
        deadline = max(min(deadlines), self.retry_at)
        self.commands.read(max(0.0, deadline - now))


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


def _main(argv: list[str]) -> int:
    """``python -m squall.scheduler.dag_processor FD``: the processor process, talking to
    the scheduler over the socket ``FD``."""
    # A terminal's Ctrl-C reaches the whole process group: the scheduler decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    sock = socket.socket(fileno=int(argv[0]))
    try:
        setup = sock.recv(_MESSAGE_BYTES)
    except _Terminated:
        return 0
    if not setup:
        return 0  # the scheduler died before it told us anything
    settings, examples_folder, parent_pid = pickle.loads(setup)
    if not isinstance(settings, Settings):
        raise TypeError(f"the DAG processor was sent {type(settings).__name__}, not Settings")
    logging.basicConfig(level=settings.logging.logging_level, stream=sys.stderr,
                        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    db = settings.database
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=1,
                         pool_recycle=db.sql_alchemy_pool_recycle,
                         pool_pre_ping=db.sql_alchemy_pool_pre_ping)
    try:
        processor = _Processor(settings, examples_folder, _Commands(sock), parent_pid,
                               make_session_factory(engine))
        processor.run()
    except _Terminated:
        log.info("DAG processor: terminated")
    finally:
        engine.dispose()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
