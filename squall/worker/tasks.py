"""The one Celery task Squall defines, where its supervisor runs, and the worker's hooks.

:func:`run_task` is registered as ``squall.run_task`` by
:func:`squall.worker.register_tasks` (a worker's app). It is deliberately thin: it validates the
message into a :class:`~squall.common.payload.TaskRunCommand` (anything else is refused and
logged, never executed) and hands it to the worker's :class:`WorkerRuntime` (made once when
the worker app is built, with the try launcher chosen from the settings then:
:mod:`squall.worker.launcher`). In a pool process's main thread that process is the
LocalTaskJob supervisor (:mod:`squall.worker.supervisor`, ADR 9) on its long-lived engine;
elsewhere :func:`execute_forked` forks one, waits for it and raises
:class:`SupervisorCrashed` when it died without reporting. The supervisor's summary is
returned but not stored (the task ignores its result: the database holds the outcome); a
pool process that dies, or an exception out of the task, makes Celery store FAILURE
(``store_errors_even_if_ignored``), which the scheduler handles for a task instance still
QUEUED.

:func:`install_worker_hooks` connects Celery signals (when a worker app is built, never at
import): ``worker_init`` preloads the modules every task process needs, in the worker parent
before it forks its pool; ``worker_process_init`` disposes of database engines a pool process
inherited, so no pooled connection is ever shared across a fork, and forks the pool process's
fork server (:mod:`squall.worker.fork_server`, ADR 21); ``worker_process_shutdown`` closes
the fork server and the pool process's own engines.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import signal
import threading
import weakref
from types import FrameType
from typing import Any

from celery import Task
from celery.signals import (
    worker_before_create_process,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from sqlalchemy import Engine

from squall.common.db import make_engine
from squall.common.errors import PayloadError, SupervisorCrashed
from squall.common.metrics import Metrics, metrics_from_settings
from squall.common.payload import TaskRunCommand
from squall.common.procutil import flush_std_streams, set_parent_death_signal
from squall.common.settings import Settings
from squall.worker.launcher import LaunchKind, TryLauncher
from squall.worker.supervisor import LocalTaskJob

log = logging.getLogger(__name__)

#: the longest reason a refusal carries back in its result and log line
MAX_REASON = 500


PRELOADED_MODULES = (
    "pendulum",
    "jinja2",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "squall.sdk.dag",
    "squall.dag_processing.dagbag",
    "squall.sdk.decorators",
    "squall.common.models",
    "squall.sdk.operators",
    "squall.sdk.operators.bash",
    "squall.sdk.operators.python",
    "squall.sdk.operators.empty",
    "squall.sdk.sensors",
    "squall.dag_processing.serialization",
    "squall.sdk.taskgroup",
    "squall.sdk.templating",
    "squall.execution.xcom",
    "squall.execution.runner",
    "squall.worker.task_process",
)


def run_task(self: Task, message: Any) -> dict[str, Any]:
    """Run one try of one task instance, as ``message`` (a task-run command) asks."""
    celery_task_id = str(self.request.id)
    try:
        command = TaskRunCommand.from_message(message)
    except PayloadError as exc:
        reason = str(exc)[:MAX_REASON]
        log.error("Celery task %s: refused: %s", celery_task_id, reason)
        return {"status": "refused", "reason": reason}
    log.info("Celery task %s: TaskInstance %s try %d received", celery_task_id, command.key,
             command.try_number)
    return worker_runtime(self.app).execute(command, celery_task_id=celery_task_id,
                                            worker_name=str(self.request.hostname))


# --------------------------------------------------------------------------- the supervisor


class WorkerRuntime:
    """What a worker's process keeps across tries, made once when the worker app is built
    (:func:`squall.worker.build_worker_app`) and kept on the app (:func:`worker_runtime`):
    the settings, the try launcher chosen from them (:class:`~squall.worker.launcher.
    TryLauncher`: fork server, pool fork or new interpreter), and, made on first use in the
    process that uses them (a pool process, after the fork), its long-lived database engine
    and metrics client.

    Celery calls the task and the worker signal handlers with no object of Squall's; the
    app is the one place they find this object (the signal handlers through
    ``celery.current_app``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.launcher = TryLauncher(settings)
        #: a threaded pool's: the supervisor it forks per try has no fork server
        self._forked_launcher = self.launcher.without_fork_server()
        self._engines: dict[int, Engine] = {}  # by pid: a forked process makes its own
        self._metrics: Metrics | None = None

    def engine(self) -> Engine:
        """This process's long-lived engine (made on first use)."""
        engine = self._engines.get(os.getpid())
        if engine is None:
            engine = self._engines[os.getpid()] = supervisor_engine(self.settings)
        return engine

    def metrics(self) -> Metrics:
        if self._metrics is None:
            self._metrics = metrics_from_settings(self.settings)
        return self._metrics

    def execute(self, command: TaskRunCommand, *, celery_task_id: str,
                worker_name: str) -> dict[str, Any]:
        """Supervise ``command`` and return the supervisor's summary.

        In a pool process's main thread (the prefork and solo pools) this process is the
        supervisor, on its long-lived engine. Elsewhere (a threaded pool, where signals
        cannot be handled) a supervisor is forked: :func:`execute_forked`.
        """
        if threading.current_thread() is not threading.main_thread():
            return execute_forked(self.settings, self._forked_launcher, command,
                                  celery_task_id=celery_task_id, worker_name=worker_name)
        return LocalTaskJob(command, settings=self.settings, engine=self.engine(),
                            celery_task_id=celery_task_id, worker_name=worker_name,
                            metrics=self.metrics(), launcher=self.launcher).run().as_dict()

    def start_fork_server(self) -> None:
        """Fork this pool process's fork server now, while the process is still what the
        worker parent forked: the server then shares nearly all its pages with the parent
        and the other slots, rather than holding copies of what the pool process wrote
        before its first try. A server that dies is replaced on the next try."""
        self.launcher.server(self.engine())

    def close(self) -> None:
        """Close the fork server and this process's engines (at pool process shutdown)."""
        self.launcher.close()
        engine = self._engines.pop(os.getpid(), None)
        if engine is not None:
            engine.dispose()


def worker_runtime(app: Any) -> WorkerRuntime:
    """``app``'s worker runtime (made from ``app.squall_settings`` when the app was not
    built by :func:`~squall.worker.build_worker_app`, e.g. Flower's)."""
    runtime: WorkerRuntime | None = getattr(app, "squall_runtime", None)
    if runtime is None:
        runtime = app.squall_runtime = WorkerRuntime(app.squall_settings)
    return runtime


def supervisor_engine(settings: Settings) -> Engine:
    """A supervisor's long-lived engine: one connection, two more at a pinch."""
    db = settings.database
    return make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=2,
                       pool_recycle=db.sql_alchemy_pool_recycle,
                       pool_pre_ping=db.sql_alchemy_pool_pre_ping)


def execute_forked(settings: Settings, launcher: TryLauncher, command: TaskRunCommand, *,
                   celery_task_id: str, worker_name: str) -> dict[str, Any]:
    """Fork a supervisor for ``command``, wait for it, and return its summary.

    Raises :class:`SupervisorCrashed` when the supervisor died without reporting. A SIGTERM
    to this process while it waits is passed on to the supervisor.
    """
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os._exit(_supervisor_main(settings, launcher, command, celery_task_id, worker_name,
                                  write_fd, parent))
    os.close(write_fd)
    try:
        status = _wait_forwarding_sigterm(pid)
        os.set_blocking(read_fd, False)
        data = b""
        try:
            while chunk := os.read(read_fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
    finally:
        os.close(read_fd)
    try:
        summary: dict[str, Any] = json.loads(data)
    except ValueError:
        code = os.waitstatus_to_exitcode(status)
        raise SupervisorCrashed(
            f"TaskInstance {command.key}: try {command.try_number}: the supervisor (pid {pid}) "
            f"exited with {f'signal {-code}' if code < 0 else f'code {code}'} without "
            "reporting") from None
    return summary


def _wait_forwarding_sigterm(pid: int) -> int:
    def forward(_signum: int, _frame: FrameType | None) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread (a threaded pool): nothing to forward
        previous = None
    try:
        return os.waitpid(pid, 0)[1]
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _supervisor_main(settings: Settings, launcher: TryLauncher, command: TaskRunCommand,
                     celery_task_id: str, worker_name: str, write_fd: int, parent: int) -> int:
    """The forked supervisor's body; returns its exit code (never raises)."""
    try:
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent:
            return 1
        engine = supervisor_engine(settings)
        try:
            result = LocalTaskJob(command, settings=settings, engine=engine,
                                  celery_task_id=celery_task_id, worker_name=worker_name,
                                  child_close_fds=(write_fd,),
                                  metrics=metrics_from_settings(settings),
                                  launcher=launcher).run()
        finally:
            engine.dispose()
        os.write(write_fd, json.dumps(result.as_dict()).encode("utf-8"))
        return 0
    except BaseException:
        log.exception("TaskInstance %s: try %d: supervisor failed", command.key,
                      command.try_number)
        return 1
    finally:
        flush_std_streams()


def preload_modules(names: tuple[str, ...] = PRELOADED_MODULES) -> None:
    """Import what task processes need, so forked pool processes start with it loaded."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("Worker: cannot preload %s: %s", name, exc)


#: engines that existed when this process froze its heap (:func:`freeze_heap`):
#: ``gc.get_objects()`` no longer lists them, so a forked child finds them here
_frozen_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def freeze_heap() -> None:
    """Move every object this process holds into the collector's permanent generation
    (``gc.freeze()``), so that no later collection here or in a forked child walks them and
    writes to their pages: a forked pool process then shares those pages with its parent
    instead of copying them. Engines that exist now are remembered for
    :func:`dispose_inherited_engines`."""
    gc.collect()
    _frozen_engines.update(obj for obj in gc.get_objects() if isinstance(obj, Engine))
    gc.freeze()


def dispose_inherited_engines() -> int:
    """Drop the connection pools of every SQLAlchemy engine this (just forked) process
    inherited, without closing the parent's connections; returns how many there were.

    Looks only at objects the collector still tracks (those made since the parent's
    :func:`freeze_heap`) and at the engines it remembered: walking the frozen heap would
    write to every object's reference count and copy the pages a fork shares."""
    engines = {id(obj): obj for obj in gc.get_objects() if isinstance(obj, Engine)}
    engines.update((id(engine), engine) for engine in list(_frozen_engines))
    for engine in engines.values():
        engine.dispose(close=False)
    return len(engines)


def _on_worker_init(**_: Any) -> None:
    preload_modules()
    freeze_heap()


def _on_worker_before_create_process(**_: Any) -> None:
    freeze_heap()


def _on_worker_process_init(**_: Any) -> None:
    count = dispose_inherited_engines()
    if count:
        log.debug("Worker: disposed of %d inherited database engine(s)", count)
    _on_worker_process_init_runtime()


def _current_runtime() -> WorkerRuntime | None:
    """The worker runtime of Celery's current app, when it is a Squall worker's."""
    from celery import current_app

    if getattr(current_app, "squall_settings", None) is None:
        return None
    return worker_runtime(current_app)


def _on_worker_process_init_runtime() -> None:
    runtime = _current_runtime()
    if runtime is not None and runtime.launcher.kind == LaunchKind.FORK_SERVER:
        runtime.start_fork_server()


def _on_worker_process_shutdown(**_: Any) -> None:
    runtime = _current_runtime()
    if runtime is not None:
        runtime.close()


def install_worker_hooks() -> None:
    """Connect the worker signal handlers (idempotent)."""
    worker_process_shutdown.connect(_on_worker_process_shutdown, weak=False,
                                    dispatch_uid="squall.worker.close_engines")
    worker_init.connect(_on_worker_init, weak=False, dispatch_uid="squall.worker.preload")
    worker_before_create_process.connect(_on_worker_before_create_process, weak=False,
                                         dispatch_uid="squall.worker.freeze_heap")
    worker_process_init.connect(_on_worker_process_init, weak=False,
                                dispatch_uid="squall.worker.dispose_engines")
