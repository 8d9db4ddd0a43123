"""Parsing DAG files in child processes, each file with a time limit.

:func:`parse_files_isolated` imports the files in child processes; what comes back is the
*serialized* form of their DAGs (JSON, see :mod:`squall.dag_processing.serialization`) or a
readable error, and how each parse went (:class:`FileStat`). The scheduler's DAG processor
and the API only ever parse this way, so no user code runs in their own process.

A child imports a *batch* of files in turn (forking a process per file was most of the DAG
processor's CPU at 1,000 files), one answer per file. What one file does to the child is
not seen by the next file of its batch as far as Squall can undo it: each file is its own
module (``squall_dag_<hash>_<stem>``), and before each file the child puts back the DAG and
task group context stacks, ``sys.path``, the working directory and ``os.environ`` as they
were when it started. The residual risk: a file that changes anything else of the process
(monkeypatches a library or one of Squall's modules, changes a module's globals, sets a
signal handler, leaves a thread running, closes a descriptor) changes it for the later
files of its batch, which a child per file did not; and a module of the DAG folder a file
imports (a helper) is imported once per child, not once per file. A file whose child dies
or runs out of time costs only itself an answer: the rest of its batch go to a new child.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from squall.common.procutil import child_process_context, stop_child
from squall.dag_processing.serialization import serialize_dag
from squall.sdk.dag import DagContext
from squall.sdk.dag_defaults import DagDefaults
from squall.sdk.taskgroup import TaskGroupContext

if TYPE_CHECKING:
    pass
from squall.dag_processing.loading import (
    _duplicate_message,
    _header,
    _timeout_message,
    load_file,
)

log = logging.getLogger(__name__)


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

