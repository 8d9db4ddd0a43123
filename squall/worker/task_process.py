"""The task process: the child a LocalTaskJob supervisor starts to run one try.

Forked (the default, ADR 9): :func:`run_forked_task_process` gets its task from the
supervisor's :class:`DagFileCache` (or imports the DAG file itself), waits for the
go-ahead (:class:`StartedTry`: the try started, with its run and ``max_tries``), hands the
task to :func:`squall.execution.runner.run_try`, and sends the outcome back for the supervisor
to write; it opens a database connection only when the task itself needs one (XCom, skips).
In a new interpreter (``squall tasks run ... --raw``, with ``[core]
execute_tasks_new_python_interpreter``): :func:`run_task_process` checks that the task
instance is RUNNING under its job, imports the DAG file and records its own outcome. A DAG
file or task that cannot be loaded is recorded as a failed try (retried per ``retries``)
with a reason naming the file.

:func:`record_failure` is also how the supervisor records a try whose task process died; the
process-handling helpers at the end (exit descriptions, process groups, pidfds, the parent
death signal) are what the supervisor uses to watch and stop a task process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.errors import PayloadError, TaskLoadError
from squall.common.models import DagRun, TaskInstance, TaskInstanceKey, utcnow
from squall.common.payload import DAGS_FOLDER_ROOT, EXAMPLES_ROOT, resolve_dag_file
from squall.common.procutil import (
    end_descendants,
    flush_std_streams,
    set_child_subreaper,
    set_parent_death_signal,
)
from squall.common.settings import Settings
from squall.common.state import TaskInstanceState
from squall.dag_processing.dagbag import load_file
from squall.dag_processing.sync import load_serialized_dags
from squall.execution.runner import (
    OutcomeKind,
    OutcomeRecord,
    TryOutcome,
    TryResult,
    log_written,
    record_outcome,
    run_try,
    safe_on_kill,
    task_log_handler,
    task_log_path,
)
from squall.sdk.dag import DAG
from squall.sdk.dag_defaults import DagDefaults
from squall.sdk.examples import EXAMPLES_FOLDER
from squall.sdk.operators.base import BaseOperator

log = logging.getLogger(__name__)

#: ``state_reason`` is a 2000-character column
MAX_REASON = 2000

EXIT_OK = 0  # the try ran (or could not be loaded) and its outcome was recorded
EXIT_NOT_OURS = 3  # the task instance is no longer running under this job: nothing done
#: the longest a supervisor waits for its task process to exit after SIGTERM (see
#: :func:`kill_grace`: never more than half a heartbeat)
KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class TaskProcessSpec:
    """What a task process needs to know, beyond the settings."""

    key: TaskInstanceKey
    try_number: int
    job_id: int
    dag_file: str
    hostname: str
    #: a pipe to the supervisor: one byte is written just before the outcome is recorded
    status_fd: int | None = None

    def notify_recording(self) -> None:
        if self.status_fd is not None:
            try:
                os.write(self.status_fd, b"R")
            except OSError:
                pass


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


def run_task_process(settings: Settings, spec: TaskProcessSpec) -> int:
    """Run the try described by ``spec`` in this process; returns the exit code to use.

    Opens its own database engine (never one inherited through a fork) and disposes of it.
    SIGTERM ends the try and every process it started (:class:`TryTermination`).
    """
    termination = TryTermination(kill_grace_for(settings.scheduler.job_heartbeat_sec) / 2)
    termination.install()
    db = settings.database
    engine = make_engine(settings.sql_alchemy_conn, pool_size=2, max_overflow=2,
                         pool_recycle=db.sql_alchemy_pool_recycle,
                         pool_pre_ping=db.sql_alchemy_pool_pre_ping)
    try:
        return _run(settings, spec, make_session_factory(engine), termination)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class StartedTry:
    """What a supervisor sends its forked task process as the go-ahead: the try started
    under ``job_id``, with what the task process would otherwise read back."""

    job_id: int
    max_tries: int
    start_date: datetime
    dag_run: dict[str, Any]  # the DagRun's column values


#: a forked task process's messages to its supervisor (answered with whether it was written)
MSG_OUTCOME = "outcome"  # an OutcomeRecord: the try ran
MSG_LOAD_ERROR = "load_error"  # a reason: the DAG file or task could not be loaded


def dag_run_values(dag_run: DagRun) -> dict[str, Any]:
    return {attr.key: getattr(dag_run, attr.key) for attr in sa_inspect(DagRun).column_attrs}


def run_forked_task_process(settings: Settings, spec: TaskProcessSpec, channel: Connection,
                            engine: Engine,
                            loaded: BaseOperator | TaskLoadError | None = None,
                            termination: TryTermination | None = None) -> int:
    """The body of a task process forked before its try started.

    It loads the task (unless the supervisor had it ``loaded``, from its
    :class:`DagFileCache`) while the supervisor starts the try, then waits on ``channel`` for
    the go-ahead (a :class:`StartedTry`; an end of file means the try is not ours and nothing
    is done). It runs the try and sends the outcome to the supervisor, which writes it on its
    own long-lived connection and answers whether the compare-and-set won; callbacks run
    after that. ``engine`` is the supervisor's, its pool emptied by the fork: the task's own
    reads and writes (XCom, skips) connect on first use. It is disposed of here.
    ``termination``, installed by the caller, learns the task the try runs.
    """
    if loaded is None:
        try:
            loaded = load_task(settings, spec.dag_file, spec.key)
        except TaskLoadError as exc:
            loaded = exc
    try:
        try:
            started: StartedTry = channel.recv()
        except EOFError:
            return EXIT_NOT_OURS
        key = spec.key
        log_path = task_log_path(settings.log_folder, key, spec.try_number)
        if isinstance(loaded, TaskLoadError):
            with task_log_handler(log_path):
                log.error("TaskInstance %s: try %d cannot run: %s", key, spec.try_number,
                          loaded)
                _ask(channel, (MSG_LOAD_ERROR, str(loaded)[:MAX_REASON]))
            return EXIT_OK

        def recorder(record: OutcomeRecord) -> bool:
            won = _ask(channel, (MSG_OUTCOME, record))
            log_written(key, spec.try_number, record.state, won)  # into the task's log
            return won

        run_try(loaded, DagRun(**started.dag_run), try_number=spec.try_number,
                max_tries=started.max_tries, start_date=started.start_date,
                session_factory=make_session_factory(engine), hostname=spec.hostname,
                log_path=log_path, recorder=recorder, clear_xcom=False,
                on_task=termination.running if termination is not None else None)
        return EXIT_OK
    finally:
        channel.close()
        engine.dispose()


def _ask(channel: Connection, message: tuple[str, Any]) -> bool:
    """Send ``message`` to the supervisor; whether it wrote it (False if it is gone)."""
    try:
        channel.send(message)
        return bool(channel.recv())
    except (EOFError, OSError):
        log.error("the supervisor did not answer; the outcome may not be recorded")
        return False


def _run(settings: Settings, spec: TaskProcessSpec, factory: SessionFactory,
         termination: TryTermination) -> int:
    """Check that the try is still running under ``spec.job_id``, load the DAG file and run
    the try, recording its outcome (the new-interpreter path)."""
    key = spec.key
    with session_scope(factory) as session:
        ti = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == key.dag_id, TaskInstance.task_id == key.task_id,
            TaskInstance.run_id == key.run_id)).one_or_none()
        dag_run = session.scalars(select(DagRun).where(
            DagRun.dag_id == key.dag_id, DagRun.run_id == key.run_id)).one_or_none()
    if (ti is None or dag_run is None or ti.state != TaskInstanceState.RUNNING
            or ti.try_number != spec.try_number or ti.job_id != spec.job_id):
        seen = "gone" if ti is None or dag_run is None else (
            f"{ti.state} (try {ti.try_number}, job {ti.job_id})")
        log.warning("TaskInstance %s: try %d not run: expected running under job %d, "
                    "found %s", key, spec.try_number, spec.job_id, seen)
        return EXIT_NOT_OURS

    log_path = task_log_path(settings.log_folder, key, spec.try_number)
    start_date = ti.start_date or utcnow()
    try:
        task = load_task(settings, spec.dag_file, key)
    except TaskLoadError as exc:
        with task_log_handler(log_path):
            log.error("TaskInstance %s: try %d cannot run: %s", key, spec.try_number, exc)
            spec.notify_recording()
            record_failure(factory, key, try_number=spec.try_number, max_tries=ti.max_tries,
                           start_date=start_date, reason=str(exc))
        return EXIT_OK
    run_try(task, dag_run, try_number=spec.try_number, max_tries=ti.max_tries,
            start_date=start_date, session_factory=factory, hostname=spec.hostname,
            log_path=log_path, on_recording=spec.notify_recording, clear_xcom=False,
            on_task=termination.running)
    return EXIT_OK


def load_task(settings: Settings, dag_file: str, key: TaskInstanceKey) -> BaseOperator:
    """Import ``dag_file`` (as named in a command) and return the task of ``key``."""
    path, root = _dag_file_path(settings, dag_file, key)
    if not path.is_file():
        raise TaskLoadError(f"cannot load DAG {key.dag_id}: DAG file {path} does not exist "
                            "on this worker")
    loaded = load_file(path, root, timeout=settings.core.dagbag_import_timeout,
                       airflow_compat=settings.core.airflow_compat,
                       dag_defaults=DagDefaults.from_settings(settings))
    return _task_of(loaded.dags, key, path, loaded.error)


class DagFileCache:
    """DAG files kept imported in a pool process (``[celery] worker_cache_dag_files``), so a
    forked task process starts with its task loaded.

    An entry is used while its file's size and modification time are unchanged, and while
    no module imported from the DAG folder (a helper the DAG files share) has changed; a
    changed helper empties the cache and drops those modules, so they are imported afresh.
    At most ``max_files`` files are kept (least recently used go first). A file that fails
    to load is not kept: each try loads it again and reports why.
    """

    def __init__(self, max_files: int = 64) -> None:
        self.max_files = max_files
        self._files: OrderedDict[str, tuple[tuple[int, int], list[DAG]]] = OrderedDict()
        self._helpers: dict[str, tuple[str, int]] = {}  # module -> (file, mtime_ns)

    def load_task(self, settings: Settings, dag_file: str, key: TaskInstanceKey
                  ) -> BaseOperator:
        path, root = _dag_file_path(settings, dag_file, key)
        try:
            stat = path.stat()
        except OSError:
            raise TaskLoadError(f"cannot load DAG {key.dag_id}: DAG file {path} does not "
                                "exist on this worker") from None
        if self._helpers_changed():
            self.clear()
        signature = (stat.st_mtime_ns, stat.st_size)
        entry = self._files.get(str(path))
        if entry is not None and entry[0] == signature:
            self._files.move_to_end(str(path))
            return _task_of(entry[1], key, path)
        loaded = load_file(path, root, timeout=settings.core.dagbag_import_timeout,
                           airflow_compat=settings.core.airflow_compat,
                           dag_defaults=DagDefaults.from_settings(settings))
        if loaded.error is not None and not loaded.dags:
            self._files.pop(str(path), None)
            raise TaskLoadError(f"cannot load DAG {key.dag_id}: {loaded.error}")
        self._files[str(path)] = (signature, loaded.dags)
        while len(self._files) > self.max_files:
            self._files.popitem(last=False)
        self._note_helpers([r for r in (root, path.parent) if r is not None])
        return _task_of(loaded.dags, key, path, loaded.error)

    def clear(self) -> None:
        self._files.clear()
        for name in self._helpers:
            sys.modules.pop(name, None)
        self._helpers.clear()

    def _note_helpers(self, roots: list[Path]) -> None:
        prefixes = tuple(str(r.resolve()) + os.sep for r in roots)
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if (name in self._helpers or name.startswith("squall_dag_") or not file
                    or not os.path.abspath(file).startswith(prefixes)):
                continue
            try:
                self._helpers[name] = (file, os.stat(file).st_mtime_ns)
            except OSError:
                continue

    def _helpers_changed(self) -> bool:
        for file, mtime in self._helpers.values():
            try:
                if os.stat(file).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False


def _dag_file_path(settings: Settings, dag_file: str, key: TaskInstanceKey
                   ) -> tuple[Path, Path | None]:
    """The DAG file a command names, and the folder it is under."""
    examples = EXAMPLES_FOLDER if settings.core.load_examples else None
    try:
        path = resolve_dag_file(dag_file, settings.dags_folder, examples)
    except PayloadError as exc:
        raise TaskLoadError(f"cannot load DAG {key.dag_id}: {exc}") from None
    root_name = dag_file.partition("/")[0]
    root: Path | None = {DAGS_FOLDER_ROOT: settings.dags_folder,
                         EXAMPLES_ROOT: examples}.get(root_name)
    return path, root


def _task_of(dags: list[DAG], key: TaskInstanceKey, path: Path,
             error: str | None = None) -> BaseOperator:
    dag = next((d for d in dags if d.dag_id == key.dag_id), None)
    if dag is None:
        detail = error or (
            f"DAG file {path} defines no DAG {key.dag_id!r} "
            f"(it defines: {', '.join(d.dag_id for d in dags) or 'none'})")
        raise TaskLoadError(f"cannot load DAG {key.dag_id}: {detail}")
    if not dag.has_task(key.task_id):
        raise TaskLoadError(f"DAG {key.dag_id} in {path} has no task {key.task_id!r}")
    return dag.get_task(key.task_id)


def retry_policy_task(factory: SessionFactory, key: TaskInstanceKey) -> BaseOperator:
    """The task's stand-in from ``serialized_dag`` (its retry delay and backoff), for
    recording a failure without importing the DAG file; a default one when not found."""
    from squall.dag_processing.serialization import SerializedOperator

    with session_scope(factory) as session:
        dag = load_serialized_dags(session, [key.dag_id]).get(key.dag_id)
    if dag is not None and dag.has_task(key.task_id):
        return dag.get_task(key.task_id)
    log.warning("TaskInstance %s: no serialized DAG to take the retry delay from; "
                "using the default", key)
    return SerializedOperator(operator_name="unknown", task_id=key.task_id)


def record_failure(factory: SessionFactory, key: TaskInstanceKey, *, try_number: int,
                   max_tries: int, start_date: datetime, reason: str,
                   on_recorded: Callable[[Session, TaskInstanceState], None] | None = None,
                   ) -> TryResult:
    """Record try ``try_number`` as failed, or up_for_retry while tries remain, with
    ``reason``; a compare-and-set from RUNNING with that try, like any other outcome
    (``on_recorded``: see :func:`record_outcome`)."""
    task = retry_policy_task(factory, key)
    outcome = TryOutcome(OutcomeKind.FAILED, error=reason[:MAX_REASON])
    return record_outcome(factory, task, key, try_number=try_number, max_tries=max_tries,
                          start_date=start_date, outcome=outcome, on_recorded=on_recorded)


# --------------------------------------------------------------------------- process handling

class TaskProcessHandle:
    """A started task process: forked (``popen`` None) or a new interpreter."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._popen = popen
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code (negative: the signal) once it has exited, else None."""
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


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


def parent_death_sigterm() -> None:
    """In a task process (also the ``preexec_fn`` of a new interpreter): get SIGTERM when
    the supervisor dies, so no task outlives its supervisor."""
    set_parent_death_signal(signal.SIGTERM)


def kill_grace_for(heartbeat: float) -> float:
    """How long a supervisor lets its task process take to exit after SIGTERM before it
    sends SIGKILL: at most half a heartbeat, so that a try Squall ends is gone, with every
    process it started, within two heartbeats (one to notice, one to end it)."""
    return min(KILL_GRACE_SECONDS, heartbeat / 2)


class TryTermination:
    """How a task process ends its try when it gets SIGTERM: from its supervisor (the
    try was cleared, marked, found a zombie, or the worker is stopping) or as its
    parent-death signal (the supervisor died, even by SIGKILL).

    :meth:`install` makes this process a child subreaper (an orphaned grandchild stays its
    descendant), asks for SIGTERM when the supervisor dies and installs the handler. The
    handler runs the running task's ``on_kill``, ends every process the try started
    (SIGTERM, ``grace`` seconds, SIGKILL; grandchildren in sessions of their own included:
    :func:`~squall.common.procutil.end_descendants`), and then lets SIGTERM end this
    process. It records nothing: the supervisor records the try, or the scheduler finds it
    a zombie when the supervisor is gone.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.task: BaseOperator | None = None  # the task whose try runs, once it runs

    def install(self) -> None:
        set_child_subreaper()
        parent_death_sigterm()
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def running(self, task: BaseOperator) -> None:
        self.task = task

    def _on_sigterm(self, _signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.warning("Task process %d: SIGTERM: ending the try and every process it started",
                    os.getpid())
        if self.task is not None:
            safe_on_kill(self.task)
        ended = end_descendants(self.grace)
        if ended:
            log.warning("Task process %d: ended %s", os.getpid(),
                        ", ".join(str(pid) for pid in ended))
        flush_std_streams()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
