"""Finding DAG files, loading them, and recording what they define in the database.

Two ways to load a DAG file:

* **in-process** (:func:`load_file`, :class:`DagBag`): the file is imported into the calling
  process. Workers and ``squall dags test`` do this; they run user code anyway.
* **isolated** (:func:`parse_files_isolated`): each file is imported in a child process with
  a time limit; what comes back is the *serialized* form of its DAGs (JSON, see
  :mod:`squall.common.serialization`) or a readable error. The scheduler and the API only
  ever do this, so no user code runs in their own process.

:func:`sync_to_db` writes the result of a parse to the ``dag``, ``serialized_dag`` and
``import_error`` tables; :func:`load_serialized_dags` rebuilds DAGs (with stand-in tasks)
from ``serialized_dag``.

Which files are DAG files (:func:`list_dag_files`): ``*.py`` files under the folder,
recursively, except those in hidden directories or ``__pycache__``, those matched by a
pattern of a ``.squallignore`` file (in the file's folder or one above it; one regular
expression a line by default, as Airflow's ``.airflowignore``, or gitignore-style globs), and
those whose text does not contain ``dag`` in any case (Airflow's "safe mode" heuristic).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import pendulum
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from squall.common.dag import DAG, DagContext
from squall.common.models import DagModel, DagRun, ImportError_, SerializedDagModel
from squall.common.serialization import (
    SerializationError,
    dag_hash,
    deserialize_dag,
    serialize_dag,
)
from squall.common.state import DagRunType
from squall.common.taskgroup import TaskGroupContext
from squall.common.timetables import DataInterval

log = logging.getLogger(__name__)

IgnoreSyntax = Literal["regexp", "glob"]

DEFAULT_IGNORE_FILE = ".squallignore"
#: the example DAGs in the repository's ``examples/`` folder (``include_examples``)
DEFAULT_EXAMPLES_FOLDER = Path(__file__).resolve().parent.parent.parent / "examples"


# --------------------------------------------------------------------------- listing files


class _IgnoreRule:
    """One pattern of an ignore file, matched against paths relative to the file's folder."""

    def __init__(self, regex: re.Pattern[str], base: str, *, search: bool,
                 negated: bool = False, dirs_only: bool = False) -> None:
        self.regex = regex
        self.base = base
        self.search = search
        self.negated = negated
        self.dirs_only = dirs_only

    def matches(self, path: str, is_dir: bool) -> bool:
        if self.dirs_only and not is_dir:
            return False
        rel = os.path.relpath(path, self.base).replace(os.sep, "/")
        if self.search:
            return self.regex.search(rel) is not None
        return self.regex.fullmatch(rel) is not None


def _glob_to_regex(pattern: str) -> str:
    """A gitignore-style glob (``*``, ``?``, ``[...]``, ``**``) as a regular expression."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _parse_ignore_file(path: Path, syntax: IgnoreSyntax) -> list[_IgnoreRule]:
    base = str(path.parent)
    rules: list[_IgnoreRule] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        log.warning("cannot read ignore file %s: %s", path, exc)
        return rules
    for raw in lines:
        if syntax == "regexp":
            line = re.sub(r"\s*#.*", "", raw).strip()
            if not line:
                continue
            try:
                rules.append(_IgnoreRule(re.compile(line), base, search=True))
            except re.error as exc:
                log.warning("ignoring invalid pattern %r in %s: %s", line, path, exc)
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        dirs_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        body = _glob_to_regex(line.lstrip("/"))
        regex = body if anchored else f"(?:.*/)?{body}"
        rules.append(_IgnoreRule(re.compile(regex), base, search=False, negated=negated,
                                 dirs_only=dirs_only))
    return rules


def _ignored(path: str, is_dir: bool, rules: list[_IgnoreRule]) -> bool:
    ignored = False
    for rule in rules:
        if rule.matches(path, is_dir):
            ignored = not rule.negated
    return ignored


def _might_contain_dag(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return b"dag" in fh.read().lower()
    except OSError:
        return False


def list_dag_files(
    folder: str | os.PathLike[str],
    ignore_file_name: str = DEFAULT_IGNORE_FILE,
    syntax: IgnoreSyntax = "regexp",
    *,
    safe_mode: bool = True,
) -> list[Path]:
    """The DAG files under ``folder`` (a single ``.py`` file counts as itself), sorted.

    See the module docstring for what is skipped. ``syntax`` is the pattern syntax of the
    ignore files: ``"regexp"`` (each line a regular expression searched for in the path
    relative to the ignore file's folder) or ``"glob"`` (gitignore-style).
    """
    if syntax not in ("regexp", "glob"):
        raise ValueError(f"unknown ignore file syntax {syntax!r} (regexp or glob)")
    root = Path(os.path.abspath(folder))
    if root.is_file():
        return [root] if root.suffix == ".py" else []
    if not root.is_dir():
        return []
    found: list[Path] = []
    rules_by_dir: dict[str, list[_IgnoreRule]] = {}
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        parent = os.path.dirname(dirpath)
        rules = list(rules_by_dir.get(parent, [])) if dirpath != str(root) else []
        if ignore_file_name in filenames:
            rules.extend(_parse_ignore_file(Path(dirpath, ignore_file_name), syntax))
        rules_by_dir[dirpath] = rules
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d != "__pycache__"
            and not _ignored(os.path.join(dirpath, d), True, rules)
        )
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if _ignored(path, False, rules):
                continue
            if safe_mode and not _might_contain_dag(Path(path)):
                continue
            found.append(Path(path))
    return sorted(found)


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
) -> FileLoadResult:
    """Import the DAG file ``path`` into this process and return the DAGs it defines.

    ``dags_folder`` is put on ``sys.path`` (so DAG files import their helpers); the file is
    imported as module ``squall_dag_<hash>_<stem>``. Every DAG created while the file is
    imported belongs to it (whether assigned to a global or not); their ``fileloc`` is set to
    ``path``. Each is validated; an invalid DAG is left out and its problem reported in
    ``error``, as is any exception raised by the import (with the line of the user's file),
    a duplicate dag_id, or running past ``timeout`` seconds (enforced with ``SIGALRM`` when
    called from the main thread). With ``airflow_compat`` the ``airflow`` import name is
    provided first (:mod:`squall.compat.airflow`).
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
        with _alarm(timeout):
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
    ) -> None:
        self.airflow_compat = airflow_compat
        self.dag_folder = Path(os.path.abspath(dag_folder))
        self.include_examples = include_examples
        self.examples_folder = Path(
            os.path.abspath(examples_folder) if examples_folder else DEFAULT_EXAMPLES_FOLDER
        )
        self.import_timeout = import_timeout
        self.ignore_file_syntax: IgnoreSyntax = ignore_file_syntax
        self.dags: dict[str, DAG] = {}
        self.import_errors: dict[str, str] = {}
        self.collected = False

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
                               airflow_compat=self.airflow_compat)
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

    def parse_isolated(self, *, parallelism: int | None = None) -> ParseResult:
        """:func:`parse_files_isolated` on every DAG file of this bag."""
        by_root: dict[Path, list[Path]] = {}
        for path, root in self.files():
            by_root.setdefault(root, []).append(path)
        return _merge_results(
            parse_files_isolated(paths, root, self.import_timeout, parallelism=parallelism,
                                 airflow_compat=self.airflow_compat)
            for root, paths in by_root.items()
        )


def _duplicate_message(dag_id: str, first_file: str) -> str:
    return f"dag_id {dag_id} is already defined in {first_file}"


# --------------------------------------------------------------------------- isolated parse


@dataclass
class ParseResult:
    """What parsing some DAG files produced.

    ``serialized`` maps dag_id to serialized DAG (its ``fileloc`` names its file);
    ``import_errors`` maps a file to a readable message; ``files_parsed`` lists every file
    parsed (whether it worked or not), as absolute paths.
    """

    serialized: dict[str, dict[str, Any]] = field(default_factory=dict)
    import_errors: dict[str, str] = field(default_factory=dict)
    files_parsed: list[str] = field(default_factory=list)

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
    return merged


def _parse_in_child(path: str, dags_folder: str, conn: Connection,
                    airflow_compat: bool = False) -> None:
    """The child process: load one file, send back ``{"dags": [...], "error": ...}`` as JSON."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    payload: dict[str, Any]
    try:
        loaded = load_file(path, dags_folder, airflow_compat=airflow_compat)
        serialized: list[dict[str, Any]] = []
        errors = [loaded.error] if loaded.error else []
        for dag in loaded.dags:
            try:
                serialized.append(serialize_dag(dag))
            except Exception as exc:
                errors.append(f"{_header(path)}\n{type(exc).__name__}: {exc}")
        payload = {"dags": serialized, "error": "\n".join(errors) or None}
        text = json.dumps(payload)
    except BaseException as exc:  # anything at all must become a message
        text = json.dumps({"dags": [], "error": f"{_header(path)}\n{type(exc).__name__}: {exc}"})
    conn.send_bytes(text.encode("utf-8"))
    conn.close()


def _mp_context() -> multiprocessing.context.BaseContext:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


@dataclass
class _Job:
    path: str
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection
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
    job.process.join(grace)
    if job.process.is_alive():
        job.process.kill()
        job.process.join()
    job.conn.close()


def parse_files_isolated(
    paths: Iterable[str | os.PathLike[str]],
    dags_folder: str | os.PathLike[str],
    timeout: float,
    *,
    parallelism: int | None = None,
    airflow_compat: bool = False,
) -> ParseResult:
    """Parse each DAG file in a child process of its own and gather the serialized DAGs.

    At most ``parallelism`` children (default ``min(4, cpu count)``) run at a time. A child
    that runs past ``timeout`` seconds is killed; one that dies without answering (a crash,
    ``os._exit``) is reported with its exit code. A dag_id defined by two files is kept from
    the first in ``paths`` order and reported as an import error of the later one.
    """
    files = [os.path.abspath(p) for p in paths]
    files = list(dict.fromkeys(files))
    root = os.path.abspath(dags_folder)
    limit = max(1, parallelism or min(4, os.cpu_count() or 1))
    ctx = _mp_context()
    outcome: dict[str, tuple[list[dict[str, Any]], str | None]] = {}
    pending = deque(files)
    running: list[_Job] = []

    while pending or running:
        while pending and len(running) < limit:
            path = pending.popleft()
            reader, writer = ctx.Pipe(duplex=False)
            process = ctx.Process(  # type: ignore[attr-defined]
                target=_parse_in_child, args=(path, root, writer, airflow_compat),
                name=f"squall-parse-{Path(path).name}", daemon=True,
            )
            try:
                process.start()
            except OSError as exc:
                reader.close()
                writer.close()
                outcome[path] = ([], f"{path}: cannot start a process to parse it: {exc}")
                continue
            writer.close()
            running.append(_Job(path, process, reader, time.monotonic() + timeout))
        if not running:
            continue

        wait_until = min(job.deadline for job in running)
        waitables: list[Any] = [job.conn for job in running]
        waitables.extend(job.process.sentinel for job in running)
        ready = set(wait_for(waitables, timeout=max(0.0, wait_until - time.monotonic())))
        now = time.monotonic()
        still: list[_Job] = []
        for job in running:
            if job.conn in ready or job.process.sentinel in ready:
                outcome[job.path] = _collect(job)
            elif now >= job.deadline:
                job.process.kill()
                job.process.join()
                job.conn.close()
                log.warning("killed the parse of %s after %s s", job.path, timeout)
                outcome[job.path] = ([], _timeout_message(job.path, timeout))
            else:
                still.append(job)
        running = still

    result = ParseResult(files_parsed=list(files))
    for path in files:
        dags, error = outcome[path]
        errors = [error] if error else []
        for data in dags:
            dag_id = data["dag"]["dag_id"]
            other = result.serialized.get(dag_id)
            if other is not None:
                errors.append(_duplicate_message(dag_id, other["dag"]["fileloc"]))
                continue
            result.serialized[dag_id] = data
        if errors:
            result.import_errors[path] = "\n".join(errors)
    return result


def _collect(job: _Job) -> tuple[list[dict[str, Any]], str | None]:
    """Read a child's answer (it has answered or exited)."""
    try:
        if job.conn.poll():
            payload = json.loads(job.conn.recv_bytes().decode("utf-8"))
            _finish(job)
            return list(payload.get("dags") or []), payload.get("error")
    except (EOFError, OSError, ValueError):
        pass
    _finish(job)
    return [], (
        f"the process parsing DAG file {job.path} died without an answer, with "
        f"{_exit_description(job.process.exitcode)}"
    )


# --------------------------------------------------------------------------- database


def _last_automated_interval(session: Session, dag_id: str) -> DataInterval | None:
    run = session.scalars(
        select(DagRun)
        .where(
            DagRun.dag_id == dag_id,
            DagRun.run_type.in_([DagRunType.SCHEDULED.value, DagRunType.BACKFILL.value]),
        )
        .order_by(DagRun.logical_date.desc())
        .limit(1)
    ).first()
    if run is None:
        return None
    start = run.data_interval_start or run.logical_date
    end = run.data_interval_end or start
    return DataInterval(pendulum.instance(start), pendulum.instance(end))


_TIMING_KEYS = ("schedule", "start_date", "end_date", "catchup", "timezone")


def _timing(data: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if data is None:
        return None
    d = data.get("dag") or {}
    return tuple(json.dumps(d.get(k), sort_keys=True) for k in _TIMING_KEYS)


def sync_to_db(
    session: Session,
    result: ParseResult,
    *,
    paused_at_creation: bool,
    now: datetime,
    known_files: Collection[str] | None = None,
) -> None:
    """Record ``result`` in the ``dag``, ``serialized_dag`` and ``import_error`` tables.

    * every DAG parsed gets its ``dag`` row created or updated (``is_active``, parse time,
      settings); a new row is paused if ``DAG(is_paused_upon_creation=...)`` says so, else
      if ``paused_at_creation``; ``is_paused`` of an existing row is never changed;
    * ``serialized_dag`` is only rewritten when the DAG's hash changed;
    * the ``import_error`` rows of the parsed files are replaced by one row per broken file,
      and the ``dag`` rows of a broken file get ``has_import_errors``;
    * DAGs whose file parsed cleanly but no longer defines them become inactive (those of a
      broken file stay as they were);
    * ``next_dagrun``: computed when it is NULL or when the DAG's schedule, start or end date,
      catchup or time zone changed, from the latest scheduled run if there is one;
    * with ``known_files`` (every DAG file there is), DAGs of other files become inactive
      and import errors of other files are deleted.

    Flushes; the caller commits. ``now`` must be timezone-aware.
    """
    if now.tzinfo is None:
        raise ValueError("sync_to_db needs a timezone-aware `now`")
    pnow = pendulum.instance(now)
    parsed = set(result.files_parsed)
    broken = set(result.import_errors)
    import_errors = dict(result.import_errors)
    dag_ids = list(result.serialized)

    rows: dict[str, DagModel] = {}
    if dag_ids or parsed:
        conditions = []
        if dag_ids:
            conditions.append(DagModel.dag_id.in_(dag_ids))
        if parsed:
            conditions.append(DagModel.fileloc.in_(sorted(parsed)))
        rows = {m.dag_id: m for m in session.scalars(select(DagModel).where(or_(*conditions)))}
    serialized_rows: dict[str, SerializedDagModel] = {}
    if dag_ids:
        serialized_rows = {
            s.dag_id: s
            for s in session.scalars(
                select(SerializedDagModel).where(SerializedDagModel.dag_id.in_(dag_ids))
            )
        }

    written: set[str] = set()
    for dag_id, data in result.serialized.items():
        fileloc = data["dag"]["fileloc"]
        try:
            dag = deserialize_dag(data)
        except SerializationError as exc:
            message = f"Broken DAG file {fileloc}:\nSerializationError: {exc}"
            old = import_errors.get(fileloc)
            import_errors[fileloc] = f"{old}\n{message}" if old else message
            broken.add(fileloc)
            continue
        written.add(dag_id)
        row = rows.get(dag_id)
        if row is None:
            upon_creation = data["dag"].get("is_paused_upon_creation")
            row = DagModel(
                dag_id=dag_id,
                is_paused=bool(paused_at_creation if upon_creation is None else upon_creation),
                fileloc=fileloc,
            )
            session.add(row)
            rows[dag_id] = row
        row.fileloc = fileloc
        row.owners = dag.owner or None
        row.description = dag.description
        row.tags = list(dag.tags)
        row.schedule = dag.timetable.summary
        row.timetable_description = dag.timetable.description
        row.max_active_runs = dag.max_active_runs
        row.max_active_tasks = dag.max_active_tasks
        row.is_active = True
        row.last_parsed_time = now
        row.has_import_errors = fileloc in broken
        row.params = data["dag"].get("params") or {}

        new_hash = dag_hash(data)
        stored = serialized_rows.get(dag_id)
        timing_changed = stored is not None and _timing(stored.data) != _timing(data)
        if stored is None:
            session.add(SerializedDagModel(dag_id=dag_id, fileloc=fileloc, data=data,
                                           dag_hash=new_hash, last_updated=now))
        elif stored.dag_hash != new_hash:
            stored.data = data
            stored.dag_hash = new_hash
            stored.fileloc = fileloc
            stored.last_updated = now

        if row.next_dagrun is None or timing_changed:
            info = dag.timetable.next_dagrun_info(
                last_automated_data_interval=_last_automated_interval(session, dag_id),
                start_date=dag.start_date,
                end_date=dag.end_date,
                catchup=dag.catchup,
                now=pnow,
            )
            row.next_dagrun = info.logical_date if info else None
            row.next_dagrun_data_interval_start = info.data_interval.start if info else None
            row.next_dagrun_data_interval_end = info.data_interval.end if info else None
            row.next_dagrun_create_after = info.run_after if info else None

    for dag_id, row in rows.items():
        if dag_id in written or row.fileloc not in parsed:
            continue
        if row.fileloc in broken:
            row.has_import_errors = True
        elif row.is_active:
            log.info("DAG %s is no longer defined in %s: deactivating it", dag_id, row.fileloc)
            row.is_active = False

    if parsed or import_errors:
        stale = parsed | set(import_errors)
        for old_error in session.scalars(
            select(ImportError_).where(ImportError_.filename.in_(sorted(stale)))
        ):
            session.delete(old_error)
    for filename, message in sorted(import_errors.items()):
        session.add(ImportError_(filename=filename, stacktrace=message, timestamp=now))

    if known_files is not None:
        known = {os.path.abspath(f) for f in known_files}
        for row in session.scalars(select(DagModel).where(DagModel.is_active.is_(True))):
            if row.fileloc not in known and row.dag_id not in written:
                log.info("the file of DAG %s (%s) is gone: deactivating it", row.dag_id,
                         row.fileloc)
                row.is_active = False
        for old_error in session.scalars(select(ImportError_)):
            if old_error.filename not in known:
                session.delete(old_error)
    session.flush()


def load_serialized_dags(
    session: Session, dag_ids: Iterable[str] | None = None, *, only_active: bool = False
) -> dict[str, DAG]:
    """DAGs rebuilt from ``serialized_dag`` (all, or those of ``dag_ids``), by dag_id.

    With ``only_active``, only DAGs whose ``dag`` row is active. A row that cannot be
    deserialized is logged and left out.
    """
    stmt = select(SerializedDagModel)
    if dag_ids is not None:
        stmt = stmt.where(SerializedDagModel.dag_id.in_(list(dag_ids)))
    if only_active:
        stmt = stmt.join(DagModel, DagModel.dag_id == SerializedDagModel.dag_id).where(
            DagModel.is_active.is_(True)
        )
    out: dict[str, DAG] = {}
    for row in session.scalars(stmt.order_by(SerializedDagModel.dag_id)):
        try:
            out[row.dag_id] = deserialize_dag(row.data)
        except SerializationError as exc:
            log.warning("cannot rebuild DAG %s from serialized_dag: %s", row.dag_id, exc)
    return out
