"""A fork server per pool process: it forks the task processes (``[celery] worker_fork_server``).

Every fork write-protects all of the forking process's anonymous pages; the forking
process then takes a page fault on the first write to each page of its working set. A
pool process writes much (Celery, SQLAlchemy, the start and outcome transactions), so
forking the task process from it costs it thousands of minor faults per try. The fork
server is a small process forked from the pool process once (at ``worker_process_init``:
:meth:`squall.worker.tasks.WorkerRuntime.start_fork_server`; else on the first try), which
writes almost nothing between forks: it takes those faults instead, and the pool process
keeps its pages.

The pool process (:class:`ForkServer`) sends a request on an AF_UNIX socket pair: the
task's :class:`~squall.worker.task_process.TaskProcessSpec` and the kill grace, with two
descriptors (``socket.send_fds``): the task process's end of its channel to the supervisor
and the write end of a *status pipe*. The server (:func:`serve`) loads the task from its own
:class:`~squall.worker.dag_file_cache.DagFileCache` (so DAG-file code runs in the server, not
in the pool process), forks the task process (the child body of
:meth:`~squall.worker.children.TaskProcessControl.fork`) and answers with its pid. It reaps its
children and writes each one's exit code (4 bytes) to that task's status pipe, then closes
it; the pool process reads it instead of ``waitpid``. An end of file without a code means the
server died: the task process is treated as one that died without an outcome.

The server dies with its pool process (``PR_SET_PDEATHSIG`` SIGKILL; its task processes then
get their own parent-death SIGTERM), ignores SIGTERM and SIGINT (a signal to the worker's
process group is the pool process's to handle), is not a child subreaper (a task process's
orphans go to the pool process, whose sweep ends them: ADR 12), is replaced on next use when
it died, and exits when the pool process closes its socket (``worker_process_shutdown``).
The pool process's :class:`ForkServer` is its launcher's (:mod:`squall.worker.launcher`),
made when the worker started.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import select
import signal
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import Engine

from squall.common.errors import TaskLoadError
from squall.common.procutil import flush_std_streams, set_parent_death_signal
from squall.common.settings import Settings
from squall.worker.children import EXIT_CODE, fork_task_process
from squall.worker.dag_file_cache import DagFileCache
from squall.worker.task_process import TaskProcessSpec

log = logging.getLogger(__name__)

_MAX_REQUEST = 1 << 16


#: blocked across the server's fork until it ignores them
_BLOCKED = {signal.SIGTERM, signal.SIGINT}


class ForkServerError(OSError):
    """The fork server could not fork the task process (it died, or the fork failed)."""


class ForkServer:
    """The pool process's handle on its fork server (started at ``worker_process_init``, or
    on first use)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._owner = 0  # the process that started it (a forked child must not use it)
        self._key: tuple[int, int] | None = None  # id(settings), id(engine)

    def ensure(self, settings: Settings, engine: Engine) -> int:
        """Start the server unless one for these settings and engine is alive; its pid."""
        key = (id(settings), id(engine))
        if self.pid is not None and (self._owner != os.getpid() or self._key != key
                                     or not self._alive()):
            self.close()
        if self.pid is None:
            self._start(settings, engine)
            self._key = key
        assert self.pid is not None
        return self.pid

    def _alive(self) -> bool:
        assert self.pid is not None
        try:
            pid, _status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    def _start(self, settings: Settings, engine: Engine) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        flush_std_streams()
        # a SIGTERM or SIGINT to the worker's group must not run the pool process's handlers
        # in the server before it ignores them
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # the fork server
            code = 1
            try:
                ours.close()
                code = serve(settings, engine, theirs, parent, mask)
            except BaseException:
                log.exception("fork server failed")
            finally:
                flush_std_streams()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        theirs.close()
        self.pid, self._sock, self._owner = pid, ours, parent
        log.debug("fork server %d started", pid)

    def fork_task(self, spec: TaskProcessSpec, kill_grace: float, channel_fd: int,
                  status_fd: int) -> int:
        """Have the server fork the task process of ``spec``; its pid. Raises
        :class:`ForkServerError` when the server did not answer with one."""
        if self._sock is None:
            raise ForkServerError("no fork server")
        try:
            socket.send_fds(self._sock, [pickle.dumps((spec, kill_grace))],
                            [channel_fd, status_fd])
            reply = self._sock.recv(_MAX_REQUEST)
        except OSError as exc:
            self.close()
            raise ForkServerError(f"fork server gone: {exc}") from exc
        if len(reply) != EXIT_CODE.size:
            self.close()
            raise ForkServerError(f"fork server gone: {reply.decode(errors='replace')!r}"
                                  if reply else "fork server gone")
        (pid,) = EXIT_CODE.unpack(reply)
        if pid <= 0:
            raise ForkServerError("the fork server could not fork the task process")
        return pid

    def close(self) -> None:
        """Close the socket (the server exits on it) and reap the server, killing it if it
        does not exit in a moment."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        pid, self.pid = self.pid, None
        if pid is None or self._owner != os.getpid():
            return
        for _ in range(100):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            select.select([], [], [], 0.01)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


# --------------------------------------------------------------------------- the server


def serve(settings: Settings, engine: Engine, sock: socket.socket, parent: int,
          mask: Iterable[int] = ()) -> int:
    """The fork server's loop (in the forked server); its exit code. ``mask``: the signal
    mask to restore once SIGTERM and SIGINT are ignored."""
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:
        return 1
    gc.freeze()  # nothing inherited is ever walked (and so copied) by a collection here
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    engine.dispose(close=False)  # the pool process's connections stay the pool process's
    status: dict[int, int] = {}  # task pid -> write end of its status pipe
    own_fds = (sock.fileno(), wake_r, wake_w)
    server = _Server(settings, engine, sock, DagFileCache(), status, own_fds)
    while True:
        _reap(status)
        try:
            ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if sock.fileno() not in ready:
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_REQUEST, 2)
        except OSError:
            return 0
        if not data:  # the pool process closed its end
            for fd in fds:
                os.close(fd)
            return 0
        _handle(server, data, fds)


@dataclass(frozen=True)
class _Server:
    """What the server's loop keeps."""

    settings: Settings
    engine: Engine
    sock: socket.socket
    cache: DagFileCache  # the DAG files this server keeps imported
    status: dict[int, int]  # task pid -> write end of its status pipe
    own_fds: tuple[int, ...]


def _handle(server: _Server, data: bytes, fds: list[int]) -> None:
    settings, engine, sock, status = server.settings, server.engine, server.sock, server.status
    pid = -1
    channel: Connection | None = None
    try:
        spec, kill_grace = pickle.loads(data)
        channel_fd, status_fd = fds
        channel = Connection(channel_fd)
        loaded = _cached_task(settings, server.cache, spec)
        pid = fork_task_process(settings, engine, spec, kill_grace, loaded, channel=channel,
                                close_in_child=(*server.own_fds, *status.values(), status_fd))
        status[pid] = status_fd
    except Exception:
        log.exception("fork server: could not fork a task process")
        if channel is not None:
            channel.close()
        for fd in fds[1:] if channel is not None else fds:
            try:
                os.close(fd)
            except OSError:
                pass
    try:
        sock.send(EXIT_CODE.pack(pid))
    except OSError:
        pass


def _cached_task(settings: Settings, cache: DagFileCache, spec: TaskProcessSpec) -> Any:
    """The task from the server's DAG file cache, why it cannot be loaded, or None (the
    task process loads it itself: ``[celery] worker_cache_dag_files`` off)."""
    if not settings.celery.worker_cache_dag_files:
        return None
    try:
        return cache.load_task(settings, spec.dag_file, spec.key)
    except TaskLoadError as exc:
        return exc


def _reap(status: dict[int, int]) -> None:
    """Collect exited task processes and send each one's exit code down its status pipe."""
    while True:
        try:
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status.pop(pid, None)
        if fd is None:
            continue
        try:
            os.write(fd, EXIT_CODE.pack(os.waitstatus_to_exitcode(wstatus)))
        except OSError:
            pass
        os.close(fd)

