"""The supervisor's task process: starting it, talking to it, stopping it (ADR 9, ADR 12).

:class:`TaskProcessControl` forks the task process before the try starts (it waits for the
go-ahead on a socket pair, the *channel*, so its pid goes into the start transaction): by
the pool process's fork server (:mod:`squall.worker.fork_server`, ADR 21), which reaps it
and writes its exit code to a *status pipe* the supervisor reads instead of ``waitpid``, or
by the supervisor itself (the server off, or unable to fork; :func:`fork_task_process` is
the one child body for both), or starts it in a new interpreter (``python -m squall tasks
run ... --raw``, ``[core] execute_tasks_new_python_interpreter``) after the try started. It
then releases the waiting process (the go-ahead, or a SIGKILL before it ran anything of the
try), carries its messages (the outcome) and the supervisor's answers, and kills it: SIGTERM
to its process group, half a heartbeat at most, then SIGKILL, then reaped.
:class:`TaskProcessHandle` is a started task process, forked or not; the functions at the
end are the process-handling helpers.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from squall.common.procutil import flush_std_streams
from squall.common.settings import Settings
from squall.sdk.operators.base import BaseOperator
from squall.worker.task_process import (
    TaskLoadError,
    TaskProcessSpec,
    TryTermination,
    parent_death_sigterm,
    run_forked_task_process,
)
from squall.worker.try_writes import StartedTry

log = logging.getLogger(__name__)

#: a task process's exit code, as its fork server writes it to the status pipe
EXIT_CODE = struct.Struct("<i")


class TaskForker(Protocol):
    """What forks a task process for :meth:`TaskProcessControl.fork` (the fork server:
    :class:`squall.worker.fork_server.ForkServer`)."""

    def fork_task(self, spec: TaskProcessSpec, kill_grace: float, channel_fd: int,
                  status_fd: int) -> int: ...


class TaskProcessHandle:
    """A started task process: forked here (``popen`` and ``status_fd`` None), forked by the
    fork server (``status_fd``: the read end of its status pipe, which brings its exit code)
    or a new interpreter (``popen``)."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None, *,
                 status_fd: int | None = None) -> None:
        self.pid = pid
        self._popen = popen
        self.status_fd = status_fd
        self._status = b""
        self.returncode: int | None = None
        #: why it ended, when that is not its exit code (its fork server died)
        self.lost: str | None = None

    def poll(self) -> int | None:
        """The exit code (negative: the signal) once it has exited, else None."""
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.poll()
            elif self.status_fd is not None:
                self._read_status()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def _read_status(self) -> None:
        assert self.status_fd is not None
        try:
            while len(self._status) < EXIT_CODE.size:
                chunk = os.read(self.status_fd, EXIT_CODE.size - len(self._status))
                if not chunk:
                    break
                self._status += chunk
        except BlockingIOError:
            return
        if len(self._status) == EXIT_CODE.size:
            (self.returncode,) = EXIT_CODE.unpack(self._status)
        else:  # end of file without a code: the fork server died
            self.returncode = -signal.SIGKILL
            self.lost = (f"task process {self.pid} lost: its fork server died before it "
                         "reported an outcome")
        self.close()

    def describe_exit(self, code: int) -> str:
        return self.lost or describe_exit(code)

    def wait(self) -> int:
        """Block until it has exited; its exit code."""
        if self.status_fd is None:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        while self.poll() is None and self.status_fd is not None:
            select.select([self.status_fd], [], [])
        assert self.returncode is not None
        return self.returncode

    def close(self) -> None:
        """Close the status pipe (if any)."""
        if self.status_fd is not None:
            os.close(self.status_fd)
            self.status_fd = None


class TaskProcessControl:
    """The supervisor's side of the task process of one try (see the module docstring)."""

    def __init__(self, *, settings: Settings, engine: Engine, spec: TaskProcessSpec,
                 kill_grace: float) -> None:
        self._settings = settings
        self._engine = engine
        self._spec = spec  # job_id 0: a forked task process learns it from the go-ahead
        self.key = spec.key
        self.try_number = spec.try_number
        #: how long the task process may take to exit after SIGTERM before SIGKILL
        self.kill_grace = kill_grace
        self.channel: Connection | None = None  # to the forked task process
        self.status_fd: int | None = None  # read end of a new interpreter's status pipe
        self._recording = False

    # ----------------------------------------------------------------------- starting

    def fork(self, loaded: BaseOperator | TaskLoadError | None,
             close_in_child: Iterable[int | None],
             server: TaskForker | None = None) -> TaskProcessHandle:
        """Fork the task process, with its task ``loaded`` (from the pool process's DAG
        file cache) or loading it itself; it waits for :meth:`release` before it runs
        anything of the try. ``close_in_child``: the supervisor's descriptors the task
        process must not keep. With ``server`` (``[celery] worker_fork_server``) the fork
        server loads the task and forks the process (``loaded`` is not used); when the
        server cannot, the task process is forked here and loads its task itself."""
        ours, theirs = Pipe(duplex=True)
        self.channel = ours
        if server is not None:
            status_read, status_write = os.pipe()
            try:
                pid = server.fork_task(self._spec, self.kill_grace, theirs.fileno(),
                                       status_write)
            except OSError as exc:
                os.close(status_read)
                log.warning("TaskInstance %s: try %d: %s; forking the task process here",
                            self.key, self.try_number, exc)
                loaded = None  # DAG-file code does not run in the pool process
            else:
                os.set_blocking(status_read, False)
                theirs.close()
                return TaskProcessHandle(pid, status_fd=status_read)
            finally:
                os.close(status_write)
        try:
            pid = fork_task_process(self._settings, self._engine, self._spec, self.kill_grace,
                                    loaded, channel=theirs, parent_channel=ours,
                                    close_in_child=(*close_in_child, self.status_fd))
        except BaseException:
            self.close_channel()
            raise
        return TaskProcessHandle(pid)

    def release(self, child: TaskProcessHandle, started: StartedTry | None) -> None:
        """Tell the waiting task process to run the try (it gets ``started``), or, with
        None, stop it before it ran anything of the try (killed and reaped)."""
        if started is not None:
            assert self.channel is not None
            try:
                self.channel.send(started)
                log.info("TaskInstance %s: try %d: task process %d (forked)", self.key,
                         self.try_number, child.pid)
            except OSError as exc:  # it died already: the watch sees its exit and records it
                log.warning("TaskInstance %s: try %d: task process %d did not take the "
                            "go-ahead: %s", self.key, self.try_number, child.pid, exc)
            return
        self.close_channel()
        kill_group(child.pid, signal.SIGKILL)
        child.wait()

    def start_new_interpreter(self, job_id: int) -> TaskProcessHandle:
        """Start the task process of the started try ``job_id`` in a new interpreter, which
        records its own outcome; it writes one byte to a status pipe before it does."""
        status_read, status_write = os.pipe()
        os.set_blocking(status_read, False)
        self.status_fd = status_read
        spec = TaskProcessSpec(key=self.key, try_number=self.try_number, job_id=job_id,
                               dag_file=self._spec.dag_file, hostname=self._spec.hostname,
                               status_fd=status_write)
        try:
            popen = subprocess.Popen(
                raw_task_argv(self._settings, spec), env=raw_task_env(),
                stdin=subprocess.DEVNULL, process_group=0, close_fds=True,
                pass_fds=(status_write,), preexec_fn=parent_death_sigterm,
            )
            log.info("TaskInstance %s: try %d: task process %d (new interpreter)",
                     self.key, self.try_number, popen.pid)
            return TaskProcessHandle(popen.pid, popen)
        finally:
            os.close(status_write)

    # ----------------------------------------------------------------------- talking

    def receive(self) -> tuple[str, Any] | None:
        """A message the forked task process sent (an outcome, a load error), if one is
        waiting; it then waits for :meth:`answer`. The channel is closed at its end."""
        channel = self.channel
        if channel is None or not channel.poll():
            return None
        try:
            message: tuple[str, Any] = channel.recv()
        except (EOFError, OSError):
            self.close_channel()
            return None
        self._recording = True
        return message

    def answer(self, won: bool) -> None:
        """Whether the message was written (it waits for this before its callbacks)."""
        try:
            if self.channel is not None:
                self.channel.send(won)
        except OSError:
            pass  # it died meanwhile; the outcome is written all the same

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def close_status_pipe(self) -> None:
        if self.status_fd is not None:
            os.close(self.status_fd)
            self.status_fd = None

    def is_recording(self) -> bool:
        """Whether the task process said it is recording its outcome (so a changed state
        is its doing, and it is finishing: callbacks, then exit)."""
        if not self._recording and self.status_fd is not None:  # a new interpreter
            try:
                self._recording = bool(os.read(self.status_fd, 64))
            except BlockingIOError:
                pass
        return self._recording

    # ----------------------------------------------------------------------- stopping

    def kill(self, child: TaskProcessHandle, wait: Callable[[float], None]) -> None:
        """SIGTERM the task process's group, SIGKILL after the grace period, reap it;
        ``wait(seconds)`` sleeps until it exits or the time passes."""
        kill_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        while child.poll() is None and time.monotonic() < deadline:
            wait(min(deadline - time.monotonic(), 0.5))
        if child.poll() is None:
            log.warning("TaskInstance %s: task process %d still alive %.1f s after SIGTERM; "
                        "sending SIGKILL", self.key, child.pid, self.kill_grace)
            kill_group(child.pid, signal.SIGKILL)
            while child.poll() is None:
                wait(0.5)
        kill_group(child.pid, signal.SIGKILL)  # whatever it left behind in its group

    def end_if_running(self, child: TaskProcessHandle) -> None:
        """End ``child`` as :meth:`kill` does if it still runs (the try left it running),
        and close its status pipe."""
        if child.poll() is None:
            self.close_channel()
            log.warning("TaskInstance %s: try %d: task process %d still running after the "
                        "try; ending it", self.key, self.try_number, child.pid)

            def wait(seconds: float) -> None:
                fds = [child.status_fd] if child.status_fd is not None else []
                select.select(fds, [], [], max(seconds, 0.0))

            self.kill(child, wait)
        child.close()


# --------------------------------------------------------------------------- process handling


def fork_task_process(settings: Settings, engine: Engine, spec: TaskProcessSpec,
                      kill_grace: float, loaded: BaseOperator | TaskLoadError | None, *,
                      channel: Connection, close_in_child: Iterable[int | None],
                      parent_channel: Connection | None = None) -> int:
    """Fork the task process of ``spec`` (from a pool process, or from its fork server);
    its pid. It talks to its supervisor on ``channel``, which is closed here once forked;
    ``parent_channel`` (the supervisor's end) and ``close_in_child`` are closed in it."""
    try:
        # SIGTERM stays blocked across the fork until the child has its own handlers
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            raise
        if pid == 0:  # the task process
            code = 1
            try:
                if parent_channel is not None:
                    parent_channel.close()
                termination = become_task_process(kill_grace, engine, close_in_child)
                code = run_forked_task_process(settings, spec, channel, engine, loaded,
                                               termination)
            except BaseException:
                log.exception("TaskInstance %s: try %d: task process failed", spec.key,
                              spec.try_number)
            finally:
                flush_std_streams()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it first
        return pid
    finally:
        channel.close()


def become_task_process(kill_grace: float, engine: Engine,
                        close_in_child: Iterable[int | None]) -> TryTermination:
    """In the forked child: own process group, SIGTERM ending the try and its processes
    (:class:`TryTermination`), no inherited fds or pooled database connections; the
    garbage collector leaves inherited objects alone (a full collection would touch,
    and so copy, every page the parent shares with this process: tens of milliseconds)."""
    gc.freeze()
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    termination = TryTermination(kill_grace / 2)
    termination.install()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in close_in_child:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    engine.dispose(close=False)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    return termination



def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"task process exited with signal {signal.Signals(-code).name}"
        except ValueError:
            return f"task process exited with signal {-code}"
    return f"task process exited with code {code}"


def kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def raw_task_argv(settings: Settings, spec: TaskProcessSpec) -> list[str]:
    """``python -m squall tasks run ... --raw``: this process in a new interpreter
    (``[core] execute_tasks_new_python_interpreter``); the settings file, if any, goes too."""
    config = sorted({origin[5:] for origin in settings.sources.values()
                     if origin.startswith("file ")})
    argv = [sys.executable, "-m", "squall"]
    if config:
        argv += ["--config", config[0]]
    argv += ["tasks", "run", spec.key.dag_id, spec.key.task_id, spec.key.run_id,
             "--try", str(spec.try_number), "--job-id", str(spec.job_id),
             "--dag-file", spec.dag_file, "--hostname", spec.hostname, "--raw"]
    if spec.status_fd is not None:
        argv += ["--status-fd", str(spec.status_fd)]
    return argv


def raw_task_env() -> dict[str, str]:
    """The environment for :func:`raw_task_argv`: this one, with Squall importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env
