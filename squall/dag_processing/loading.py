"""Loading a DAG file into this process, with a time limit.

:func:`load_file` imports one file as a module of its own (``squall_dag_<hash>_<stem>``)
and returns the DAGs it defines, or a readable error naming the file and the line of the
user's code where it went wrong. Workers, ``squall dags test`` and each child of the
isolated parse (:mod:`squall.dag_processing.isolated`) call it;
:class:`~squall.dag_processing.dagbag.DagBag` gathers a folder's files with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from squall.sdk.dag import DAG, DagContext
from squall.sdk.dag_defaults import DagDefaults, authoring_defaults
from squall.sdk.taskgroup import TaskGroupContext

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- in-process load


@dataclass
class FileLoadResult:
    """The DAGs one file defines (the valid ones) and, if anything went wrong, why."""

    path: str
    dags: list[DAG] = field(default_factory=list)
    error: str | None = None
    #: the warnings the import emitted (``file:line: Category: message``, each once)
    warnings: list[str] = field(default_factory=list)


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
    _load_plugins(airflow_compat)
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
        with _alarm(timeout), authoring_defaults(dag_defaults), \
                _recorded_warnings(filepath, result.warnings):
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
    for dag in _registered(created, module):
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


def _load_plugins(airflow_compat: bool) -> None:
    """The plugins folder, before the first DAG file: DAG files import custom timetables
    from it, and a timetable must be registered to be serialized (``squall.dag_processing
    .plugins``)."""
    from squall.common.errors import SettingsError
    from squall.dag_processing import plugins

    try:
        plugins.ensure_loaded(airflow_compat=airflow_compat)
    except SettingsError as exc:
        log.warning("plugins: not loaded (%s)", exc)


def _registered(created: list[DAG], module: Any) -> list[DAG]:
    """The DAGs a file defines: every DAG created while it was imported, except one made
    with ``auto_register=False`` that is not a global of the file (Airflow registers a DAG
    that is a module global, or was used in a ``with`` block with ``auto_register`` on)."""
    module_dags = {id(v) for v in vars(module).values() if isinstance(v, DAG)}
    kept = []
    for dag in created:
        if getattr(dag, "auto_register", True) or id(dag) in module_dags:
            kept.append(dag)
        else:
            log.info("DAG %s: not registered (auto_register=False and not a global of %s)",
                     dag.dag_id, getattr(module, "__file__", "its file"))
    return kept


@contextlib.contextmanager
def _recorded_warnings(filepath: str, into: list[str]) -> Iterator[None]:
    """Record the warnings raised inside (deprecated Airflow 2 arguments, ...) into ``into``
    and log each once, instead of letting the process's warning filters print them or (as
    with ``-W error``) turn them into an import error of the file. A filter the DAG file
    itself sets (e.g. to ignore a category) still applies."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                category = w.category.__name__
                if w.category.__module__ != "builtins":
                    category = f"{w.category.__module__}.{category}"
                text = f"{w.filename}:{w.lineno}: {category}: {w.message}"
                if text not in into:
                    into.append(text)
    for text in into:
        log.warning("%s", text)


def _duplicate_message(dag_id: str, first_file: str) -> str:
    return f"dag_id {dag_id} is already defined in {first_file}"

