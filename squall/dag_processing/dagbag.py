"""Loading DAG files: into this process, or each in a child process with a time limit.

Two ways to load a DAG file:

* **in-process** (:func:`load_file`, :class:`DagBag`): the file is imported into the calling
  process. Workers and ``squall dags test`` do this; they run user code anyway.
* **isolated** (:func:`parse_files_isolated`): the files are imported in child processes,
  each file with a time limit; what comes back is the *serialized* form of its DAGs (JSON,
  see :mod:`squall.dag_processing.serialization`) or a readable error. The scheduler and the
  API only ever do this, so no user code runs in their own process.

A child of the isolated parse imports a *batch* of files in turn (forking a process per file
was most of the DAG processor's CPU at 1,000 files), one answer per file. What one file does
to the child is not seen by the next file of its batch as far as Squall can undo it: each
file is its own module (``squall_dag_<hash>_<stem>``), and before each file the child puts
back the DAG and task group context stacks, ``sys.path``, the working directory and
``os.environ`` as they were when it started. The residual risk: a file that changes
anything else of the process (monkeypatches a library or one of Squall's modules, changes a
module's globals, sets a signal handler, leaves a thread running, closes a descriptor)
changes it for the later files of its batch, which a child per file did not; and a module
of the DAG folder a file imports (a helper) is imported once per child, not once per file.
A file whose child dies or runs out of time costs only itself an answer: the rest of its
batch go to a new child.

:func:`~squall.dag_processing.sync.sync_to_db` writes the result of a parse to the ``dag``,
``serialized_dag`` and ``import_error`` tables;
:func:`~squall.dag_processing.sync.load_serialized_dags` rebuilds DAGs (with stand-in tasks)
from ``serialized_dag``: both live in :mod:`squall.dag_processing.sync`, which imports this
module (for :class:`ParseResult`) and not the other way round.

Which files are DAG files: :mod:`squall.dag_processing.files`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from squall.common.procutil import child_process_context, stop_child
from squall.dag_processing.files import DEFAULT_IGNORE_FILE, IgnoreSyntax, list_dag_files
from squall.dag_processing.serialization import serialize_dag
from squall.sdk.dag import DAG, DagContext
from squall.sdk.dag_defaults import DagDefaults, authoring_defaults
from squall.sdk.examples import EXAMPLES_FOLDER
from squall.sdk.taskgroup import TaskGroupContext

if TYPE_CHECKING:
    from squall.common.settings import Settings

__all__ = [
    "DEFAULT_IGNORE_FILE",
    "DagBag",
    "FileLoadResult",
    "FileStat",
    "IgnoreSyntax",
    "ParseResult",
    "list_dag_files",
    "load_file",
    "parse_files_isolated",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- in-process load


@dataclass
class FileLoadResult:
    """The DAGs one file defines (the valid ones) and, if anything went wrong, why."""

    path: str
    dags: list[DAG] = field(default_factory=list)
    error: str | None = None


class _ImportTimedOut(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that ``except Exception`` in user
    code does not swallow it."""


def _timeout_message(path: str, timeout: float) -> str:
    return (
        f"DAG file {path} took longer than {timeout:g} s to import "
        "(dagbag_import_timeout)"
    )


@contextlib.contextmanager
def _alarm(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_ImportTimedOut` in the main thread after ``seconds`` (if possible)."""
    if (
        not seconds
        or seconds <= 0
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise _ImportTimedOut()

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:  # somebody else's timer was running: put it back
            remaining = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


def _module_name(path: str) -> str:
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:12]
    stem = re.sub(r"\W", "_", Path(path).stem)
    return f"squall_dag_{digest}_{stem}"


def _is_user_frame(filename: str, path: str, root: str) -> bool:
    filename = os.path.abspath(filename)
    return filename == path or filename.startswith(root.rstrip(os.sep) + os.sep)


def _header(path: str) -> str:
    return f"Broken DAG file {path}:"


def _format_exception(path: str, root: str, exc: BaseException, summary: str | None = None) -> str:
    """A readable account of why loading ``path`` failed, traceback-style: a header naming
    the file, where in the user's files it happened, and last the exception (``summary``
    replaces that last line when given)."""
    lines = [_header(path)]
    if isinstance(exc, SyntaxError):
        # "  File ..., line N", the offending line with a caret, "SyntaxError: ..."
        lines.extend(part.rstrip("\n") for part in traceback.format_exception_only(type(exc), exc))
        return "\n".join(lines)
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if _is_user_frame(f.filename, path, root)]
    if user:
        lines.append("Traceback (DAG folder frames only, most recent call last):")
        lines.extend(part.rstrip("\n") for part in traceback.format_list(user))
    elif frames:
        lines.append("Traceback (last frame only):")
        lines.extend(part.rstrip("\n") for part in traceback.format_list(frames[-1:]))
    lines.append(summary if summary is not None else f"{type(exc).__name__}: {exc}")
    return "\n".join(lines)


def load_file(
    path: str | os.PathLike[str],
    dags_folder: str | os.PathLike[str] | None,
    *,
    timeout: float | None = None,
    airflow_compat: bool = False,
    dag_defaults: DagDefaults | None = None,
) -> FileLoadResult:
    """Import the DAG file ``path`` into this process and return the DAGs it defines.

    ``dags_folder`` is put on ``sys.path`` (so DAG files import their helpers); the file is
    imported as module ``squall_dag_<hash>_<stem>``. Every DAG created while the file is
    imported belongs to it (whether assigned to a global or not); their ``fileloc`` is set to
    ``path``. Each is validated; an invalid DAG is left out and its problem reported in
    ``error``, as is any exception raised by the import (with the line of the user's file),
    a duplicate dag_id, or running past ``timeout`` seconds (enforced with ``SIGALRM`` when
    called from the main thread). With ``airflow_compat`` the ``airflow`` import name is
    provided first (:mod:`squall.compat.airflow`). ``dag_defaults`` (the deployment's, see
    :mod:`squall.sdk.dag_defaults`) are what the file's DAGs and tasks get for what it
    leaves out; without them, Airflow's own defaults.
    """
    filepath = os.path.abspath(path)
    root = os.path.abspath(dags_folder) if dags_folder else os.path.dirname(filepath)
    if root not in sys.path:
        sys.path.append(root)
    importlib.invalidate_caches()
    result = FileLoadResult(path=filepath)
    name = _module_name(filepath)
    sys.modules.pop(name, None)

    created: list[DAG] = []
    previous_created = DagContext.created
    dag_stack = list(DagContext._stack)
    group_stack = list(TaskGroupContext._stack)
    DagContext.created = created
    try:
        if airflow_compat:
            from squall.compat import airflow as airflow_compat_layer

            airflow_compat_layer.install()
        with _alarm(timeout), authoring_defaults(dag_defaults):
            spec = importlib.util.spec_from_file_location(name, filepath)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {filepath}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    except _ImportTimedOut as exc:
        sys.modules.pop(name, None)
        result.error = _format_exception(filepath, root, exc,
                                         summary=_timeout_message(filepath, timeout or 0))
        return result
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        result.error = _format_exception(filepath, root, exc)
        return result
    finally:
        DagContext.created = previous_created
        DagContext._stack[:] = dag_stack
        TaskGroupContext._stack[:] = group_stack

    errors: list[str] = []
    seen: dict[str, DAG] = {}
    for dag in created:
        dag.fileloc = filepath
        if dag.dag_id in seen:
            if seen[dag.dag_id] is not dag:
                errors.append(f"dag_id {dag.dag_id!r} is defined more than once in this file")
            continue
        seen[dag.dag_id] = dag
        try:
            dag.validate()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        result.dags.append(dag)
    if errors:
        result.error = "\n".join([_header(filepath), *errors])
    return result


class DagBag:
    """The DAGs of a folder, loaded in this process (workers, ``squall dags test``, the CLI).

    ``dags`` maps dag_id to DAG; ``import_errors`` maps a file path to a readable message.
    A dag_id defined by two files is kept from the first file (in sorted order) and reported
    as an import error of the other.
    """

    def __init__(
        self,
        dag_folder: str | os.PathLike[str],
        *,
        include_examples: bool = False,
        examples_folder: str | os.PathLike[str] | None = None,
        import_timeout: float = 30.0,
        ignore_file_syntax: IgnoreSyntax = "regexp",
        airflow_compat: bool = False,
        dag_defaults: DagDefaults | None = None,
        parsing_processes: int | None = None,
        parsing_nice: int = 0,
    ) -> None:
        self.airflow_compat = airflow_compat
        self.parsing_processes = parsing_processes
        self.parsing_nice = parsing_nice
        self.dag_defaults = dag_defaults
        self.dag_folder = Path(os.path.abspath(dag_folder))
        self.include_examples = include_examples
        self.examples_folder = Path(
            os.path.abspath(examples_folder) if examples_folder else EXAMPLES_FOLDER
        )
        self.import_timeout = import_timeout
        self.ignore_file_syntax: IgnoreSyntax = ignore_file_syntax
        self.dags: dict[str, DAG] = {}
        self.import_errors: dict[str, str] = {}
        self.collected = False

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      examples_folder: str | os.PathLike[str] | None = None) -> DagBag:
        """The bag of ``[core] dags_folder`` (and the examples with ``load_examples``), loaded
        as the settings say: import timeout, ignore file syntax, Airflow names, DAG defaults,
        and for :meth:`parse_isolated` ``[scheduler] parsing_processes`` and
        ``parsing_nice``."""
        core = settings.core
        return cls(settings.dags_folder, include_examples=core.load_examples,
                   examples_folder=examples_folder, import_timeout=core.dagbag_import_timeout,
                   ignore_file_syntax=core.dag_ignore_file_syntax,
                   airflow_compat=core.airflow_compat,
                   dag_defaults=DagDefaults.from_settings(settings),
                   parsing_processes=settings.scheduler.parsing_processes,
                   parsing_nice=settings.scheduler.parsing_nice)

    def _roots(self) -> list[Path]:
        roots = [self.dag_folder]
        if self.include_examples and self.examples_folder.is_dir():
            roots.append(self.examples_folder)
        return roots

    def files(self) -> list[tuple[Path, Path]]:
        """``(file, the folder it was found in)`` for every DAG file, in loading order."""
        out: list[tuple[Path, Path]] = []
        for root in self._roots():
            folder = root.parent if root.is_file() else root
            out.extend((f, folder)
                       for f in list_dag_files(root, syntax=self.ignore_file_syntax))
        return out

    def collect_in_process(self) -> dict[str, DAG]:
        """Import every DAG file into this process; fill and return ``dags`` (and
        ``import_errors``)."""
        self.dags, self.import_errors = {}, {}
        for path, root in self.files():
            loaded = load_file(path, root, timeout=self.import_timeout,
                               airflow_compat=self.airflow_compat,
                               dag_defaults=self.dag_defaults)
            errors = [loaded.error] if loaded.error else []
            for dag in loaded.dags:
                other = self.dags.get(dag.dag_id)
                if other is not None:
                    errors.append(_duplicate_message(dag.dag_id, other.fileloc))
                    continue
                self.dags[dag.dag_id] = dag
            if errors:
                self.import_errors[loaded.path] = "\n".join(errors)
        self.collected = True
        return self.dags

    def get_dag(self, dag_id: str) -> DAG | None:
        """The DAG ``dag_id`` (collecting the folder first if needed), or None."""
        if not self.collected:
            self.collect_in_process()
        return self.dags.get(dag_id)

    def parse_isolated(self, *, parallelism: int | None = None,
                       files: Iterable[tuple[Path, Path]] | None = None,
                       previous: Mapping[str, str] | None = None) -> ParseResult:
        """:func:`parse_files_isolated` on ``files`` (``(file, folder)`` pairs from an earlier
        :meth:`files`), by default on every DAG file of this bag; ``previous`` as there.
        ``parallelism`` defaults to the bag's ``parsing_processes``; the children are niced
        by its ``parsing_nice``."""
        by_root: dict[Path, list[Path]] = {}
        for path, root in self.files() if files is None else files:
            by_root.setdefault(root, []).append(path)
        if parallelism is None:
            parallelism = self.parsing_processes
        return _merge_results(
            parse_files_isolated(paths, root, self.import_timeout, parallelism=parallelism,
                                 airflow_compat=self.airflow_compat,
                                 dag_defaults=self.dag_defaults, previous=previous,
                                 nice=self.parsing_nice)
            for root, paths in by_root.items()
        )


def _duplicate_message(dag_id: str, first_file: str) -> str:
    return f"dag_id {dag_id} is already defined in {first_file}"


# --------------------------------------------------------------------------- isolated parse


@dataclass(frozen=True)
class FileStat:
    """How the parse of one DAG file went, as its child reported it."""

    path: str
    #: seconds the child spent importing the file and serializing its DAGs
    duration: float
    #: the DAGs the file defines (valid ones, in definition order)
    dag_ids: tuple[str, ...]
    #: tasks over those DAGs
    task_count: int
    #: whether the file has an import error
    error: bool
    #: digest of the child's whole answer for the file: equal means the same DAGs and error
    fingerprint: str


@dataclass
class ParseResult:
    """What parsing some DAG files produced.

    ``serialized`` maps dag_id to serialized DAG (its ``fileloc`` names its file);
    ``import_errors`` maps a file to a readable message; ``files_parsed`` lists every file
    parsed (whether it worked or not), as absolute paths. ``file_stats`` says how each file
    answered (every file in ``files_parsed`` and in ``unchanged``). ``unchanged`` lists the
    files whose answer had the fingerprint the caller already knew (``previous`` of
    :func:`parse_files_isolated`): their DAGs and errors are not decoded again, and they are
    in none of ``serialized``, ``import_errors`` and ``files_parsed``.
    """

    serialized: dict[str, dict[str, Any]] = field(default_factory=dict)
    import_errors: dict[str, str] = field(default_factory=dict)
    files_parsed: list[str] = field(default_factory=list)
    file_stats: dict[str, FileStat] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)

    def dag_ids_by_file(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {path: [] for path in self.files_parsed}
        for dag_id, data in self.serialized.items():
            out.setdefault(data["dag"]["fileloc"], []).append(dag_id)
        return out


def _merge_results(results: Iterable[ParseResult]) -> ParseResult:
    merged = ParseResult()
    for result in results:
        for dag_id, data in result.serialized.items():
            if dag_id in merged.serialized:
                first = merged.serialized[dag_id]["dag"]["fileloc"]
                path = data["dag"]["fileloc"]
                message = _duplicate_message(dag_id, first)
                old = merged.import_errors.get(path)
                merged.import_errors[path] = f"{old}\n{message}" if old else message
                continue
            merged.serialized[dag_id] = data
        for path, error in result.import_errors.items():
            old = merged.import_errors.get(path)
            merged.import_errors[path] = f"{old}\n{error}" if old else error
        merged.files_parsed.extend(result.files_parsed)
        merged.file_stats.update(result.file_stats)
        merged.unchanged.extend(result.unchanged)
    return merged


def _answer_for(path: str, dags_folder: str, airflow_compat: bool,
                dag_defaults: DagDefaults | None) -> bytes:
    """Load one file (in the child) and frame the answer: a JSON header line (timing,
    counts), then the JSON ``{"dags": [...], "error": ...}``."""
    started = time.perf_counter()
    stats: dict[str, Any] = {"dag_ids": [], "task_count": 0}
    has_error = True
    try:
        loaded = load_file(path, dags_folder, airflow_compat=airflow_compat,
                           dag_defaults=dag_defaults)
        serialized: list[dict[str, Any]] = []
        errors = [loaded.error] if loaded.error else []
        for dag in loaded.dags:
            try:
                serialized.append(serialize_dag(dag))
            except Exception as exc:
                errors.append(f"{_header(path)}\n{type(exc).__name__}: {exc}")
        stats = {"dag_ids": [data["dag"]["dag_id"] for data in serialized],
                 "task_count": sum(len(data["dag"].get("tasks") or ()) for data in serialized)}
        has_error = bool(errors)
        answer = json.dumps({"dags": serialized, "error": "\n".join(errors) or None})
    except BaseException as exc:  # anything at all must become a message
        answer = json.dumps({"dags": [],
                             "error": f"{_header(path)}\n{type(exc).__name__}: {exc}"})
    # The header (timing, counts) is outside the answer, so the answer's fingerprint does not
    # change with the time the parse took.
    header = json.dumps({"path": path, "duration": time.perf_counter() - started,
                         "error": has_error, **stats})
    return header.encode("utf-8") + b"\n" + answer.encode("utf-8")


@dataclass
class _ProcessState:
    """What one DAG file may change in its process and the next file must not see: taken
    when the child starts, put back before each file (see the module docstring)."""

    sys_path: list[str]
    cwd: str | None
    environ: dict[str, str]

    @classmethod
    def take(cls) -> _ProcessState:
        try:
            cwd: str | None = os.getcwd()
        except OSError:
            cwd = None
        return cls(list(sys.path), cwd, dict(os.environ))

    def restore(self) -> None:
        DagContext._stack.clear()
        DagContext.created = None
        TaskGroupContext._stack.clear()
        sys.path[:] = self.sys_path
        if self.cwd is not None:
            with contextlib.suppress(OSError):
                if os.getcwd() != self.cwd:
                    os.chdir(self.cwd)
        if os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)


def _parse_in_child(paths: list[str], dags_folder: str, conn: Connection,
                    airflow_compat: bool = False, dag_defaults: DagDefaults | None = None,
                    nice: int = 0) -> None:
    """The child process: lower its priority by ``nice``, then load each of ``paths`` in
    turn, sending one framed answer (:func:`_answer_for`) per file, in order."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if nice > 0:
        try:
            os.nice(nice)
        except OSError as exc:
            log.debug("could not lower the parse child's priority: %s", exc)
    state = _ProcessState.take()
    for path in paths:
        state.restore()
        conn.send_bytes(_answer_for(path, dags_folder, airflow_compat, dag_defaults))
    conn.close()


@dataclass
class _Job:
    """A child and the files it has not answered for yet (it is on the first)."""

    paths: deque[str]
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    #: when the file it is on runs out of time: ``timeout`` after the child started or
    #: after its last answer
    deadline: float


def _exit_description(code: int | None) -> str:
    if code is None:
        return "an unknown exit code"
    if code < 0:
        try:
            return f"exit code {code} (signal {signal.Signals(-code).name})"
        except ValueError:
            return f"exit code {code}"
    return f"exit code {code}"


def _finish(job: _Job, grace: float = 5.0) -> None:
    stop_child(job.process, grace)
    job.conn.close()


#: the most files one child parses, when ``files_per_child`` is not given: small enough
#: that the files are spread over every child and that a child killed for one file (a
#: time-out) leaves few to hand to a new one, large enough that forking is a small part of
#: the parse (measured with ``python -m bench.parse_files``: see the report of issue 15)
AUTO_FILES_PER_CHILD = 50


def _batch_size(files: int, children: int, files_per_child: int | None) -> int:
    if files_per_child is not None:
        return max(1, files_per_child)
    return max(1, min(AUTO_FILES_PER_CHILD, -(-files // children)))


def parse_files_isolated(
    paths: Iterable[str | os.PathLike[str]],
    dags_folder: str | os.PathLike[str],
    timeout: float,
    *,
    parallelism: int | None = None,
    airflow_compat: bool = False,
    dag_defaults: DagDefaults | None = None,
    previous: Mapping[str, str] | None = None,
    files_per_child: int | None = None,
    nice: int = 0,
) -> ParseResult:
    """Parse the DAG files in child processes and gather the serialized DAGs.

    Each child parses a batch of ``files_per_child`` files in turn (default: the files spread
    over the children, at most :data:`AUTO_FILES_PER_CHILD` each), and first lowers its
    priority by ``nice`` (:func:`os.nice`), so that parsing yields the CPU to the scheduler
    and the workers. At most ``parallelism`` children (default ``min(4, cpu count)``) run at
    a time.

    Each file gets ``timeout`` seconds from when its child starts it: a child past that is
    killed, the file it was on gets a time-out error and the rest of its batch go to a new
    child. A child that dies without answering (a crash, ``os._exit``, a signal) is reported
    with its exit code as the error of the file it was on; the rest of its batch go to a new
    child. A dag_id defined by two files is kept from the first in ``paths`` order and
    reported as an import error of the later one. ``airflow_compat`` and ``dag_defaults``
    are as for :func:`load_file`.

    ``previous`` maps files to the fingerprint (:attr:`FileStat.fingerprint`) of their last
    answer: a file that answers the same again is listed in :attr:`ParseResult.unchanged`
    and its answer is not decoded. A file that times out or dies is never unchanged.
    """
    files = [os.path.abspath(p) for p in paths]
    files = list(dict.fromkeys(files))
    root = os.path.abspath(dags_folder)
    limit = max(1, parallelism or min(4, os.cpu_count() or 1))
    size = _batch_size(len(files), limit, files_per_child)
    ctx = child_process_context()
    known = previous or {}
    outcome: dict[str, _Answer] = {}
    pending: deque[list[str]] = deque(files[i:i + size] for i in range(0, len(files), size))
    running: list[_Job] = []

    while pending or running:
        while pending and len(running) < limit:
            batch = pending.popleft()
            reader, writer = ctx.Pipe(duplex=False)
            process = ctx.Process(  # type: ignore[attr-defined]
                target=_parse_in_child,
                args=(batch, root, writer, airflow_compat, dag_defaults, nice),
                name=f"squall-parse-{Path(batch[0]).name}", daemon=True,
            )
            try:
                process.start()
            except OSError as exc:
                reader.close()
                writer.close()
                for path in batch:
                    outcome[path] = _Answer.failed(
                        path, f"{path}: cannot start a process to parse it: {exc}")
                continue
            writer.close()
            running.append(_Job(deque(batch), process, reader, time.monotonic() + timeout))
        if not running:
            continue

        wait_until = min(job.deadline for job in running)
        waitables: list[Any] = [job.conn for job in running]
        waitables.extend(job.process.sentinel for job in running)
        ready = set(wait_for(waitables, timeout=max(0.0, wait_until - time.monotonic())))
        still: list[_Job] = []
        for job in running:
            state = "running"
            if job.conn in ready or job.process.sentinel in ready:
                state = _read_answers(job, outcome, known, timeout)
            if not job.paths:
                _finish(job, 0 if state == "garbled" else 5.0)
            elif state == "garbled":
                _finish(job, 0)
                pending.appendleft(list(job.paths))
            elif state == "ended":
                _finish(job)
                path = job.paths.popleft()
                outcome[path] = _Answer.failed(path, (
                    f"the process parsing DAG file {path} died without an answer, with "
                    f"{_exit_description(job.process.exitcode)}"
                ))
                if job.paths:
                    pending.appendleft(list(job.paths))
            elif time.monotonic() >= job.deadline:
                stop_child(job.process, 0)
                job.conn.close()
                path = job.paths.popleft()
                log.warning("killed the parse of %s after %s s", path, timeout)
                outcome[path] = _Answer.failed(path, _timeout_message(path, timeout))
                if job.paths:
                    pending.appendleft(list(job.paths))
            else:
                still.append(job)
        running = still

    result = ParseResult()
    for path in files:
        answer = outcome[path]
        result.file_stats[path] = answer.stat
        if answer.unchanged:
            result.unchanged.append(path)
            continue
        result.files_parsed.append(path)
        errors = [answer.error] if answer.error else []
        for data in answer.dags:
            dag_id = data["dag"]["dag_id"]
            other = result.serialized.get(dag_id)
            if other is not None:
                errors.append(_duplicate_message(dag_id, other["dag"]["fileloc"]))
                continue
            result.serialized[dag_id] = data
        if errors:
            result.import_errors[path] = "\n".join(errors)
    return result


@dataclass
class _Answer:
    """One file's answer, as the parent sees it."""

    stat: FileStat
    dags: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    unchanged: bool = False

    @classmethod
    def failed(cls, path: str, error: str, duration: float = 0.0) -> _Answer:
        """A file whose child never answered (timed out, died, could not start)."""
        digest = hashlib.blake2b(error.encode("utf-8"), digest_size=16).hexdigest()
        return cls(FileStat(path, duration, (), 0, True, f"failed:{digest}"), error=error)


def _fingerprint(answer: bytes) -> str:
    return hashlib.blake2b(answer, digest_size=16).hexdigest()


def _decode(path: str, message: bytes, previous: str | None) -> _Answer:
    """A child's message: a JSON header line (the file, timing, counts), then the JSON
    answer. ValueError if it is not an answer for ``path``."""
    head, _, body = message.partition(b"\n")
    header = json.loads(head.decode("utf-8"))
    if not isinstance(header, dict) or header.get("path") != path:
        raise ValueError("not an answer for this file")
    fingerprint = _fingerprint(body)
    if fingerprint == previous:
        payload: dict[str, Any] = {"dags": [], "error": None}
        unchanged = True
    else:
        payload = json.loads(body.decode("utf-8"))
        unchanged = False
    error = payload.get("error")
    stat = FileStat(path, float(header.get("duration") or 0.0),
                    tuple(header.get("dag_ids") or ()), int(header.get("task_count") or 0),
                    bool(error) if not unchanged else bool(header.get("error")), fingerprint)
    return _Answer(stat, list(payload.get("dags") or []), error, unchanged)


def _read_answers(job: _Job, outcome: dict[str, _Answer], known: Mapping[str, str],
                  timeout: float) -> Literal["running", "ended", "garbled"]:
    """Take every answer ``job``'s child has sent so far (each gives the next file
    ``timeout`` seconds). Whether the child is still ``running``, has ``ended`` (exited or
    closed its end) or sent something that is not the answer it owes (``garbled``: a file
    wrote to the pipe; that file gets an error and the child must be stopped)."""

    def drain() -> Literal["running", "ended", "garbled"]:
        try:
            while job.paths and job.conn.poll():
                message = job.conn.recv_bytes()
                path = job.paths.popleft()
                job.deadline = time.monotonic() + timeout
                try:
                    outcome[path] = _decode(path, message, known.get(path))
                except Exception as exc:
                    outcome[path] = _Answer.failed(path, (
                        f"the process parsing DAG file {path} sent something else than its "
                        f"answer ({type(exc).__name__}: {exc})"))
                    return "garbled"
        except (EOFError, OSError):
            return "ended"
        return "running"

    state = drain()
    if state != "running" or job.process.is_alive():
        return state
    # it exited: what it sent just before is still in the pipe (and a process of its own
    # may hold the pipe open, so no end-of-file may come)
    return "garbled" if drain() == "garbled" else "ended"
