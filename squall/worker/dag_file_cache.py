"""A command's task, loaded from its DAG file, and the DAG files a pool process keeps loaded.

:func:`load_task` imports the DAG file a task-run command names (``DAGS_FOLDER/...`` or
``EXAMPLES/...``, resolved by :func:`~squall.common.payload.resolve_dag_file`) and returns
the command's task; a file or task that cannot be loaded raises :class:`TaskLoadError` with a
reason naming the file. :class:`DagFileCache` keeps DAG files imported in a pool process's
fork server (or in the pool process with ``[celery] worker_fork_server`` off; ``[celery]
worker_cache_dag_files``, ADR 9, ADR 21), so a forked task process starts with its task
loaded.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from pathlib import Path

from squall.common.errors import PayloadError, TaskLoadError
from squall.common.models import TaskInstanceKey
from squall.common.payload import DAGS_FOLDER_ROOT, EXAMPLES_ROOT, resolve_dag_file
from squall.common.settings import Settings
from squall.dag_processing.dagbag import load_file
from squall.sdk.dag import DAG
from squall.sdk.dag_defaults import DagDefaults
from squall.sdk.examples import EXAMPLES_FOLDER
from squall.sdk.operators.base import BaseOperator


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
