"""A try's standard output and error, into its log: masked, and in order with its records.

While a try runs (:func:`capture_task_output`, entered by
:func:`squall.execution.runner.run_try` around the try once its log file is open), what the
task writes to its standard output and error becomes log records of the logger
``squall.task``, so that they reach the try's log file (and the process's console handler)
through the same handlers, with the same secret masking
(:class:`~squall.secrets.masking.RedactingFilter`), as everything else the try logs:

- ``sys.stdout`` and ``sys.stderr`` are :class:`LogWriter` objects, as in Airflow 2
  (``StreamLogWriter``): a write that ends a line is one record, INFO for standard output
  and WARNING for standard error; a blank line is not logged. A warning
  (``warnings.warn``) is shown as a WARNING record of the same logger, as Airflow shows it
  through ``sys.stderr`` (whether or not the process had ``logging.captureWarnings`` on).
- File descriptors 1 and 2 are the write end of a pipe, so that what a subprocess (which
  inherits them) or C code writes there is captured as well: a thread reads the pipe and
  logs each line at INFO, whichever of the two descriptors it came from. Bytes that are not
  UTF-8 are kept as backslash escapes.
- Handlers that wrote to descriptor 1 or 2 (the console) write to a duplicate of the
  original descriptor meanwhile, so they still reach the console and never feed the pipe.
- Order: before one of the root logger's handlers takes a record, whatever the pipe holds is
  logged first, so a subprocess's output precedes what the task logs after the subprocess
  ended. A write to ``sys.stdout`` or ``sys.stderr`` made while this thread is already
  logging one of these records (a handler that writes to them) goes to the console
  unchanged, so nothing loops.

Everything is put back when the try ends: the streams, the descriptors (a process the try
left running keeps the pipe; what it writes after the end is lost), the handlers.
"""

from __future__ import annotations

import io
import logging
import os
import select
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

#: the logger whose records carry what the task wrote (Airflow's are ``airflow.task``'s)
OUTPUT_LOGGER = "squall.task"
#: a line longer than this is logged in pieces of this size
MAX_LINE = 64 * 1024
#: how much of the pipe is read at a time (its capacity, by default)
PIPE_READ = 64 * 1024
#: how long a thread about to log waits for the pipe reader to finish logging what it has
#: read (it only gives up so that a handler failing under another lock cannot deadlock).
#: Logging a full pipe's lines takes well under a second, but many times that on a machine
#: whose cores are all busy: a shorter wait there logs the record before the output that
#: came first.
DRAIN_WAIT = 10.0

_STD_FDS = (1, 2)


class LogWriter(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` while a try runs: text in, records out (at
    ``level``), a line per record; a partial line waits for its end, for :meth:`flush`, or
    for the end of the try. Each thread has its own partial line."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, capture: OutputCapture, level: int, fd: int,
                 original: IO[str] | None) -> None:
        super().__init__()
        self._capture = capture
        self._level = level
        self._fd = fd
        self._original = original
        self._partial: dict[int, str] = {}
        self._buffer: IO[bytes] | None = None

    @property
    def buffer(self) -> IO[bytes]:
        """Bytes written here go to the descriptor (the pipe), and so to the log too."""
        if self._buffer is None:
            self._buffer = open(self._fd, "wb", buffering=0, closefd=False)  # noqa: SIM115
        return self._buffer

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd  # the pipe while the try runs: a subprocess given it is captured

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not self._capture.active:  # kept by someone after the try: the old stream
            return self._original.write(text) if self._original is not None else len(text)
        ident = threading.get_ident()
        pending = self._partial.pop(ident, "") + text
        if pending.endswith("\n") or len(pending) >= MAX_LINE:
            self._capture.log_text(self._level, pending)
        elif pending:
            self._partial[ident] = pending
        return len(text)

    def flush(self) -> None:
        if not self._capture.active:
            if self._original is not None:
                self._original.flush()
            return
        pending = self._partial.pop(threading.get_ident(), "")
        if pending:
            self._capture.log_text(self._level, pending)
        self._capture.drain()

    def finish(self) -> None:
        """Log every thread's partial line (the try is ending)."""
        while self._partial:
            _ident, pending = self._partial.popitem()
            self._capture.log_text(self._level, pending)
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


class _DrainFirst(logging.Filter):
    """On a root handler while a try runs: log the pipe's pending output before the record."""

    def __init__(self, capture: OutputCapture) -> None:
        super().__init__()
        self._capture = capture

    def filter(self, record: logging.LogRecord) -> bool:
        self._capture.drain()
        return True


class OutputCapture:
    """The capture of one try's output (see the module docstring): :meth:`start`, then
    :meth:`stop` in the same thread."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(OUTPUT_LOGGER)
        self.active = False
        self._owner = os.getpid()
        self._lock = threading.Lock()  # held while pipe bytes are read and logged
        self._local = threading.local()  # .busy: this thread is logging captured output
        self._partial = b""  # the pipe's last line, not ended yet
        self._eof = False
        self._read_fd = self._stop_r = self._stop_w = -1
        self._saved: dict[int, int | None] = {}  # 1, 2 -> a duplicate of the original
        self._consoles: list[tuple[logging.StreamHandler[Any], Any, IO[str]]] = []
        self._filtered: list[logging.Handler] = []
        self._filter = _DrainFirst(self)
        self._streams: tuple[Any, Any] = (None, None)
        self._writers: tuple[LogWriter, LogWriter] | None = None
        self._showwarning: Any = None
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ start, stop

    def start(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:  # a closed or broken stream: nothing to keep
                pass
        self._read_fd, write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._stop_r, self._stop_w = os.pipe()
        for fd in _STD_FDS:
            try:
                self._saved[fd] = os.dup(fd)
            except OSError:  # not open: it is closed again at the end
                self._saved[fd] = None
        self._point_consoles_at_saved()
        for fd in _STD_FDS:
            os.dup2(write_fd, fd)  # inheritable: subprocesses write into the pipe
        os.close(write_fd)
        self._streams = (sys.stdout, sys.stderr)
        self._writers = (LogWriter(self, logging.INFO, 1, sys.stdout),
                         LogWriter(self, logging.WARNING, 2, sys.stderr))
        sys.stdout, sys.stderr = self._writers
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._show_warning
        self.active = True
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._filter)
            self._filtered.append(handler)
        self._reader = threading.Thread(target=self._read_loop, name="squall-task-output",
                                        daemon=True)
        self._reader.start()

    def stop(self) -> None:
        assert self._writers is not None
        try:
            for writer in self._writers:
                writer.finish()
        finally:
            if sys.stdout is self._writers[0]:
                sys.stdout = self._streams[0]
            if sys.stderr is self._writers[1]:
                sys.stderr = self._streams[1]
            if warnings.showwarning == self._show_warning:
                warnings.showwarning = self._showwarning
            for fd in _STD_FDS:  # the try's processes that are left keep the pipe
                saved = self._saved[fd]
                if saved is None:
                    os.close(fd)
                else:
                    os.dup2(saved, fd)
            os.write(self._stop_w, b"x")
            if self._reader is not None:
                self._reader.join()
            self._drain_now(-1, whole=True)
            self.active = False
            for handler in self._filtered:
                handler.removeFilter(self._filter)
            self._restore_consoles()
            for fd in (self._read_fd, self._stop_r, self._stop_w,
                       *(s for s in self._saved.values() if s is not None)):
                os.close(fd)
            self._read_fd = self._stop_r = self._stop_w = -1
            self._saved.clear()

    def _point_consoles_at_saved(self) -> None:
        """Handlers that write to descriptor 1 or 2 write to its duplicate meanwhile."""
        for handler in _all_handlers():
            if not isinstance(handler, logging.StreamHandler):
                continue
            try:
                fd = handler.stream.fileno()
            except Exception:  # not a file (a StringIO, pytest's capture): left alone
                continue
            saved = self._saved.get(fd)
            if fd not in _STD_FDS or saved is None:
                continue
            encoding = getattr(handler.stream, "encoding", None) or "utf-8"
            console = open(saved, "w", buffering=1, encoding=encoding,  # noqa: SIM115
                           errors="backslashreplace", closefd=False)
            old = handler.setStream(console)
            self._consoles.append((handler, old, console))

    def _restore_consoles(self) -> None:
        for handler, old, console in self._consoles:
            handler.acquire()
            try:
                if handler.stream is console:
                    handler.setStream(old)
            finally:
                handler.release()
            console.close()
        self._consoles.clear()

    # ------------------------------------------------------------------ logging

    def log_text(self, level: int, text: str) -> None:
        """Log what the task wrote to ``sys.stdout`` / ``sys.stderr``, after the pipe's
        pending output; a record per write that ends a line (blank: not logged)."""
        if getattr(self._local, "busy", False):  # written by a handler of one of ours
            self._to_console(level, text)
            return
        self.drain()
        text = text[:-1] if text.endswith("\n") else text
        if not text.strip():
            return
        self._local.busy = True
        try:
            self._log(level, text.removesuffix("\r"))
        finally:
            self._local.busy = False

    def _log(self, level: int, text: str) -> None:
        # a record made here: the caller's frame (which findCaller would look for) is not
        # the task's code anyway, and a task that prints much pays for no stack walks
        if self.logger.isEnabledFor(level):
            self.logger.handle(self.logger.makeRecord(
                self.logger.name, level, "(task output)", 0, text, (), None))

    def _show_warning(self, message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: IO[str] | None = None,
                      line: str | None = None) -> None:
        if file is not None:  # shown somewhere in particular: there
            self._showwarning(message, category, filename, lineno, file, line)
            return
        self.log_text(logging.WARNING,
                      warnings.formatwarning(message, category, filename, lineno, line))

    def _to_console(self, level: int, text: str) -> None:
        saved = self._saved.get(2 if level >= logging.WARNING else 1)
        if saved is not None:
            try:
                os.write(saved, text.encode("utf-8", "backslashreplace"))
            except OSError:
                pass

    def drain(self) -> None:
        """Log what the pipe holds now, its last line even if not ended (from any thread,
        before it logs something: a subprocess that wrote it has most likely ended)."""
        self._drain_now(DRAIN_WAIT, whole=True)

    def _drain_now(self, wait: float, whole: bool = False) -> None:
        if (self._read_fd < 0 or os.getpid() != self._owner
                or getattr(self._local, "busy", False)):
            return  # a process the task forked, or this thread is logging already
        self._local.busy = True
        try:
            if not self._lock.acquire(timeout=wait):
                return
            try:
                self._read_available()
                if whole and self._partial:  # the last line, without its end
                    self._log_pipe_line(self._partial)
                    self._partial = b""
            finally:
                self._lock.release()
        finally:
            self._local.busy = False

    def _read_available(self) -> None:
        """Log the complete lines of what the pipe holds: one read, so 64 KiB at most (a
        pipe's capacity; a process that writes without end must not keep the lock, nor the
        end of the try wait)."""
        if self._eof:
            return
        try:
            chunk = os.read(self._read_fd, PIPE_READ)
        except OSError:  # nothing for now (BlockingIOError), or closed
            return
        if not chunk:
            self._eof = True
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._log_pipe_line(line)
        while len(self._partial) >= MAX_LINE:
            self._log_pipe_line(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]

    def _log_pipe_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "backslashreplace").removesuffix("\r")
        if text.strip():
            self._log(logging.INFO, text)

    def _read_loop(self) -> None:
        """The pipe's reader: logs what comes, as it comes, until :meth:`stop`."""
        while not self._eof:
            try:
                ready, _, _ = select.select([self._read_fd, self._stop_r], [], [])
            except InterruptedError:
                continue
            if self._stop_r in ready:
                return
            try:
                self._drain_now(-1)
            except Exception as exc:  # a handler that raises: the console hears of it
                self._to_console(logging.ERROR, f"squall: the task's output was not "
                                 f"logged: {type(exc).__name__}: {exc}\n")


def _all_handlers() -> Iterator[logging.Handler]:
    yield from logging.getLogger().handlers
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            yield from logger.handlers


_ACTIVE: list[OutputCapture] = []


@contextmanager
def capture_task_output(enabled: bool = True) -> Iterator[None]:
    """Capture the try's output into its log for the ``with`` block (see the module
    docstring); nothing when not ``enabled`` or already capturing."""
    if not enabled or _ACTIVE:
        yield
        return
    capture = OutputCapture()
    capture.start()
    _ACTIVE.append(capture)
    try:
        yield
    finally:
        _ACTIVE.remove(capture)
        capture.stop()
