"""The DAG processor process itself: ``python -m squall.scheduler.dag_processor_child FD``.

What it does, and how the scheduler talks to it over the socket ``FD``, is described in
:mod:`squall.scheduler.dag_processor` (the scheduler's side: :class:`DagProcessor`, which
starts this module as a subprocess).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from squall.common.console import quiet_if_inherited
from squall.common.db import SessionFactory, make_engine, make_session_factory
from squall.common.settings import Settings
from squall.dag_processing.dagbag import DagBag
from squall.dag_processing.files import DEFAULT_IGNORE_FILE
from squall.dag_processing.watch import FolderChanges
from squall.scheduler.callback_runner import run_pending_callbacks
from squall.scheduler.dag_processor import (
    _BATCH_FILES,
    _MESSAGE_BYTES,
    _PARENT_CHECK_SECONDS,
    _RACY_NANOSECONDS,
    DagFiles,
    parse_and_sync_once,
)
from squall.scheduler.sla import SlaChecker

_MODULE = "squall.scheduler.dag_processor_child"
#: (run as ``python -m``, this module is ``__main__``: its log records keep their name)
log = logging.getLogger(_MODULE if __name__ == "__main__" else __name__)



class _Terminated(BaseException):
    """Raised by the processor's SIGTERM handler."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


class _Listing:
    """The DAG files as last listed; listed again every ``dag_dir_list_interval`` seconds
    (with 0, at every batch) or when asked."""

    def __init__(self, bag: DagBag, interval: float) -> None:
        self._bag = bag
        self.folder = bag.dag_folder
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
#: the ``stat`` of a path never looked at
_UNSEEN: _FileStat = (-2, -2, -2)


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

    def read(self, timeout: float, also: int | None = None) -> None:
        """Wait up to ``timeout`` seconds for a command (or for ``also`` to be readable),
        then read all the commands there are."""
        if timeout > 0:
            fds: list[int | socket.socket] = [self.sock] if also is None else [self.sock, also]
            ready, _, _ = select.select(fds, [], [], timeout)
            if self.sock not in ready:
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
        #: new, changed and removed files under the DAG folder, as they happen (ADR 32)
        self.changes = FolderChanges(self.listing.folder, watch=scheduler.dag_dir_watch,
                                     poll_interval=scheduler.dag_dir_poll_interval,
                                     ignore_file_name=DEFAULT_IGNORE_FILE)
        #: the last listing dropped files: their DAGs become inactive at the next sync
        self.resync = False
        #: the ``stat`` of paths not listed (folders, other files) at their last change
        self.others: dict[Path, _FileStat] = {}
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
                before = self.listing.files
                relist = self._take_changes(now)
                if self.listing.refresh(now, force=force or relist):
                    self._listed(before, retry_watch=not relist)
                if force:
                    self.state.fingerprints.clear()
                    self.state.parsed_at.clear()
                if force or now - self.checked_at >= self.check_interval:
                    self._check(now)
                batch = self._batch(now, all_due=wake) if now >= self.retry_at else []
                if batch or (self.resync and now >= self.retry_at):
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

    def _take_changes(self, now: float) -> bool:
        """Take what :attr:`changes` saw: a known file changed or gone is parsed next;
        whether the folder must be listed again (a new file, an ignore file, a folder).

        A path whose ``stat`` (modification time, size, inode) is what it was is left
        alone: a notification for an access time or a mode only (reading the files, as a
        listing or a parse does, may raise one) must not make them look changed."""
        paths, everything = self.changes.collect(now)
        if everything:
            return True
        if not paths:
            return False
        listed = {path for path, _ in self.listing.files}
        stats = self.state.stats
        relist = False
        for path in paths:
            stat = _stat(path)
            if path in listed:
                if stat == _RACY or stats.get(path, _UNSEEN) != stat:
                    self.changed.add(path)
                    relist = relist or stat is None
            elif stat == _RACY or self.others.get(path, _UNSEEN) != stat:
                self.others[path] = stat
                relist = relist or (path.suffix == ".py" or path.name == DEFAULT_IGNORE_FILE
                                    or stat is None or path.is_dir())
        return relist

    def _listed(self, before: DagFiles, *, retry_watch: bool) -> None:
        """The folder was just listed: forget the files no longer there (their DAGs become
        inactive at the next sync, even with nothing to parse)."""
        self.state.forget_except(self.listing.files)
        now_listed = {path for path, _ in self.listing.files}
        self.changed &= now_listed
        dropped = [str(path) for path, _ in before if path not in now_listed]
        if dropped:
            self.resync = True
            log.info("DAG processor: no longer listed: %s", ", ".join(dropped))
        if retry_watch:  # the periodic listing
            self.others.clear()
            self.changes.retry()

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
        self.resync = False
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
        for deadline in (self.listing.deadline, self.changes.deadline):
            if deadline is not None:
                deadlines.append(deadline)
        files = self.listing.files
        if self.changed or self.resync or any(p not in self.state.parsed_at for p, _ in files):
            deadlines.append(now)
        elif self.interval > 0 and files:
            deadlines.append(min(self._due_at(p) for p, _ in files))
        deadline = max(min(deadlines), self.retry_at)
        self.commands.read(max(0.0, deadline - now), also=self.changes.fileno())


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
    """``python -m squall.scheduler.dag_processor_child FD``: the processor process, talking to
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
    quiet_if_inherited()  # the scheduler's console without -v (ADR 34)
    db = settings.database
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=1,
                         pool_recycle=db.sql_alchemy_pool_recycle,
                         pool_pre_ping=db.sql_alchemy_pool_pre_ping)
    processor: _Processor | None = None
    try:
        processor = _Processor(settings, examples_folder, _Commands(sock), parent_pid,
                               make_session_factory(engine))
        processor.run()
    except _Terminated:
        log.info("DAG processor: terminated")
    finally:
        if processor is not None:
            processor.changes.close()
        engine.dispose()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
